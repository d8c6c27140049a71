// Manifests and tags through the cache: headers for all four media types, tag TTL with an
// injected clock, HEAD revalidation, coalescing, digest checks, tag lists and referrers.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { multiPlatformImage, singleImage, MediaTypes, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, sha256, startMirror, type Mirror } from './helpers.js';

const PLATFORMS = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64', variant: 'v8' },
];
const ALL_ACCEPT = [MediaTypes.ociIndex, MediaTypes.dockerList, MediaTypes.ociManifest, MediaTypes.dockerManifest].join(', ');

describe('manifests', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let clock = 1_000_000;
  const images: Record<string, FixtureImage> = {};

  before(async () => {
    images.ociIndex = await multiPlatformImage({ name: 'library/oci-index', tag: '1', seed: 'oi', platforms: PLATFORMS });
    images.dockerList = await multiPlatformImage({ name: 'library/docker-list', tag: '1', seed: 'dl', platforms: PLATFORMS, format: 'docker' });
    images.ociManifest = await singleImage({ name: 'library/oci-manifest', tag: '1', seed: 'om' });
    images.dockerManifest = await singleImage({ name: 'library/docker-manifest', tag: '1', seed: 'dm', format: 'docker' });
    up = await FakeUpstream.start();
    for (const img of Object.values(images)) up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: 60_000 }], defaultUpstream: 'docker.io', now: () => clock });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });
  beforeEach(() => up.resetCounters());

  for (const kind of ['ociIndex', 'dockerList', 'ociManifest', 'dockerManifest'] as const) {
    test(`GET and HEAD by tag and digest carry the right headers for ${kind}`, async () => {
      const img = images[kind];
      const base = `${m.url}/v2/${img.name}/manifests`;
      for (const ref of [img.tag, img.root.digest]) {
        const g = await get(`${base}/${ref}`, { headers: { accept: ALL_ACCEPT } });
        assert.equal(g.status, 200);
        assert.equal(g.headers['content-type'], img.root.mediaType);
        assert.equal(g.headers['docker-content-digest'], img.root.digest);
        assert.equal(g.headers.etag, `"${img.root.digest}"`);
        assert.deepEqual(g.body, img.root.bytes, 'the stored bytes are returned exactly');
        const h = await get(`${base}/${ref}`, { method: 'HEAD', headers: { accept: ALL_ACCEPT } });
        assert.equal(h.status, 200);
        assert.equal(h.headers['content-length'], String(img.root.bytes.length));
        assert.equal(h.headers['docker-content-digest'], img.root.digest);
        assert.equal(h.headers['content-type'], img.root.mediaType);
        assert.equal(h.body.length, 0);
      }
    });
  }

  test('a fresh tag costs no upstream request; a stale one costs a HEAD only while the digest is unchanged', async () => {
    const img = await singleImage({ name: 'library/ttl', tag: 'v1', seed: 'ttl' });
    up.addImage(img);
    const url = `${m.url}/v2/library/ttl/manifests/v1`;
    await get(url);
    assert.equal(up.counters.manifestGet, 1);
    up.resetCounters();
    for (let i = 0; i < 50; i++) assert.equal((await get(url)).status, 200);
    assert.equal(up.counters.total, 0, 'within the TTL nothing goes upstream');
    clock += 61_000;
    const r = await get(url);
    assert.equal(r.headers['docker-content-digest'], img.root.digest);
    assert.equal(up.counters.manifestHead, 1);
    assert.equal(up.counters.manifestGet, 0);
    up.resetCounters();
    await get(url);
    assert.equal(up.counters.total, 0, 'the HEAD renewed the TTL');
  });

  test('a tag moved upstream is fetched again after its TTL', async () => {
    const v1 = await singleImage({ name: 'library/moving', tag: 'latest', seed: 'm1' });
    const v2 = await singleImage({ name: 'library/moving', tag: 'latest', seed: 'm2' });
    up.addImage(v1);
    const url = `${m.url}/v2/library/moving/manifests/latest`;
    assert.equal((await get(url)).headers['docker-content-digest'], v1.root.digest);
    up.addImage(v2);
    assert.equal((await get(url)).headers['docker-content-digest'], v1.root.digest, 'still fresh');
    clock += 61_000;
    up.resetCounters();
    const r = await get(url);
    assert.equal(r.headers['docker-content-digest'], v2.root.digest);
    assert.equal(sha256(r.body), v2.root.digest);
    assert.equal(up.counters.manifestHead, 1);
    assert.equal(up.counters.manifestGet, 1);
  });

  test('concurrent revalidations of one stale tag share one upstream request', async () => {
    const img = await singleImage({ name: 'library/herd', tag: 'v1', seed: 'herd' });
    up.addImage(img);
    const url = `${m.url}/v2/library/herd/manifests/v1`;
    await get(url);
    clock += 61_000;
    up.resetCounters();
    up.faults = { latencyMs: 100 };
    const results = await Promise.all(Array.from({ length: 20 }, () => get(url)));
    up.faults = {};
    for (const r of results) assert.equal(r.headers['docker-content-digest'], img.root.digest);
    assert.equal(up.counters.manifestHead + up.counters.manifestGet, 1);
  });

  test('an index and a single manifest are cached apart for clients that accept different types', async () => {
    const img = images.ociIndex;
    const url = `${m.url}/v2/${img.name}/manifests/${img.tag}`;
    const index = await get(url, { headers: { accept: ALL_ACCEPT } });
    assert.equal(index.headers['content-type'], MediaTypes.ociIndex);
    // The fixture, like Docker Hub, refuses a client whose Accept excludes what the tag is.
    const single = await get(url, { headers: { accept: MediaTypes.dockerManifest } });
    assert.equal(single.status, 404);
    assert.equal(errorCode(single), 'MANIFEST_UNKNOWN');
    const again = await get(url, { headers: { accept: ALL_ACCEPT } });
    assert.equal(again.headers['docker-content-digest'], img.root.digest);
  });

  test('a second pull of a whole image makes no upstream manifest or blob GET', async () => {
    const img = await multiPlatformImage({ name: 'library/twice', tag: '1', seed: 'twice', platforms: PLATFORMS });
    up.addImage(img);
    const pullAll = async () => {
      const base = `${m.url}/v2/library/twice`;
      assert.equal((await get(`${base}/manifests/1`, { method: 'HEAD', headers: { accept: ALL_ACCEPT } })).status, 200);
      for (const [digest] of img.manifests) assert.equal((await get(`${base}/manifests/${digest}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
      for (const [digest] of img.blobs) assert.equal(sha256((await get(`${base}/blobs/${digest}`)).body), digest);
    };
    await pullAll();
    up.resetCounters();
    await pullAll();
    assert.equal(up.counters.manifestGet, 0);
    assert.equal(up.counters.blobGet, 0);
    assert.equal(up.counters.total, 0);
  });

  test('unknown tags and digests answer MANIFEST_UNKNOWN; unknown repositories NAME_UNKNOWN', async () => {
    const tag = await get(`${m.url}/v2/library/oci-manifest/manifests/nope`);
    assert.equal(tag.status, 404);
    assert.equal(errorCode(tag), 'MANIFEST_UNKNOWN');
    const digest = await get(`${m.url}/v2/library/oci-manifest/manifests/sha256:${'0'.repeat(64)}`);
    assert.equal(errorCode(digest), 'MANIFEST_UNKNOWN');
    const repo = await get(`${m.url}/v2/library/does-not-exist/manifests/1`);
    assert.equal(repo.status, 404);
    assert.equal(errorCode(repo), 'NAME_UNKNOWN');
  });

  test('tags/list passes n and last through and rewrites Link to the client path', async () => {
    for (const t of ['a', 'b', 'c']) {
      const img = await singleImage({ name: 'library/tagged', tag: t, seed: `tag-${t}` });
      up.addImage(img);
    }
    const first = await get(`${m.url}/v2/tagged/tags/list?n=2`);
    assert.equal(first.status, 200);
    assert.deepEqual(JSON.parse(first.body.toString()).tags, ['a', 'b']);
    assert.equal(first.headers.link, '</v2/tagged/tags/list?n=2&last=b>; rel="next"');
    const next = await get(`${m.url}/v2/tagged/tags/list?n=2&last=b`);
    assert.deepEqual(JSON.parse(next.body.toString()).tags, ['c']);
    assert.equal(next.headers.link, undefined);
    const bad = await get(`${m.url}/v2/tagged/tags/list?n=-1`);
    assert.equal(bad.status, 400);
  });

  test('referrers are passed through as an OCI index', async () => {
    const img = images.ociManifest;
    const r = await get(`${m.url}/v2/${img.name}/referrers/${img.root.digest}`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-type'], MediaTypes.ociIndex);
    assert.deepEqual(JSON.parse(r.body.toString()).manifests, []);
  });

  test('13.12 referrers filtered by artifactType are filtered, whatever the upstream did', async () => {
    const img = images.ociManifest;
    const sig = { mediaType: MediaTypes.ociManifest, digest: sha256(Buffer.from('sig')), size: 3, artifactType: 'application/vnd.example.signature' };
    const sbom = { mediaType: MediaTypes.ociManifest, digest: sha256(Buffer.from('sbom')), size: 4, artifactType: 'application/spdx+json' };
    up.referrers.set(img.root.digest, [sig, sbom]);
    try {
      const url = `${m.url}/v2/${img.name}/referrers/${img.root.digest}`;
      const filtered = await get(`${url}?artifactType=${encodeURIComponent(sig.artifactType)}`);
      assert.equal(filtered.status, 200);
      assert.equal(filtered.headers['oci-filters-applied'], 'artifactType');
      assert.deepEqual(JSON.parse(filtered.body.toString()).manifests, [sig]);
      assert.equal(filtered.headers['content-length'], String(filtered.body.length));
      const all = await get(url);
      assert.equal(all.headers['oci-filters-applied'], undefined, 'nothing asked, nothing claimed');
      assert.deepEqual(JSON.parse(all.body.toString()).manifests, [sig, sbom]);
    } finally {
      up.referrers.delete(img.root.digest);
    }
  });

  test('push methods are refused as unsupported', async () => {
    const r = await fetch(`${m.url}/v2/library/x/blobs/uploads/`, { method: 'POST' });
    assert.equal(r.status, 405);
    assert.equal(((await r.json()) as { errors: Array<{ code: string }> }).errors[0].code, 'UNSUPPORTED');
  });
});
