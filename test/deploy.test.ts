// The deployment files under deploy/: every YAML parses, the configs they ship are valid
// regmirror configs, the Kubernetes manifests have what a production rollout needs
// (probes, non-root, read-only root, resources), kustomize renders both variants
// (kubectl; required under CI), the systemd unit passes systemd-analyze, and the compose file points at the
// image and the volume. The image itself is built and run in test/e2e/image.test.ts.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join, relative } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml, parseAllDocuments } from 'yaml';
import { parseConfig } from '../src/config.js';
import { haveTool, requireTools, run } from './e2e/harness.js';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const DEPLOY = join(ROOT, 'deploy');
const BASE = join(DEPLOY, 'kubernetes/base');
const NODE_LOCAL = join(DEPLOY, 'kubernetes/node-local');

// A loose view of the Kubernetes objects, enough for the checks below.
interface Probe { httpGet?: { path: string; port: number | string; host?: string } }
interface Container {
  name: string;
  image: string;
  args?: string[];
  command?: string[];
  ports?: Array<{ name?: string; containerPort: number }>;
  envFrom?: Array<{ secretRef?: { name: string; optional?: boolean } }>;
  startupProbe?: Probe;
  livenessProbe?: Probe;
  readinessProbe?: Probe;
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
  securityContext?: Record<string, unknown> & { capabilities?: { drop?: string[]; add?: string[] } };
  volumeMounts?: Array<{ name: string; mountPath: string; readOnly?: boolean }>;
}
interface PodSpec {
  hostNetwork?: boolean;
  securityContext?: Record<string, unknown>;
  initContainers?: Container[];
  containers: Container[];
  volumes: Array<{ name: string; emptyDir?: object; hostPath?: { path: string }; configMap?: { name: string }; persistentVolumeClaim?: { claimName: string } }>;
}
interface K8sObject {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string };
  spec?: { template?: { spec: PodSpec } } & Record<string, unknown>;
  data?: Record<string, string>;
  [key: string]: unknown;
}

async function yamlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await yamlFiles(p)));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
}

async function docs(path: string): Promise<K8sObject[]> {
  return parseAllDocuments(await readFile(path, 'utf8')).map((d) => d.toJSON() as K8sObject).filter(Boolean);
}

interface Kustomization {
  namespace?: string;
  resources?: string[];
  configMapGenerator?: Array<{ name: string; files?: string[]; behavior?: string }>;
  patches?: Array<{ patch?: string; path?: string }>;
  images?: Array<{ name: string; newName?: string; newTag?: string }>;
}

async function kustomization(dir: string): Promise<Kustomization> {
  return parseYaml(await readFile(join(dir, 'kustomization.yaml'), 'utf8')) as Kustomization;
}

/** The objects a kustomization's own resources declare (not its bases). */
async function ownResources(dir: string): Promise<K8sObject[]> {
  const k = await kustomization(dir);
  const out: K8sObject[] = [];
  for (const r of k.resources ?? []) if (/\.ya?ml$/.test(r)) out.push(...(await docs(join(dir, r))));
  return out;
}

function find(objects: K8sObject[], kind: string): K8sObject {
  const o = objects.find((x) => x.kind === kind);
  assert.ok(o, `no ${kind} among ${objects.map((x) => x.kind).join(', ')}`);
  return o;
}

function podSpec(o: K8sObject): PodSpec {
  const spec = o.spec?.template?.spec;
  assert.ok(spec, `${o.kind} ${o.metadata.name} has no pod template`);
  return spec;
}

function mounts(c: Container): Record<string, string> {
  return Object.fromEntries((c.volumeMounts ?? []).map((m) => [m.mountPath, m.name]));
}

