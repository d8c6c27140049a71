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

test('18.6 offline: tags/list is answered from the cache, sorted, with n and last paginating', async () => {
  const tagged = await Promise.all(['v2', 'latest', 'v10'].map((tag) => singleImage({ name: 'library/tagged', tag, seed: `offline-${tag}` })));
  for (const i of tagged) up.addImage(i);
  const online = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
  for (const i of tagged) assert.equal((await get(`${online.url}/v2/tagged/manifests/${i.tag}`)).status, 200);
  await online.close();
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir, offline: true });
  try {
    up.resetCounters();
    const all = await get(`${m.url}/v2/tagged/tags/list`);
    assert.equal(all.status, 200, all.body.toString());
    assert.match(String(all.headers['content-type']), /^application\/json/);
    assert.deepEqual(JSON.parse(all.body.toString()), { name: 'library/tagged', tags: ['latest', 'v10', 'v2'] });
    const first = await get(`${m.url}/v2/tagged/tags/list?n=2`);
    assert.deepEqual(JSON.parse(first.body.toString()).tags, ['latest', 'v10']);
    assert.equal(first.headers.link, '</v2/tagged/tags/list?n=2&last=v10>; rel="next"');
    const second = await get(`${m.url}/v2/tagged/tags/list?n=2&last=v10`);
    assert.deepEqual(JSON.parse(second.body.toString()).tags, ['v2']);
    assert.equal(second.headers.link, undefined, 'the last page');
    const other = await get(`${m.url}/v2/library/app/tags/list`);
    assert.deepEqual(JSON.parse(other.body.toString()), { name: 'library/app', tags: ['v1'] });
    const none = await get(`${m.url}/v2/library/never/tags/list`);
    assert.equal(none.status, 404);
    assert.equal(errorCode(none), 'NAME_UNKNOWN');
    assert.match(none.body.toString(), /no tag of library\/never is in the offline cache/);
    assert.equal(up.counters.total + up.counters.token, 0);
  } finally {
    await m.close();
  }
});
