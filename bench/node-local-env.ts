// BENCH_NODE_LOCAL=1: regmirror children run with the environment the node-local
// DaemonSet gives its container (deploy/kubernetes/node-local/daemonset.yaml), so the
// bench measures the memory settings that manifest ships rather than a copy of them.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import type { Container, K8sObject } from '../test/support/kubernetes.js';
import { parseQuantity } from './memory-cgroup.js';

function nodeLocalContainer(repoRoot: string): Container {
  const ds = parse(readFileSync(join(repoRoot, 'deploy/kubernetes/node-local/daemonset.yaml'), 'utf8')) as K8sObject;
  const container = ds.spec?.template?.spec.containers.find((c) => c.name === 'regmirror');
  if (!container) throw new Error('node-local daemonset.yaml: no regmirror container');
  return container;
}

/** The literal `env` entries of the DaemonSet's regmirror container (valueFrom entries have no value here). */
export function nodeLocalEnv(repoRoot: string): Record<string, string> {
  const container = nodeLocalContainer(repoRoot);
  return Object.fromEntries((container.env ?? []).filter((e) => e.value !== undefined).map((e) => [e.name, e.value!]));
}

/** The memory limit for each regmirror child, in bytes: BENCH_MEMORY_LIMIT, else the DaemonSet's with BENCH_NODE_LOCAL=1, else none. */
export function benchMemoryLimit(repoRoot: string): number | undefined {
  const given = process.env.BENCH_MEMORY_LIMIT;
  if (given !== undefined && given !== '' && given !== '0') return parseQuantity(given);
  if (given === '0' || process.env.BENCH_NODE_LOCAL !== '1') return undefined;
  const limit = nodeLocalContainer(repoRoot).resources?.limits?.memory;
  return limit === undefined ? undefined : parseQuantity(limit, 'node-local daemonset.yaml limits.memory');
}

/**
 * BENCH_CHILD_ENV="K=V K=V": more environment for the regmirror children only. Allocator
 * settings (MALLOC_*, LD_PRELOAD) set on the bench itself would also change the load
 * generator, whose reads are half of what a warm-throughput figure measures.
 */
export function extraChildEnv(spec = process.env.BENCH_CHILD_ENV ?? ''): Record<string, string> {
  const pairs = spec.split(/\s+/).filter(Boolean).map((kv) => {
    const eq = kv.indexOf('=');
    if (eq <= 0) throw new Error(`BENCH_CHILD_ENV: "${kv}" is not NAME=value`);
    return [kv.slice(0, eq), kv.slice(eq + 1)] as const;
  });
  return Object.fromEntries(pairs);
}

/** What the regmirror children get on top of the bench's own environment: the DaemonSet's with BENCH_NODE_LOCAL=1, then BENCH_CHILD_ENV. */
export function benchChildEnv(repoRoot: string): Record<string, string> {
  return { ...(process.env.BENCH_NODE_LOCAL === '1' ? nodeLocalEnv(repoRoot) : {}), ...extraChildEnv() };
}