/** What every regmirror container must have: probes, limits, non-root, read-only root with /tmp writable. */
function assertHardenedMirror(spec: PodSpec, c: Container, where: string): void {
  assert.deepEqual(c.args, ['serve', '--config', '/etc/regmirror/mirror.yaml'], where);
  assert.equal(c.livenessProbe?.httpGet?.path, '/healthz', `${where}: liveness on /healthz`);
  assert.equal(c.readinessProbe?.httpGet?.path, '/readyz', `${where}: readiness on /readyz`);
  assert.equal(c.startupProbe?.httpGet?.path, '/healthz', `${where}: startup on /healthz`);
  assert.ok(c.resources?.requests?.cpu && c.resources.requests.memory, `${where}: resource requests`);
  assert.ok(c.resources?.limits?.memory, `${where}: a memory limit`);
  const sc = { ...spec.securityContext, ...c.securityContext };
  assert.equal(sc.runAsNonRoot, true, `${where}: runAsNonRoot`);
  assert.equal(sc.runAsUser, 10001, `${where}: the image's numeric user`);
  assert.equal(c.securityContext?.readOnlyRootFilesystem, true, `${where}: readOnlyRootFilesystem`);
  assert.equal(c.securityContext?.allowPrivilegeEscalation, false, `${where}: no privilege escalation`);
  assert.deepEqual(c.securityContext?.capabilities?.drop, ['ALL'], `${where}: capabilities dropped`);
  const m = mounts(c);
  assert.ok(spec.volumes.find((v) => v.name === m['/tmp'])?.emptyDir, `${where}: /tmp is an emptyDir`);
  assert.ok(m['/data'], `${where}: /data is mounted`);
  assert.ok(spec.volumes.find((v) => v.name === m['/etc/regmirror'])?.configMap, `${where}: the config comes from the ConfigMap`);
  assert.deepEqual(c.envFrom, [{ secretRef: { name: 'regmirror-upstream-credentials', optional: true } }], `${where}: credentials from an optional Secret`);
}

test('every YAML file under deploy/ parses', async () => {
  const files = await yamlFiles(DEPLOY);
  assert.ok(files.length >= 10, files.join(', '));
  for (const f of files) {
    for (const d of parseAllDocuments(await readFile(f, 'utf8'))) assert.deepEqual(d.errors, [], relative(ROOT, f));
  }
});

test('the mirror.yaml shipped for each deployment is a valid regmirror config', async () => {
  const expect: Record<string, { host: string; dataDir: string }> = {
    'container/mirror.yaml': { host: '0.0.0.0', dataDir: '/data' },
    'kubernetes/base/mirror.yaml': { host: '0.0.0.0', dataDir: '/data' },
    'kubernetes/node-local/mirror.yaml': { host: '127.0.0.1', dataDir: '/data' },
    'systemd/mirror.yaml': { host: '0.0.0.0', dataDir: '/var/lib/regmirror' },
  };
  for (const [file, want] of Object.entries(expect)) {
    const cfg = parseConfig(await readFile(join(DEPLOY, file), 'utf8'), {});
    assert.deepEqual({ host: cfg.listen.host, port: cfg.listen.port, dataDir: cfg.dataDir }, { ...want, port: 5000 }, file);
    assert.deepEqual(cfg.upstreams.map((u) => u.name), ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io'], file);
  }
});

test('kubernetes base: a hardened central mirror with its volume, Service and config', async () => {
  const k = await kustomization(BASE);
  assert.equal(k.namespace, 'regmirror');
  assert.deepEqual(k.configMapGenerator, [{ name: 'regmirror-config', files: ['mirror.yaml'] }]);
  const objects = await ownResources(BASE);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['Deployment', 'Namespace', 'PersistentVolumeClaim', 'Service']);

  const deployment = find(objects, 'Deployment');
  assert.equal(deployment.spec?.replicas, 1);
  assert.deepEqual(deployment.spec?.strategy, { type: 'Recreate' }, 'one SQLite writer: the old pod stops before the new one starts');
  const spec = podSpec(deployment);
  const [c] = spec.containers;
  assertHardenedMirror(spec, c, 'Deployment');
  assert.equal(c.image, 'regmirror');
  assert.deepEqual(c.ports, [{ name: 'http', containerPort: 5000 }]);
  assert.equal(spec.securityContext?.fsGroup, 10001, 'the volume is writable by the mirror\'s group');
  assert.equal(spec.volumes.find((v) => v.name === mounts(c)['/data'])?.persistentVolumeClaim?.claimName, 'regmirror-data');
  assert.equal(find(objects, 'PersistentVolumeClaim').metadata.name, 'regmirror-data');
  const service = find(objects, 'Service');
  assert.deepEqual((service.spec as { ports: unknown }).ports, [{ name: 'http', port: 5000, targetPort: 'http' }]);
});

