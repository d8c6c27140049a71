// The deployment files under deploy/: every YAML parses, the configs they ship are valid
// regmirror configs, the Kubernetes manifests have what a production rollout needs
// (probes, non-root, read-only root, resources), kustomize renders the base, the node-local
// overlay and the HA replicas (kubectl; required under CI), the systemd unit passes systemd-analyze, and the compose file points at the
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
import { requireTools, run } from './e2e/harness.js';
import { type Container, type K8sObject, type LabelSelector, type Labels, type PodSpec, canKustomize, docs, find, kustomization, kustomize, mounts, ownResources, podSpec, selects } from './support/kubernetes.js';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const DEPLOY = join(ROOT, 'deploy');
const BASE = join(DEPLOY, 'kubernetes/base');
const NODE_LOCAL = join(DEPLOY, 'kubernetes/node-local');
const HA = join(DEPLOY, 'kubernetes/ha');

async function yamlFiles(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const e of await readdir(dir, { withFileTypes: true })) {
    const p = join(dir, e.name);
    if (e.isDirectory()) out.push(...(await yamlFiles(p)));
    else if (/\.ya?ml$/.test(e.name)) out.push(p);
  }
  return out.sort();
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
  // What keeps a cold pull's buffers from staying resident under the pod's memory limit.
  assert.equal(c.env?.find((e) => e.name === 'MALLOC_MMAP_THRESHOLD_')?.value, '65536');
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

test('kubectl kustomize renders the base and the node-local overlay', async (t) => {
  if (!(await canKustomize(t))) return;
  const checkCommon = (objects: K8sObject[], workload: K8sObject) => {
    for (const o of objects) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'regmirror', `${o.kind} ${o.metadata.name}`);
    const cm = find(objects, 'ConfigMap');
    assert.match(cm.metadata.name, /^regmirror-config-[a-z0-9]+$/, 'generated, hash-suffixed: a config change rolls the pods');
    const spec = podSpec(workload);
    assert.ok(spec.volumes.some((v) => v.configMap?.name === cm.metadata.name), 'the pods mount the generated ConfigMap');
    for (const c of [...(spec.initContainers ?? []), ...spec.containers]) assert.equal(c.image, 'regmirror:0.1.0', c.name);
    return parseConfig(cm.data!['mirror.yaml'], {});
  };

  const base = await kustomize(BASE);
  assert.deepEqual(base.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Namespace', 'PersistentVolumeClaim', 'Service']);
  assert.equal(checkCommon(base, find(base, 'Deployment')).listen.host, '0.0.0.0');

  const node = await kustomize(NODE_LOCAL);
  assert.deepEqual(node.map((o) => o.kind).sort(), ['ConfigMap', 'DaemonSet', 'Namespace']);
  assert.equal(checkCommon(node, find(node, 'DaemonSet')).listen.host, '127.0.0.1');
});

/** What the HA pods' environment would hold: the downward API's pod IP and sample Secret values. */
const SAMPLE_POD_IP = '10.42.1.7';
function sampleEnv(c: Container): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const e of c.env ?? []) {
    if (e.valueFrom?.fieldRef?.fieldPath === 'status.podIP') env[e.name] = SAMPLE_POD_IP;
    else if (e.valueFrom?.secretKeyRef) env[e.name] = `sample-${e.name.toLowerCase()}-0123456789abcdef`;
    else if (e.value !== undefined) env[e.name] = e.value;
  }
  return env;
}

const HA_SECRET_ENV = ['REGMIRROR_DB_PASSWORD', 'REGMIRROR_CLUSTER_SECRET', 'AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY'];

