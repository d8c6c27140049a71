// What the deployment tests read Kubernetes manifests with: a loose view of the objects
// (enough for their checks), the files a kustomization declares, and `kubectl kustomize`.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { TestContext } from 'node:test';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { haveTool, run } from '../e2e/harness.js';

export interface Probe { httpGet?: { path: string; port: number | string; host?: string } }
export interface EnvVar {
  name: string;
  value?: string;
  valueFrom?: { fieldRef?: { fieldPath: string }; secretKeyRef?: { name: string; key: string; optional?: boolean } };
}
export interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  env?: EnvVar[];
  envFrom?: Array<{ secretRef?: { name: string; optional?: boolean } }>;
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
export type Labels = Record<string, string>;
export interface LabelSelector { matchLabels?: Labels }
export interface AffinityTerm { topologyKey: string; labelSelector?: LabelSelector }
export interface PodSpec {
  hostNetwork?: boolean;
  securityContext?: Record<string, unknown>;
  affinity?: {
    podAntiAffinity?: {
      requiredDuringSchedulingIgnoredDuringExecution?: AffinityTerm[];
      preferredDuringSchedulingIgnoredDuringExecution?: Array<{ weight: number; podAffinityTerm: AffinityTerm }>;
    };
  };
  initContainers?: Container[];
  containers: Container[];
  volumes: Array<{ name: string; emptyDir?: { sizeLimit?: string }; hostPath?: { path: string }; configMap?: { name: string }; persistentVolumeClaim?: { claimName: string } }>;
}
export interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Labels };
  spec?: { template?: { metadata?: { labels?: Labels }; spec: PodSpec } } & Record<string, unknown>;
  data?: Record<string, string>;
  stringData?: Record<string, string>;
  [key: string]: unknown;
}

export async function docs(path: string): Promise<K8sObject[]> {
  return parseAllDocuments(await readFile(path, 'utf8')).map((d) => d.toJSON() as K8sObject).filter(Boolean);
}

export interface Kustomization {
  namespace?: string;
  resources?: string[];
  configMapGenerator?: Array<{ name: string; files?: string[]; behavior?: string }>;
  patches?: Array<{ patch?: string; path?: string }>;
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
}

export async function kustomization(dir: string): Promise<Kustomization> {
  return parseYaml(await readFile(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
}

/** The objects a kustomization's own resources declare (not its bases). */
export async function ownResources(dir: string): Promise<K8sObject[]> {
  const k = await kustomization(dir);
  const out: K8sObject[] = [];
  for (const r of k.resources ?? []) if (/\.ya?ml$/.test(r)) out.push(...(await docs(join(dir, r))));
  return out;
}

export function find(objects: K8sObject[], kind: string): K8sObject {
  const o = objects.find((x) => x.kind === kind);
  assert.ok(o, `no ${kind} among ${objects.map((x) => x.kind).join(', ')}`);
  return o;
}

export function podSpec(o: K8sObject): PodSpec {
  const spec = o.spec?.template?.spec;
  assert.ok(spec, `${o.kind} ${o.metadata.name} has no pod template`);
  return spec;
}

export function mounts(c: Container): Record<string, string> {
  return Object.fromEntries((c.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
}

/** Whether a matchLabels selector picks pods with these labels (an empty one would pick every pod: refused). */
export function selects(selector: LabelSelector | undefined, labels: Labels | undefined): boolean {
  const want = Object.entries(selector?.matchLabels ?? {});
  return want.length > 0 && want.every(([k, v]) => labels?.[k] === v);
}

/**
 * Why kubectl cannot render these kustomizations here, or undefined when it can. Debian's
 * kubernetes-client 1.20 embeds kustomize v2, which predates `labels` and `patches`; CI
 * installs a newer static kubectl (see .ci/run), so there a missing or old one fails.
 */
async function kubectlProblem(): Promise<string | undefined> {
  if (!haveTool('kubectl')) return 'kubectl not installed: kustomize rendering skipped (the YAML checks still ran)';
  const res = await run('kubectl', ['version', '--client', '-o', 'json']);
  const version = res.code === 0 ? (JSON.parse(res.stdout) as { kustomizeVersion?: string }).kustomizeVersion : undefined;
  const major = Number(/^v(\d+)\./.exec(version ?? '')?.[1] ?? 0);
  if (major < 4) return `kubectl's kustomize (${version ?? 'unknown'}) is older than v4: rendering skipped (the YAML checks still ran)`;
  return undefined;
}

/** True when kubectl can render; else skips the test, or fails it under CI. */
export async function canKustomize(t: TestContext): Promise<boolean> {
  const problem = await kubectlProblem();
  if (problem && process.env.CI === 'true') throw new Error(`${problem.split(':')[0]} (CI must render them: see .ci/run)`);
  if (problem) t.skip(problem);
  return problem === undefined;
}

/** `kubectl kustomize dir`, as objects. */
export async function kustomize(dir: string): Promise<K8sObject[]> {
  const res = await run('kubectl', ['kustomize', dir]);
  assert.equal(res.code, 0, res.stderr);
  return parseAllDocuments(res.stdout).map((d) => d.toJSON() as K8sObject);
}
