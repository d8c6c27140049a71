// containerd (ctr) pulling through regmirror configured as a hosts.toml mirror host.
// containerd adds ?ns=<registry> to every request to a mirror host; the mirrors here have
// no default upstream, so a pull can only succeed if that ns (or the path prefix) routes
// it. Each hosts.toml `server` is a closed port: containerd falls back to `server` when
// the mirror host fails, so a passing pull must have gone through the mirror.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { multiPlatformImage, singleImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { startMirror, type Mirror } from '../helpers.js';
import { requireTools, startContainerd, startDistribution, writeHostsDir, type Containerd } from './harness.js';

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

const single = await singleImage({ name: 'library/ctr-single', tag: 'v1', seed: 'ctr-e2e-single' });
const index = await multiPlatformImage({ name: 'library/ctr-index', tag: 'v1', seed: 'ctr-e2e-index', platforms });
const ghcrApp = await singleImage({ name: 'org/app', tag: 'v1', seed: 'ctr-e2e-ghcr' });

/** A loopback port with nothing listening on it (free a moment ago). */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function containerd(t: TestContext): Promise<Containerd> {
  const ctrd = await startContainerd();
  t.after(() => ctrd.close());
  return ctrd;
}

/** A hosts dir sending `registry` to `mirrorUrl`, with a dead `server` behind it. */
async function hostsDir(t: TestContext, registry: string, mirrorUrl: string, overridePath = false): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-hosts-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const server = `http://127.0.0.1:${await closedPort()}`;
  return writeHostsDir(dir, [{ registry, server, mirrorUrl, overridePath }]);
}

/** `ctr images pull` for linux/amd64; asserts success and the digest `ctr images ls` records. */
async function pull(ctrd: Containerd, hosts: string, ref: string, digest: string, mirror: Mirror): Promise<void> {
  const res = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', ref]);
  const why = `${res.stdout}\n${res.stderr}\n--- mirror:\n${mirror.logs.slice(-20).join('\n')}`;
  assert.equal(res.code, 0, why);
  const list = await ctrd.ctr(['images', 'ls']);
  assert.match(list.stdout, new RegExp(`^${ref.replace(/[.]/g, '\\.')}\\s+\\S+\\s+${digest}\\s`, 'm'));
}

/** The mirror's access-log entries. */
function served(mirror: Mirror): Array<{ path: string; status: number; upstream?: string; repo?: string }> {
  return mirror.logs.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request');
}

test('containerd pulls docker.io images through the mirror via ?ns=docker.io', async (t) => {
  if (!requireTools(t, 'docker-registry', 'openssl', 'containerd', 'ctr')) return;
  const dist = await startDistribution();
  t.after(() => dist.close());
  await dist.push(single);
  await dist.push(index);
  const mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: dist.url }] });
  t.after(() => mirror.stop());
  const ctrd = await containerd(t);
  const hosts = await hostsDir(t, 'docker.io', mirror.url);

  for (const img of [single, index]) {
    await pull(ctrd, hosts, `docker.io/${img.name}:${img.tag}`, img.root.digest, mirror);
    const tagHits = served(mirror).filter((e) => e.path === `/v2/${img.name}/manifests/${img.tag}`);
    assert.ok(tagHits.length > 0 && tagHits.every((e) => e.status === 200 && e.upstream === 'docker.io'));
  }
});

test('containerd pulls a second upstream through a path prefix host (override_path)', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr')) return;
  const up = await FakeUpstream.start({ auth: 'token', cdn: true });
  t.after(() => up.close());
  up.addImage(ghcrApp);
  const mirror = await startMirror({ upstreams: [{ name: 'ghcr.io', url: up.url }] });
  t.after(() => mirror.stop());
  const ctrd = await containerd(t);
  // containerd then asks for /v2/ghcr.io/org/app/...?ns=ghcr.io
  const hosts = await hostsDir(t, 'ghcr.io', `${mirror.url}/v2/ghcr.io`, true);

  await pull(ctrd, hosts, `ghcr.io/${ghcrApp.name}:${ghcrApp.tag}`, ghcrApp.root.digest, mirror);
  assert.ok(served(mirror).some((e) => e.path === `/v2/ghcr.io/${ghcrApp.name}/manifests/${ghcrApp.tag}` && e.status === 200));
});

test('a second pull by a fresh containerd within the tag TTL costs the upstream nothing', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr')) return;
  const up = await FakeUpstream.start({ auth: 'token', cdn: true });
  t.after(() => up.close());
  up.addImage(index);
  const mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }] });
  t.after(() => mirror.stop());
  const hosts = await hostsDir(t, 'docker.io', mirror.url);
  const ref = `docker.io/${index.name}:${index.tag}`;

  await pull(await containerd(t), hosts, ref, index.root.digest, mirror);
  assert.ok(up.counters.manifestGet > 0 && up.counters.blobGet > 0, 'the first pull came from upstream');
  up.resetCounters();

  await pull(await containerd(t), hosts, ref, index.root.digest, mirror);
  const { manifestGet, manifestHead, blobGet, blobHead, cdnGet, total } = up.counters;
  assert.deepEqual({ manifestGet, blobGet, cdnGet }, { manifestGet: 0, blobGet: 0, cdnGet: 0 });
  assert.deepEqual({ manifestHead, blobHead, total }, { manifestHead: 0, blobHead: 0, total: 0 }, 'no upstream request at all');
});
