// Offline mode: nothing is ever sent upstream; cached tags are served whatever their age;
// a miss says plainly that the content is not in the offline cache.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, sha256, startMirror } from './helpers.js';

let up: FakeUpstream;
let img: FixtureImage;
let dataDir: string;
let clock = 1_000_000;

before(async () => {
  up = await FakeUpstream.start();
  img = await singleImage({ name: 'library/app', tag: 'v1', seed: 'offline' });
  up.addImage(img);
  // Fill a cache online first.
  const online = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: 1000 }], defaultUpstream: 'docker.io', now: () => clock });
  dataDir = online.dataDir;
  assert.equal((await get(`${online.url}/v2/library/app/manifests/v1`)).status, 200);
  for (const [digest] of img.blobs) assert.equal((await get(`${online.url}/v2/library/app/blobs/${digest}`)).status, 200);
  await online.close();
});
after(async () => {
  await up.close();
  const { rm } = await import('node:fs/promises');
  await rm(dataDir, { recursive: true, force: true });
});

test('offline: old tags and blobs are served, misses are 404 naming the offline cache, the upstream hears nothing', async () => {
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: 1000 }], defaultUpstream: 'docker.io', dataDir, offline: true, now: () => clock });
  try {
    up.resetCounters();
    clock += 365 * 24 * 3_600_000;
    const tag = await get(`${m.url}/v2/library/app/manifests/v1`);
    assert.equal(tag.status, 200);
    assert.equal(tag.headers['docker-content-digest'], img.root.digest);
    assert.equal(tag.headers.warning, undefined, 'offline content is not stale, it is all there is');
    for (const [digest] of img.blobs) assert.equal(sha256((await get(`${m.url}/v2/library/app/blobs/${digest}`)).body), digest);

    const missTag = await get(`${m.url}/v2/library/app/manifests/v2`);
    assert.equal(missTag.status, 404);
    assert.equal(errorCode(missTag), 'MANIFEST_UNKNOWN');
    assert.match(missTag.body.toString(), /not in the offline cache/);
    const missBlob = await get(`${m.url}/v2/library/app/blobs/sha256:${'0'.repeat(64)}`);
    assert.equal(missBlob.status, 404);
    assert.equal(errorCode(missBlob), 'BLOB_UNKNOWN');
    const head = await get(`${m.url}/v2/library/app/blobs/sha256:${'0'.repeat(64)}`, { method: 'HEAD' });
    assert.equal(head.status, 404);
    assert.equal(up.counters.total + up.counters.token + up.counters.cdnGet, 0);
  } finally {
    await m.close();
  }
});
