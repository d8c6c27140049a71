// Disk full: the data dir on a small tmpfs. A pull larger than the free space still
// succeeds for its clients (streamed without caching), nothing partial is published,
// hits keep being served, and the next small pull is cached again.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { largeBlobImage, singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { downloadsSettled, get, sha256, startMirror } from './helpers.js';

const MB = 1024 * 1024;

function mountTmpfs(dir: string, size: string): boolean {
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${size}`, 'tmpfs', dir], { stdio: 'ignore' });
    return true;
  } catch {
    return false;
  }
}

test('a pull larger than the free space succeeds uncached; the store stays whole and serves on', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-full-'));
  if (!mountTmpfs(dir, '12m')) {
    if (process.env.CI === 'true') throw new Error('mounting a tmpfs failed: CI runs as root and must be able to');
    t.skip('needs root to mount a small tmpfs');
    await rm(dir, { recursive: true, force: true });
    return;
  }
  const up = await FakeUpstream.start();
  const small = await singleImage({ name: 'library/small', tag: '1', seed: 'full-small', layerSizes: [100_000] });
  const huge = largeBlobImage('library/huge', '1', 20 * MB, 'full-huge');
  const later = await singleImage({ name: 'library/later', tag: '1', seed: 'full-later', layerSizes: [100_000] });
  for (const img of [small, huge, later]) up.addImage(img);
  const dataDir = join(dir, 'data');
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
  try {
    const pullAll = async (img: typeof small) => {
      assert.equal((await get(`${m.url}/v2/${img.name}/manifests/1`)).status, 200);
      for (const [d] of img.blobs) {
        const r = await get(`${m.url}/v2/${img.name}/blobs/${d}`);
        assert.equal(r.status, 200);
        assert.equal(sha256(r.body), d);
      }
    };
    await pullAll(small);
    // 20 MB into a 12 MB file system: two clients at once, both get every byte right.
    const [layer] = [...huge.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    const both = await Promise.all([get(`${m.url}/v2/library/huge/blobs/${layer}`), get(`${m.url}/v2/library/huge/blobs/${layer}`)]);
    for (const r of both) {
      assert.equal(r.status, 200);
      assert.equal(sha256(r.body), layer);
    }
    await downloadsSettled(m);
    assert.equal(await m.metadata.getBlob(layer), undefined, 'nothing published');
    assert.deepEqual(await readdir(join(dataDir, 'tmp')), [], 'no partial file left');
    assert.ok(m.logs.some((l) => l.includes('streaming the blob without caching')));
    assert.match((await get(`${m.url}/metrics`)).body.toString(), /regmirror_passthrough_total [1-9]/);
    up.resetCounters();
    await pullAll(small);
    assert.equal(up.counters.total, 0, 'hits are still served from the store');
    await pullAll(later);
    await downloadsSettled(m);
    for (const [d] of later.blobs) assert.ok(await m.metadata.getBlob(d), 'the next small pull is cached');
  } finally {
    await m.close();
    await up.close();
    execFileSync('umount', [dir]);
    await rm(dir, { recursive: true, force: true });
  }
});
