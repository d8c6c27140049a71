// The operator's commands on fixture data, through the real CLI: cache ls, pin, unpin,
// rm, gc --dry-run and gc, verify and verify --repair after a byte flipped on disk.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, open, rm, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, describe, test } from 'node:test';
import { randomBytes, singleImage, tarLayer, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, sha256, startMirror } from './helpers.js';
import { metadataYamlFor, openTestStore } from './support/metadata-backend.js';

const exec = promisify(execFile);
const MAIN = new URL('../src/main.ts', import.meta.url).pathname;

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice(7);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

describe('cache, gc and verify commands', () => {
  let up: FakeUpstream;
  let dir: string;
  let dataDir: string;
  let config: string;
  let a: FixtureImage;
  let b: FixtureImage;
  let sharedDigest: string;
  const cli = async (...args: string[]) => {
    try {
      const r = await exec(process.execPath, ['--import', 'tsx', MAIN, ...args, '--config', config]);
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code: number; stdout: string; stderr: string };
      return { code: e.code, stdout: e.stdout, stderr: e.stderr };
    }
  };

  before(async () => {
    up = await FakeUpstream.start();
    const shared = await tarLayer('base.bin', 32 * 1024, 'admin-shared');
    sharedDigest = sha256(shared);
    a = await singleImage({ name: 'team/a', tag: 'v1', seed: 'admin-a', sharedLayers: [shared] });
    b = await singleImage({ name: 'team/b', tag: 'v1', seed: 'admin-b', sharedLayers: [shared] });
    up.addImage(a);
    up.addImage(b);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-admin-'));
    dataDir = join(dir, 'data');
    config = join(dir, 'mirror.yaml');
    await writeFile(config, `dataDir: ${dataDir}\n${await metadataYamlFor(dataDir)}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
    for (const img of [a, b]) {
      await get(`${m.url}/v2/${img.name}/manifests/v1`);
      for (const [d] of img.blobs) await get(`${m.url}/v2/${img.name}/blobs/${d}`);
    }
    await get(`${m.url}/v2/team/a/manifests/v1`);
    await m.close();
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('cache ls shows each image with digest, size, pins, last pull and hits', async () => {
    const r = await cli('cache', 'ls');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^IMAGE\s+DIGEST\s+SIZE\s+PINNED\s+LAST PULLED\s+HITS$/m);
    assert.match(r.stdout, new RegExp(`^docker\\.io/team/a:v1\\s+${a.root.digest.slice(7, 19)}\\s+\\S+ KiB\\s+-\\s+\\S+Z\\s+1$`, 'm'));
    const json = JSON.parse((await cli('cache', 'ls', '--json')).stdout);
    assert.deepEqual(
      json.map((i: { image: string }) => i.image),
      ['docker.io/team/a:v1', 'docker.io/team/b:v1'],
    );
    const sizeA = [...a.blobs.values()].reduce((n, x) => n + x.length, a.root.bytes.length);
    assert.equal(json[0].size, sizeA);
  });

  test('pin and unpin a whole image; a blob stays pinned while another pinned image holds it', async () => {
    assert.match((await cli('cache', 'pin', 'team/a:v1')).stdout, /^pinned docker\.io\/team\/a:v1 sha256:/);
    assert.match((await cli('cache', 'pin', 'team/b:v1')).stdout, /^pinned docker\.io\/team\/b:v1/);
    assert.match((await cli('cache', 'unpin', 'team/b:v1')).stdout, /^unpinned docker\.io\/team\/b:v1/);
    const json = JSON.parse((await cli('cache', 'ls', '--json')).stdout);
    assert.deepEqual(
      json.map((i: { pinned: boolean }) => i.pinned),
      [true, false],
    );
    const db = await openTestStore(dataDir);
    try {
      assert.equal((await db.getBlob(sharedDigest))?.pinned, true, 'still held by pinned team/a');
      const onlyB = [...b.blobs.keys()].find((d) => d !== sharedDigest)!;
      assert.equal((await db.getBlob(onlyB))?.pinned, false);
    } finally {
      await db.close();
    }
    const missing = await cli('cache', 'pin', 'team/nope:v1');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /docker\.io\/team\/nope:v1 is not in the cache/);
    await cli('cache', 'unpin', 'team/a:v1');
  });

  test('18.6 cache pin --json reports the new state; cache rm of a pinned image needs --force', async () => {
    const pinned = await cli('cache', 'pin', 'team/b:v1', '--json');
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.deepEqual(JSON.parse(pinned.stdout).map((i: { image: string; pinned: boolean }) => [i.image, i.pinned]), [['docker.io/team/b:v1', true]]);
    const refused = await cli('cache', 'rm', 'team/b:v1');
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /docker\.io\/team\/b:v1 is pinned: unpin first, or pass --force/);
    assert.match((await cli('cache', 'ls')).stdout, /team\/b:v1/, 'still there');
    const unpinned = await cli('cache', 'unpin', 'team/b:v1', '--json');
    assert.equal(JSON.parse(unpinned.stdout)[0].pinned, false);
    await cli('cache', 'pin', 'team/b:v1');
    const forced = await cli('cache', 'rm', 'team/b:v1', '--force');
    assert.equal(forced.code, 0, forced.stderr);
    assert.match(forced.stdout, /^removed 1 image\(s\)/);
    // Put b back for the tests that follow.
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
    await get(`${m.url}/v2/${b.name}/manifests/v1`);
    for (const [d] of b.blobs) await get(`${m.url}/v2/${b.name}/blobs/${d}`);
    await m.close();
  });

  test('cache rm removes the image and the blobs no other image holds', async () => {
    const r = await cli('cache', 'rm', 'team/b:v1');
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^removed 1 image\(s\): 3 blobs, .* freed\n  docker\.io\/team\/b:v1\n$/, "the manifest, the config and the layer only b has");
    const onlyB = [...b.blobs.keys()].find((d) => d !== sharedDigest)!;
    await assert.rejects(open(blobPath(dataDir, onlyB)), /ENOENT/);
    await (await open(blobPath(dataDir, sharedDigest))).close();
    assert.doesNotMatch((await cli('cache', 'ls')).stdout, /team\/b/);
  });

  test('gc --dry-run reports without changing anything; gc repairs', async () => {
    // A file with no row (as a crash after rename leaves), and a row whose file is gone.
    const stray = randomBytes(1000, 'stray');
    const strayPath = blobPath(dataDir, sha256(stray));
    await mkdir(join(strayPath, '..'), { recursive: true });
    await writeFile(strayPath, stray);
    // Left long ago: a file published within the last hour may be about to be recorded.
    const longAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(strayPath, longAgo, longAgo);
    const [configDigest] = [...a.blobs].sort((x, y) => x[1].length - y[1].length)[0];
    await copyFile(blobPath(dataDir, configDigest), join(dir, 'config.bak'));
    await unlink(blobPath(dataDir, configDigest));
    const dry = await cli('gc', '--dry-run');
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /^would remove 1 file\(s\) with no record \(1000 B\)$/m);
    assert.match(dry.stdout, /^would remove 1 record\(s\) whose file is gone$/m);
    await (await open(strayPath)).close();
    const real = await cli('gc');
    assert.match(real.stdout, /^removed 1 file\(s\) with no record/m);
    await assert.rejects(open(strayPath), /ENOENT/);
    const again = await cli('gc', '--dry-run');
    assert.match(again.stdout, /^would remove 0 file\(s\)/m);
    assert.match(again.stdout, /^would remove 0 record\(s\)/m);
  });

  test('a flipped byte: verify reports it, verify --repair removes it, the next pull serves the right bytes', async () => {
    const [layer, bytes] = [...a.blobs].sort((x, y) => y[1].length - x[1].length)[0];
    const fh = await open(blobPath(dataDir, layer), 'r+');
    const one = Buffer.alloc(1);
    await fh.read(one, 0, 1, 100);
    one[0] ^= 0xff;
    await fh.write(one, 0, 1, 100);
    await fh.close();
    const found = await cli('verify');
    assert.equal(found.code, 1);
    assert.match(found.stdout, new RegExp(`^bad ${layer}: content hashes to sha256:`, 'm'));
    const repaired = await cli('verify', '--repair');
    assert.equal(repaired.code, 0);
    assert.match(repaired.stdout, /1 bad, 1 removed/);
    assert.equal((await cli('verify')).code, 0);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
    try {
      up.resetCounters();
      const r = await get(`${m.url}/v2/team/a/blobs/${layer}`);
      assert.deepEqual(r.body, bytes);
      assert.equal(up.counters.blobGet, 1, 'fetched again');
    } finally {
      await m.close();
    }
  });

  test('the serving path never returns a blob changed in place: the mtime check catches it and it is fetched again', async () => {
    const [layer, bytes] = [...a.blobs].sort((x, y) => y[1].length - x[1].length)[0];
    const fh = await open(blobPath(dataDir, layer), 'r+');
    await fh.write(Buffer.from([bytes[200] ^ 0xff]), 0, 1, 200);
    await fh.close();
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
    try {
      up.resetCounters();
      const r = await get(`${m.url}/v2/team/a/blobs/${layer}`);
      assert.deepEqual(r.body, bytes);
      assert.equal(up.counters.blobGet, 1);
      assert.ok(m.logs.some((l) => l.includes('stored blob changed on disk')));
    } finally {
      await m.close();
    }
  });
});
