// Clients ask for the same tag with different Accept lists (containerd, Docker and podman
// each send their own). A manifest GET is what Docker Hub counts as a pull: a new list
// must not cost one when the cache already holds an answer the client accepts.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { MediaTypes, multiPlatformImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, sha256, startMirror, type Mirror } from './helpers.js';

const ALL = [MediaTypes.ociIndex, MediaTypes.dockerList, MediaTypes.ociManifest, MediaTypes.dockerManifest].join(', ');

async function setup(t: TestContext, img: FixtureImage): Promise<{ up: FakeUpstream; m: Mirror }> {
  const up = await FakeUpstream.start();
  up.addImage(img);
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: 60_000 }], defaultUpstream: 'docker.io' });
  t.after(async () => {
    await m.stop();
    await up.close();
  });
  return { up, m };
}

test('13.15 a new Accept list that takes the cached manifest\'s type is served from the cache, with no upstream request', async (t) => {
  const img = await singleImage({ name: 'library/accept', tag: 'v1', seed: 'accept-1' });
  const { up, m } = await setup(t, img);
  const url = `${m.url}/v2/library/accept/manifests/v1`;
  assert.equal((await get(url, { headers: { accept: ALL } })).status, 200);
  assert.equal(up.counters.manifestGet, 1);
  up.resetCounters();

  for (const accept of [MediaTypes.ociManifest, `${MediaTypes.ociManifest}, ${MediaTypes.dockerManifest}`]) {
    const r = await get(url, { headers: { accept } });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], MediaTypes.ociManifest);
    assert.equal(sha256(r.body), img.root.digest);
    const head = await get(url, { method: 'HEAD', headers: { accept } });
    assert.equal(head.headers['docker-content-digest'], img.root.digest);
  }
  assert.equal(up.counters.manifestGet, 0, 'no counted pull');
  assert.equal(up.counters.total, 0, 'nothing went upstream');
});

test('13.15 when the upstream might answer a new Accept list differently, a HEAD (not a GET) finds the cached digest', async (t) => {
  const img = await singleImage({ name: 'library/accept', tag: 'v1', seed: 'accept-2' });
  const { up, m } = await setup(t, img);
  const url = `${m.url}/v2/library/accept/manifests/v1`;
  // Cached for a client that takes single manifests only…
  assert.equal((await get(url, { headers: { accept: MediaTypes.ociManifest } })).status, 200);
  up.resetCounters();
  // …then asked by one that also takes indexes: the tag could be an index for it.
  const r = await get(url, { headers: { accept: `${MediaTypes.ociIndex}, ${MediaTypes.ociManifest}` } });
  assert.equal(r.status, 200);
  assert.equal(sha256(r.body), img.root.digest);
  assert.equal(up.counters.manifestHead, 1);
  assert.equal(up.counters.manifestGet, 0, 'the HEAD named a cached digest: no counted pull');
  up.resetCounters();
  await get(url, { headers: { accept: `${MediaTypes.ociIndex}, ${MediaTypes.ociManifest}` } });
  assert.equal(up.counters.total, 0, 'and that list now has its own fresh row');
});

test('13.15 an index cached for one list is not served to a list that does not take its type', async (t) => {
  const img = await multiPlatformImage({ name: 'library/accept', tag: 'v1', seed: 'accept-3', platforms: [{ os: 'linux', architecture: 'amd64' }] });
  const { up, m } = await setup(t, img);
  const url = `${m.url}/v2/library/accept/manifests/v1`;
  assert.equal((await get(url, { headers: { accept: ALL } })).headers['content-type'], MediaTypes.ociIndex);
  up.resetCounters();
  const r = await get(url, { headers: { accept: MediaTypes.dockerManifest } });
  assert.notEqual(r.headers['content-type'], MediaTypes.ociIndex, 'never an answer the client did not ask for');
  assert.equal(up.counters.manifestHead + up.counters.manifestGet, 1, 'the upstream was asked');
});
