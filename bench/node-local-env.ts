// BENCH_NODE_LOCAL=1: regmirror children run with the environment the node-local
// DaemonSet gives its container (deploy/kubernetes/node-local/daemonset.yaml), so the
// bench measures the memory settings that manifest ships rather than a copy of them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { K8sObject } from '../test/support/kubernetes.js';

/** The literal `env` entries of the DaemonSet's regmirror container (valueFrom entries have no value here). */
export function nodeLocalEnv(repoRoot: string): Record<string, string> {
  const ds = parse(readFileSync(join(repoRoot, 'deploy/kubernetes/node-local/daemonset.yaml'), 'utf8')) as K8sObject;
  const container = ds.spec?.template?.spec.containers.find((c) => c.name === 'regmirror');
  if (!container) throw new Error('node-local daemonset.yaml: no regmirror container');
  return Object.fromEntries((container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
}

/** What the regmirror children get on top of the bench's own environment: the DaemonSet's with BENCH_NODE_LOCAL=1, else nothing. */
export function benchChildEnv(repoRoot: string): Record<string, string> {
  return process.env.BENCH_NODE_LOCAL === '1' ? nodeLocalEnv(repoRoot) : {};
}