test('15.9 the HA mirror.yaml is a replica config: PostgreSQL, a bucket, the peer endpoint on 5001 at the pod\'s own IP', async () => {
  const text = await readFile(join(HA, 'mirror.yaml'), 'utf8');
  const env = { POD_IP: SAMPLE_POD_IP, REGMIRROR_DB_PASSWORD: 'pw', REGMIRROR_CLUSTER_SECRET: 'a'.repeat(44) };
  const cfg = parseConfig(text, env);
  assert.deepEqual({ host: cfg.listen.host, port: cfg.listen.port, dataDir: cfg.dataDir }, { host: '0.0.0.0', port: 5000, dataDir: '/data' });
  assert.equal(cfg.metadata.kind, 'postgres');
  assert.equal(cfg.storage.backend, 's3');
  assert.equal(cfg.cluster?.advertise, `http://${SAMPLE_POD_IP}:5001`);
  assert.deepEqual(cfg.cluster?.listen, { host: '0.0.0.0', port: 5001 });
  // Every secret is a reference to the environment, never a value in the ConfigMap.
  const raw = parseYaml(text) as { metadata: { postgres: { password: string } }; cluster: { secret: string } };
  assert.equal(raw.metadata.postgres.password, '${REGMIRROR_DB_PASSWORD}');
  assert.equal(raw.cluster.secret, '${REGMIRROR_CLUSTER_SECRET}');
  // Without the downward API's POD_IP the replica does not start, and says why.
  const { POD_IP: _unset, ...noPodIp } = env;
  assert.throws(() => parseConfig(text, noPodIp), /cluster\.advertise: environment variable POD_IP is not set/);
});

