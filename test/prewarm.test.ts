// regmirror prewarm: platform selection, shared layers fetched once, the --server mode
// with streamed progress and an admin token, per-image failures, the rate-limit wait,
// and image lists from files.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, beforeEach, describe, test } from 'node:test';
import { multiPlatformImage, singleImage, tarLayer, MediaTypes, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { DEFAULTS, type Config } from '../src/config.js';
import { openCache } from '../src/cli/context.js';
import { imagesFromFile, prewarm, prewarmViaServer, type PrewarmEvent } from '../src/cli/prewarm.js';
import { silentLogger } from '../src/log.js';
import { get, sha256, startMirror, type Mirror } from './helpers.js';
import { metadataConfigFor, metadataYamlFor } from './support/metadata-backend.js';

const exec = promisify(execFile);
const MAIN = new URL('../src/main.ts', import.meta.url).pathname;
const ACCEPT = [MediaTypes.ociIndex, MediaTypes.dockerList, MediaTypes.ociManifest, MediaTypes.dockerManifest].join(', ');

/** Pulls one platform the way containerd does: HEAD tag, index, the platform's manifest, its blobs. */
async function pullPlatform(m: Mirror, img: FixtureImage, arch: string): Promise<void> {
  const base = `${m.url}/v2/${img.name}`;
  assert.equal((await get(`${base}/manifests/${img.tag}`, { method: 'HEAD', headers: { accept: ACCEPT } })).status, 200);
  const index = JSON.parse((await get(`${base}/manifests/${img.root.digest}`, { headers: { accept: ACCEPT } })).body.toString());
  const child = index.manifests.find((d: { platform: { architecture: string } }) => d.platform.architecture === arch);
  const manifest = JSON.parse((await get(`${base}/manifests/${child.digest}`, { headers: { accept: ACCEPT } })).body.toString());
  for (const d of [manifest.config, ...manifest.layers]) {
    const r = await get(`${base}/blobs/${d.digest}`);
    assert.equal(r.status, 200);
    assert.equal(sha256(r.body), d.digest);
  }
}

describe('prewarm', () => {
  let up: FakeUpstream;
  let dir: string;
  let index: FixtureImage;
  let a: FixtureImage;
  let b: FixtureImage;
  let shared: Buffer;

  before(async () => {
    up = await FakeUpstream.start();
    index = await multiPlatformImage({
      name: 'library/multi',
      tag: '1',
      seed: 'multi',
      platforms: [
        { os: 'linux', architecture: 'amd64' },
        { os: 'linux', architecture: 'arm64' },
      ],
    });
    shared = await tarLayer('base/os.bin', 64 * 1024, 'shared-base');
    a = await singleImage({ name: 'team/a', tag: 'v1', seed: 'a', sharedLayers: [shared] });
    b = await singleImage({ name: 'team/b', tag: 'v1', seed: 'b', sharedLayers: [shared] });
    for (const img of [index, a, b]) up.addImage(img);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-prewarm-'));
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => up.resetCounters());

  async function config(dataDir: string, extra: Partial<Config> = {}): Promise<Config> {
    return {
      ...structuredClone(DEFAULTS),
      dataDir,
      metadata: await metadataConfigFor(dataDir),
      listen: { host: '127.0.0.1', port: 0 },
      defaultUpstream: 'docker.io',
      upstreams: [{ ...DEFAULTS.upstreams[0], url: up.url, aliases: [] }],
      ...extra,
    };
  }

  test('one platform of an index, then a pull of that platform costs the upstream nothing', async () => {
    const dataDir = join(dir, 'platform');
    const ctx = await openCache(await config(dataDir), { log: silentLogger });
    const [result] = await prewarm(ctx, ['multi:1'], { platforms: [{ os: 'linux', architecture: 'amd64' }], concurrency: 4 });
    await ctx.close();
    assert.equal(result.error, undefined);
    assert.equal(result.image, 'docker.io/library/multi:1');
    assert.equal(result.digest, index.root.digest);
    assert.deepEqual(result.platforms, ['linux/amd64']);
    const amd64Blobs = up.counters.blobGet;
    assert.equal(amd64Blobs, 2, 'config and layer of amd64 only');

    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
    try {
      up.resetCounters();
      await pullPlatform(m, index, 'amd64');
      assert.equal(up.counters.total + up.counters.token, 0);
    } finally {
      await m.close();
    }
  });

  test('two images sharing a layer: the shared blob is fetched once', async () => {
    const ctx = await openCache(await config(join(dir, 'shared')), { log: silentLogger });
    const results = await prewarm(ctx, ['team/a:v1', 'team/b:v1'], { platforms: 'all', concurrency: 4 });
    await ctx.close();
    for (const r of results) assert.equal(r.error, undefined);
    const sharedDigest = sha256(shared);
    assert.equal(up.counters.blobGetByDigest.get(sharedDigest), 1);
    for (const digest of [...a.blobs.keys(), ...b.blobs.keys()]) assert.equal(up.counters.blobGetByDigest.get(digest), 1, digest);
    assert.equal(results[0].fetchedBlobs + results[1].fetchedBlobs, new Set([...a.blobs.keys(), ...b.blobs.keys()]).size);
  });

  test('--server: the server fills its own cache and streams progress; the admin token is required', async () => {
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
    try {
      const events: PrewarmEvent[] = [];
      const results = await prewarmViaServer(m.url, ['team/a:v1'], { onEvent: (e) => events.push(e) });
      assert.equal(results[0].error, undefined);
      assert.deepEqual(
        [...new Set(events.map((e) => e.type))].filter((t) => t !== 'progress'),
        ['start', 'done'],
      );
      assert.ok(events.some((e) => e.type === 'progress' && e.bytesDone === e.bytesTotal && e.bytesTotal > 0));
      up.resetCounters();
      for (const [digest] of a.blobs) assert.equal(sha256((await get(`${m.url}/v2/team/a/blobs/${digest}`)).body), digest);
      assert.equal((await get(`${m.url}/v2/team/a/manifests/v1`)).status, 200);
      assert.equal(up.counters.total, 0, 'the server cache holds the image');
    } finally {
      await m.stop();
    }
    const guarded = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', adminToken: 'hunter2' });
    try {
      await assert.rejects(prewarmViaServer(guarded.url, ['team/a:v1'], {}), /401.*admin token required/);
      const ok = await prewarmViaServer(guarded.url, ['team/a:v1'], { token: 'hunter2' });
      assert.equal(ok[0].error, undefined);
    } finally {
      await guarded.stop();
    }
  });

  test('the CLI: a missing image and a down upstream fail by name, the rest completes, exit status 1', async () => {
    const dataDir = join(dir, 'cli');
    const file = join(dir, 'cli.yaml');
    await writeFile(
      file,
      `dataDir: ${dataDir}\n${await metadataYamlFor(dataDir)}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n  down.example:\n    url: http://127.0.0.1:9\n    timeouts:\n      connect: 1s\n`,
    );
    const run = exec(process.execPath, ['--import', 'tsx', MAIN, 'prewarm', '--config', file, 'team/a:v1', 'library/nope:1', 'down.example/x/y:1']);
    const err = await run.then(
      () => undefined,
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    assert.ok(err, 'exit status is non-zero');
    assert.equal(err.code, 1);
    assert.match(err.stdout, /docker\.io\/team\/a:v1\s+\S{12}\s+single/);
    assert.match(err.stdout, /error: docker\.io\/library\/nope:1 \(upstream docker\.io\): (NAME_UNKNOWN|MANIFEST_UNKNOWN)/);
    assert.match(err.stdout, /error: down\.example\/x\/y:1 \(upstream down\.example\): UNAVAILABLE: down\.example \(http:\/\/127\.0\.0\.1:\d+\) unreachable: connection refused/);
    assert.match(err.stderr, /done docker\.io\/team\/a:v1/);
  });

  test('18.6 prewarm --platform that matches nothing lists the platforms the index has', async () => {
    const dataDir = join(dir, 'no-platform');
    const file = join(dir, 'no-platform.yaml');
    await writeFile(file, `dataDir: ${dataDir}\n${await metadataYamlFor(dataDir)}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const err = await exec(process.execPath, ['--import', 'tsx', MAIN, 'prewarm', '--config', file, '--platform', 'linux/s390x', 'multi:1']).then(
      () => undefined,
      (e: { code: number; stdout: string; stderr: string }) => e,
    );
    assert.ok(err, 'exit status is non-zero');
    assert.equal(err.code, 1);
    assert.match(err.stdout, /error: docker\.io\/library\/multi:1 .*no manifest in the index is for linux\/s390x; it has linux\/amd64, linux\/arm64$/m);
  });

  test('a rate-limited upstream makes prewarm wait and say so', async () => {
    let clock = 1_000_000;
    const ctx = await openCache(await config(join(dir, 'limited')), { log: silentLogger, now: () => clock });
    try {
      ctx.clients[0].state.limited(30);
      const events: PrewarmEvent[] = [];
      const [r] = await prewarm(ctx, ['team/b:v1'], {
        platforms: 'all',
        concurrency: 2,
        onEvent: (e) => events.push(e),
        sleep: async (ms) => {
          clock += ms;
        },
      });
      assert.equal(r.error, undefined);
      const wait = events.find((e) => e.type === 'wait');
      assert.ok(wait && wait.type === 'wait');
      assert.equal(wait.seconds, 30);
      assert.match(wait.reason, /rate-limited/);
    } finally {
      await ctx.close();
    }
  });
});

test('image lists: one per line with comments, or every image: of a Kubernetes manifest', () => {
  assert.deepEqual(imagesFromFile('# base images\nnginx:1.27\n\nghcr.io/org/app:v1  # the app\n'), ['nginx:1.27', 'ghcr.io/org/app:v1']);
  const k8s = `apiVersion: apps/v1
kind: Deployment
spec:
  template:
    spec:
      initContainers:
        - name: init
          image: busybox:1.36
      containers:
        - name: app
          image: "ghcr.io/org/app:v1"
        - name: sidecar
          image: busybox:1.36
---
apiVersion: batch/v1
kind: Job
spec:
  template:
    spec:
      containers:
        - image: registry.k8s.io/pause:3.9
`;
  assert.deepEqual(imagesFromFile(k8s), ['busybox:1.36', 'ghcr.io/org/app:v1', 'registry.k8s.io/pause:3.9']);
});