test('kubernetes node-local overlay: a DaemonSet on the node\'s loopback that configures the node\'s containerd', async () => {
  const k = await kustomization(NODE_LOCAL);
  assert.deepEqual(k.resources, ['../base', 'daemonset.yaml']);
  assert.deepEqual(k.configMapGenerator, [{ name: 'regmirror-config', behavior: 'replace', files: ['mirror.yaml'] }]);
  const deleted = (k.patches ?? []).map((p) => parseYaml(p.patch ?? '') as K8sObject & { $patch?: string });
  assert.deepEqual(deleted.map((p) => [p.$patch, p.kind]), [['delete', 'Deployment'], ['delete', 'PersistentVolumeClaim'], ['delete', 'Service']]);

  const ds = find(await ownResources(NODE_LOCAL), 'DaemonSet');
  const spec = podSpec(ds);
  assert.equal(spec.hostNetwork, true);
  const [c] = spec.containers;
  assertHardenedMirror(spec, c, 'DaemonSet');
  for (const probe of [c.startupProbe, c.livenessProbe, c.readinessProbe]) {
    assert.deepEqual({ host: probe?.httpGet?.host, port: probe?.httpGet?.port }, { host: '127.0.0.1', port: 5000 }, 'probes reach the loopback listener');
  }
  assert.equal(spec.volumes.find((v) => v.name === mounts(c)['/data'])?.hostPath?.path, '/var/lib/regmirror');

  const init = Object.fromEntries((spec.initContainers ?? []).map((i) => [i.name, i]));
  assert.deepEqual(init['data-dir']?.command, ['chown', '10001:10001', '/data']);
  const configure = init['configure-containerd'];
  assert.deepEqual(configure?.args, ['configure', 'containerd', '--mirror', 'http://127.0.0.1:5000', '--write', '/host/etc/containerd/certs.d']);
  assert.equal(spec.volumes.find((v) => v.name === mounts(configure)['/host/etc/containerd/certs.d'])?.hostPath?.path, '/etc/containerd/certs.d');
});

test('the node-local init container\'s command writes hosts.toml files that keep the registry as fallback', async (t) => {
  const ds = find(await ownResources(NODE_LOCAL), 'DaemonSet');
  const args = podSpec(ds).initContainers!.find((i) => i.name === 'configure-containerd')!.args!;
  const host = await mkdtemp(join(tmpdir(), 'regmirror-node-'));
  t.after(() => rm(host, { recursive: true, force: true }));
  const mapped = args.map((a) => (a.startsWith('/host/') ? join(host, a.slice('/host/'.length)) : a));
  const cli = ['--import', 'tsx', join(ROOT, 'src/main.ts'), ...mapped];
  await exec(process.execPath, cli, { cwd: ROOT });
  for (const [registry, server] of [['docker.io', 'https://registry-1.docker.io'], ['ghcr.io', 'https://ghcr.io'], ['quay.io', 'https://quay.io'], ['registry.k8s.io', 'https://registry.k8s.io']]) {
    const toml = JSON.parse(JSON.stringify(parseToml(await readFile(join(host, 'etc/containerd/certs.d', registry, 'hosts.toml'), 'utf8'))));
    assert.deepEqual(toml, { server, host: { 'http://127.0.0.1:5000': { capabilities: ['pull', 'resolve'] } } }, registry);
  }
  // A pod restart runs it again: nothing changes.
  const again = await exec(process.execPath, cli, { cwd: ROOT });
  assert.equal(again.stdout.split('\n').filter((l) => l.startsWith('unchanged ')).length, 4, again.stdout);
});

/**
 * Why kubectl cannot render these kustomizations here, or undefined when it can. Debian's
 * kubernetes-client 1.20 embeds kustomize v2, which predates `labels` and `patches`; CI
 * installs a newer static kubectl (see .ci/run), so there a missing or old one fails.
 */
async function kubectlProblem(): Promise<string | undefined> {
  if (!haveTool('kubectl')) return 'kubectl not installed: kustomize rendering skipped (the YAML checks above still ran)';
  const res = await run('kubectl', ['version', '--client', '-o', 'json']);
  const version = res.code === 0 ? (JSON.parse(res.stdout) as { kustomizeVersion?: string }).kustomizeVersion : undefined;
  const major = Number(/^v(\d+)\./.exec(version ?? '')?.[1] ?? 0);
  if (major < 4) return `kubectl's kustomize (${version ?? 'unknown'}) is older than v4: rendering skipped (the YAML checks above still ran)`;
  return undefined;
}