test('15.9 kubectl kustomize renders deploy/kubernetes/ha: 3 replicas, a PDB of one, anti-affinity, probes, secrets from the Secret, the peer port kept off the Service', async (t) => {
  if (!(await canKustomize(t))) return;
  const objects = await kustomize(HA);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['ConfigMap', 'Deployment', 'Namespace', 'NetworkPolicy', 'PodDisruptionBudget', 'Service'], 'no Secret is rendered');
  for (const o of objects) if (o.kind !== 'Namespace') assert.equal(o.metadata.namespace, 'regmirror', `${o.kind} ${o.metadata.name}`);

  const deployment = find(objects, 'Deployment');
  const spec = podSpec(deployment);
  const labels = deployment.spec?.template?.metadata?.labels;
  assert.equal(deployment.spec?.replicas, 3);
  assert.deepEqual(deployment.spec?.strategy, { type: 'RollingUpdate', rollingUpdate: { maxUnavailable: 1, maxSurge: 1 } });
  assert.ok(selects(deployment.spec?.selector as LabelSelector, labels), 'the Deployment selects its own pods');
  const anti = spec.affinity?.podAntiAffinity;
  const terms = [...(anti?.requiredDuringSchedulingIgnoredDuringExecution ?? []), ...(anti?.preferredDuringSchedulingIgnoredDuringExecution ?? []).map((p) => p.podAffinityTerm)];
  assert.ok(terms.some((term) => term.topologyKey === 'kubernetes.io/hostname' && selects(term.labelSelector, labels)), 'replicas are kept apart by node');

  const [c] = spec.containers;
  assertHardenedMirror(spec, c, 'HA Deployment');
  assert.equal(c.image, 'regmirror:0.1.0');
  const ports = Object.fromEntries((c.ports ?? []).map((p) => [p.name, p.containerPort]));
  assert.deepEqual(ports, { http: 5000, peer: 5001 });
  for (const [name, probe] of Object.entries({ startup: c.startupProbe, liveness: c.livenessProbe, readiness: c.readinessProbe })) {
    assert.equal(probe?.httpGet?.port, 'http', `${name} probe on the main port`);
  }
  assert.equal(c.readinessProbe?.httpGet?.path, '/readyz');
  const data = spec.volumes.find((v) => v.name === mounts(c)['/data']);
  assert.ok(data?.emptyDir?.sizeLimit, 'the spool is a bounded emptyDir');

  // Secrets: each from the one Secret by key; no literal value for anything secret.
  const env = Object.fromEntries((c.env ?? []).map((e) => [e.name, e]));
  assert.deepEqual(env.POD_IP?.valueFrom, { fieldRef: { fieldPath: 'status.podIP' } });
  for (const name of HA_SECRET_ENV) assert.deepEqual(env[name]?.valueFrom, { secretKeyRef: { name: 'regmirror-ha', key: name } }, name);
  for (const e of c.env ?? []) assert.ok(e.value === undefined, `${e.name} has a literal value`);
  const example = find(await docs(join(HA, 'secret.example.yaml')), 'Secret');
  const rendered = JSON.stringify(objects);
  for (const placeholder of new Set(Object.values(example.stringData ?? {}))) assert.ok(!rendered.includes(placeholder), `the example's ${placeholder} is not rendered`);

  // The config the pods mount parses in their environment, and names the declared ports.
  const cm = find(objects, 'ConfigMap');
  assert.ok(spec.volumes.some((v) => v.configMap?.name === cm.metadata.name), 'the pods mount the generated ConfigMap');
  const cfg = parseConfig(cm.data!['mirror.yaml'], sampleEnv(c));
  assert.equal(cfg.listen.port, ports.http);
  assert.equal(cfg.cluster?.listen?.port, ports.peer, 'cluster.listen is the peer port');
  const advertise = new URL(cfg.cluster!.advertise);
  assert.deepEqual({ host: advertise.hostname, port: Number(advertise.port) }, { host: SAMPLE_POD_IP, port: ports.peer }, 'cluster.advertise is the pod IP on the peer port');

  const pdb = find(objects, 'PodDisruptionBudget');
  const budget = pdb.spec as { maxUnavailable?: number; minAvailable?: number; selector: LabelSelector };
  assert.ok(selects(budget.selector, labels), 'the PDB selects the replicas');
  assert.ok(budget.maxUnavailable === 1 || budget.minAvailable === 2, `at most one replica down: ${JSON.stringify(budget)}`);

  const service = find(objects, 'Service').spec as { selector: Labels; ports: Array<{ port: number; targetPort: number | string }> };
  assert.ok(selects({ matchLabels: service.selector }, labels), 'the Service selects the replicas');
  assert.deepEqual(service.ports.map((p) => [p.port, p.targetPort]), [[5000, 'http']], 'the Service publishes the registry port only');

  const policy = find(objects, 'NetworkPolicy').spec as { podSelector: LabelSelector; ingress: Array<{ from?: Array<{ podSelector?: LabelSelector }>; ports: Array<{ port: number | string }> }> };
  assert.ok(selects(policy.podSelector, labels), 'the NetworkPolicy covers the replicas');
  const peerRules = policy.ingress.filter((r) => r.ports.some((p) => p.port === 'peer' || p.port === ports.peer));
  assert.ok(peerRules.length > 0 && peerRules.every((r) => (r.from ?? []).length > 0 && r.from!.every((f) => selects(f.podSelector, labels))), 'the peer port admits the replicas only');
});

test('15.9 secret.example.yaml names every key the HA pods read, and is not among the resources', async () => {
  const k = await kustomization(HA);
  assert.ok(!(k.resources ?? []).includes('secret.example.yaml'));
  assert.ok((await ownResources(HA)).every((o) => o.kind !== 'Secret'), 'no Secret among the resources');
  const example = find(await docs(join(HA, 'secret.example.yaml')), 'Secret');
  assert.equal(example.metadata.name, 'regmirror-ha');
  assert.deepEqual(Object.keys(example.stringData ?? {}).sort(), [...HA_SECRET_ENV].sort());
  const c = podSpec(find(await ownResources(HA), 'Deployment')).containers[0];
  const refs = (c.env ?? []).flatMap((e) => (e.valueFrom?.secretKeyRef ? [e.valueFrom.secretKeyRef.key] : []));
  assert.deepEqual(refs.sort(), [...HA_SECRET_ENV].sort());
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