test('kubectl kustomize renders the base and the node-local overlay', async (t) => {
  const problem = await kubectlProblem();
  if (problem && process.env.CI === 'true') throw new Error(`${problem.split(':')[0]} (CI must render them: see .ci/run)`);
  if (problem) {
    t.skip(problem);
    return;
  }
  const render = async (dir: string) => {
    const res = await run('kubectl', ['kustomize', dir]);
    assert.equal(res.code, 0, res.stderr);
    return parseAllDocuments(res.stdout).map((d) => d.toJSON() as K8sObject);
  };
  const checkCommon = (objects: K8sObject[], workload: K8sObject) => {
    for (const o of objects) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'regmirror', `${o.kind} ${o.metadata.name}`);
    const cm = find(objects, 'ConfigMap');
    assert.match(cm.metadata.name, /^regmirror-config-[a-z0-9]+$/, 'generated, hash-suffixed: a config change rolls the pods');
    const spec = podSpec(workload);
    assert.ok(spec.volumes.some((v) => v.configMap?.name === cm.metadata.name), 'the pods mount the generated ConfigMap');
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) assert.equal(c.image, 'regmirror:0.1.0', c.name);
    return parseConfig(cm.data!['mirror.yaml'], {});
  };

  const base = await render(BASE);
  assert.deepEqual(base.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Namespace', 'PersistentVolumeClaim', 'Service']);
  assert.equal(checkCommon(base, find(base, 'Deployment')).listen.host, '0.0.0.0');

  const node = await render(NODE_LOCAL);
  assert.deepEqual(node.map((o) => o.kind).sort(), ['ConfigMap', 'DaemonSet', 'Namespace']);
  assert.equal(checkCommon(node, find(node, 'DaemonSet')).listen.host, '127.0.0.1');
});

test('the systemd unit passes systemd-analyze verify and security', async (t) => {
  if (!requireTools(t, 'systemd-analyze')) return;
  const unit = join(DEPLOY, 'systemd/regmirror.service');
  // verify works without a running systemd; unknown keys and bad values are warnings on stderr.
  const verify = await run('systemd-analyze', ['verify', unit]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(verify.stderr.split('\n').filter((l) => l.includes('regmirror.service')).join('\n'), '', 'no warnings about the unit');
  const text = await readFile(unit, 'utf8');
  for (const line of ['DynamicUser=yes', 'StateDirectory=regmirror', 'ProtectSystem=strict', 'NoNewPrivileges=yes', 'PrivateTmp=yes', 'CapabilityBoundingSet=']) {
    assert.match(text, new RegExp(`^${line.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}$`, 'm'), line);
  }
  assert.doesNotMatch(text, /^MemoryDenyWriteExecute=yes/m, "V8's JIT needs W+X memory");
  assert.match(text, /--config \/etc\/regmirror\/mirror\.yaml$/m);
  // Exposure 0 (locked down) … 10 (unprotected); 2.5 or less is what systemd calls OK.
  const security = await run('systemd-analyze', ['security', '--offline=true', '--threshold=25', unit]);
  assert.equal(security.code, 0, security.stdout.split('\n').slice(-3).join('\n') + security.stderr);
});

test('compose.yaml builds the image from the repository and keeps the cache on a volume', async () => {
  const compose = parseYaml(await readFile(join(DEPLOY, 'compose.yaml'), 'utf8')) as {
    services: Record<string, { build: { context: string; dockerfile: string }; ports: string[]; volumes: string[]; read_only?: boolean; tmpfs?: string[]; cap_drop?: string[] }>;
    volumes: Record<string, unknown>;
  };
  const svc = compose.services.regmirror;
  assert.ok(existsSync(join(DEPLOY, svc.build.context, svc.build.dockerfile)), 'the build context holds the Dockerfile');
  assert.deepEqual(svc.ports, ['5000:5000']);
  assert.ok(svc.volumes.includes('regmirror-data:/data') && 'regmirror-data' in compose.volumes);
  const mounted = svc.volumes.find((v) => v.endsWith(':/etc/regmirror/mirror.yaml:ro'));
  assert.ok(mounted && existsSync(join(DEPLOY, mounted.split(':')[0])), 'the mounted config exists');
  assert.equal(svc.read_only, true);
  assert.deepEqual(svc.tmpfs, ['/tmp']);
  assert.deepEqual(svc.cap_drop, ['ALL']);
});

test('the Dockerfile copies only what .dockerignore lets into the build context', async () => {
  const dockerfile = await readFile(join(ROOT, 'Dockerfile'), 'utf8');
  const allowed = (await readFile(join(ROOT, '.dockerignore'), 'utf8')).split('\n').filter((l) => l.startsWith('!')).map((l) => l.slice(1));
  const sources = [...dockerfile.matchAll(/^COPY (?!--from)(.+) \S+$/gm)].flatMap((m) => m[1].split(/\s+/));
  assert.ok(sources.length >= 6, sources.join(' '));
  for (const s of sources) {
    assert.ok(existsSync(join(ROOT, s)), `${s} exists`);
    assert.ok(allowed.some((a) => s === a || s.startsWith(a + '/') || dirname(s) === a), `${s} is let through .dockerignore`);
  }
  assert.match(dockerfile, /^ARG BASE=node:20-bookworm-slim$/m);
  assert.match(dockerfile, /^USER 10001:10001$/m);
});
