// Blob serving through the cache: single-flight downloads, verification before anything
// is published or completed, Range on a miss, HEAD without download, the link rule.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage, MediaTypes, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, pull, sha256, startMirror, type Mirror } from './helpers.js';
import { parseDigest } from '../src/oci/digest.js';

const MB = 1024 * 1024;

/** The layer (the large blob) of a largeBlobImage. */
function layerOf(img: FixtureImage): { digest: string; bytes: Buffer } {
  const [digest, bytes] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  return { digest, bytes };
}


async function settled(m: Mirror): Promise<void> {
  const deadline = Date.now() + 20_000;
  while (m.blobs.inFlight > 0) {
    if (Date.now() > deadline) throw new Error('downloads did not settle');
    await new Promise((r) => setTimeout(r, 20));
  }
}

function publishedPath(m: Mirror, digest: string): string {
  const hex = digest.slice(7);
  return join(m.dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

describe('blobs', () => {
  let up: FakeUpstream;
  let m: Mirror;
  /** Moves the mirror's clock past what it remembers for a while (a digest mismatch). */
  let skew = 0;
  const big = largeBlobImage('library/big', '1', 50 * MB, 'big');
  const small = largeBlobImage('library/small', '1', 5 * MB, 'small');
  const other = largeBlobImage('library/other', '1', 5 * MB, 'other');

  before(async () => {
    up = await FakeUpstream.start();
    for (const img of [big, small, other]) up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', now: () => Date.now() + skew });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('16 concurrent GETs of one uncached 50 MB blob make one upstream GET and all verify', async () => {
    const { digest } = layerOf(big);
    up.resetCounters();
    const results = await Promise.all(Array.from({ length: 16 }, () => pull(`${m.url}/v2/library/big/blobs/${digest}`)));
    for (const r of results) {
      assert.equal(r.status, 200);
      assert.ok(r.complete);
      assert.equal(sha256(r.body), digest);
    }
    assert.equal(up.counters.blobGetByDigest.get(digest), 1);
    assert.equal(up.counters.cdnAuthorization, 0, 'the CDN must never see Authorization');
    // Clients get their last byte before the blob is published and recorded.
    await settled(m);
    assert.ok(existsSync(publishedPath(m, digest)));
  });

  test('a second GET is served from the store with no upstream request', async () => {
    const { digest } = layerOf(big);
    up.resetCounters();
    const r = await pull(`${m.url}/v2/library/big/blobs/${digest}`);
    assert.equal(sha256(r.body), digest);
    assert.equal(up.counters.total, 0);
  });

  test('cached blobs served to many clients at once, some leaving mid-body, all arrive whole', async () => {
    // The serving loop reuses its read buffers across responses: a buffer handed back
    // while a write still held it would show up here as wrong bytes in another response.
    const warm = largeBlobImage('library/warm', '1', 5 * MB, 'warm');
    up.addImage(warm);
    const blobs = [layerOf(big), layerOf(warm)];
    await pull(`${m.url}/v2/library/warm/blobs/${blobs[1].digest}`);
    await settled(m);
    for (let round = 0; round < 3; round++) {
      const leavers = Array.from({ length: 4 }, async (_, i) => {
        const ac = new AbortController();
        const res = await request(`${m.url}/v2/library/${i % 2 ? 'warm' : 'big'}/blobs/${blobs[i % 2].digest}`, { signal: ac.signal });
        let seen = 0;
        try {
          for await (const c of res.body) if ((seen += (c as Buffer).length) > (i + 1) * MB) ac.abort();
        } catch {
          // the abort
        }
      });
      const stayers = Array.from({ length: 6 }, (_, i) => pull(`${m.url}/v2/library/${i % 2 ? 'warm' : 'big'}/blobs/${blobs[i % 2].digest}`));
      const [results] = await Promise.all([Promise.all(stayers), Promise.all(leavers)]);
      results.forEach((r, i) => {
        assert.equal(r.status, 200);
        assert.ok(r.complete);
        assert.equal(sha256(r.body), blobs[i % 2].digest, `round ${round} client ${i}`);
      });
    }
    const tail = await pull(`${m.url}/v2/library/big/blobs/${blobs[0].digest}`, { range: `bytes=${3 * MB + 5}-` });
    assert.equal(tail.status, 206);
    assert.ok(tail.body.equals(blobs[0].bytes.subarray(3 * MB + 5)));
  });

  test('HEAD on an uncached blob asks the upstream with HEAD and downloads nothing', async () => {
    const { digest, bytes } = layerOf(small);
    up.resetCounters();
    const r = await get(`${m.url}/v2/library/small/blobs/${digest}`, { method: 'HEAD' });
    assert.equal(r.status, 200);
    assert.equal(r.headers['content-length'], String(bytes.length));
    assert.equal(r.headers['docker-content-digest'], digest);
    assert.equal(up.counters.blobGet, 0);
    assert.equal(up.counters.blobHead, 1);
    assert.equal(m.blobs.inFlight, 0);
  });

  test('upstream corrupts a blob: no client completes, nothing is published, a clean retry works', async () => {
    const { digest } = layerOf(small);
    up.faults = { corruptBlob: true };
    const results = await Promise.all(Array.from({ length: 3 }, () => pull(`${m.url}/v2/library/small/blobs/${digest}`)));
    for (const r of results) assert.ok(!(r.status === 200 && r.complete), 'a corrupt body must never complete');
    await settled(m);
    assert.ok(!existsSync(publishedPath(m, digest)));
    assert.deepEqual(await readdir(join(m.dataDir, 'tmp')), []);
    up.faults = {};
    // The mismatch is remembered for a minute (no upstream GET meanwhile); then it is fetched again.
    skew += 5 * 60_000;
    const ok = await pull(`${m.url}/v2/library/small/blobs/${digest}`);
    assert.equal(ok.status, 200);
    assert.equal(sha256(ok.body), digest);
  });

  test('upstream cuts a blob and resuming cannot finish it: no client completes, nothing is published', async () => {
    const { digest } = layerOf(other);
    up.faults = { cutBlobAfter: 1 * MB };
    const results = await Promise.all(Array.from({ length: 3 }, () => pull(`${m.url}/v2/library/other/blobs/${digest}`)));
    for (const r of results) assert.ok(!(r.status === 200 && r.complete), 'a cut body must never complete');
    await settled(m);
    assert.ok(!existsSync(publishedPath(m, digest)));
    assert.deepEqual(await readdir(join(m.dataDir, 'tmp')), []);
    up.faults = {};
    const ok = await pull(`${m.url}/v2/library/other/blobs/${digest}`);
    assert.equal(sha256(ok.body), digest);
  });

  test('a cut body is resumed with Range from the last byte received', async () => {
    const img = largeBlobImage('library/resume', '1', 5 * MB, 'resume');
    up.addImage(img);
    const { digest } = layerOf(img);
    up.faults = { cutBlobAfter: 3 * MB };
    up.resetCounters();
    const r = await pull(`${m.url}/v2/library/resume/blobs/${digest}`);
    up.faults = {};
    assert.equal(r.status, 200);
    assert.ok(r.complete);
    assert.equal(sha256(r.body), digest);
    assert.equal(up.counters.blobGet, 2, 'one GET, one resume');
  });

  test('Range on a miss answers 206 with the right bytes; past the end answers 416', async () => {
    const img = largeBlobImage('library/ranged', '1', 2 * MB, 'ranged');
    up.addImage(img);
    const { digest, bytes } = layerOf(img);
    const r = await pull(`${m.url}/v2/library/ranged/blobs/${digest}`, { range: 'bytes=1000-1999' });
    assert.equal(r.status, 206);
    assert.deepEqual(r.body, bytes.subarray(1000, 2000));
    await settled(m);
    const tail = await get(`${m.url}/v2/library/ranged/blobs/${digest}`, { headers: { range: 'bytes=-10' } });
    assert.equal(tail.status, 206);
    assert.equal(tail.headers['content-range'], `bytes ${bytes.length - 10}-${bytes.length - 1}/${bytes.length}`);
    assert.deepEqual(tail.body, bytes.subarray(bytes.length - 10));
    const bad = await get(`${m.url}/v2/library/ranged/blobs/${digest}`, { headers: { range: `bytes=${bytes.length}-` } });
    assert.equal(bad.status, 416);
    assert.equal(bad.headers['content-range'], `bytes */${bytes.length}`);
  });

  test('a client joining a download half-way reads the written part from the file, then keeps up from memory', async () => {
    const img = largeBlobImage('library/join', '1', 12 * MB, 'join');
    up.addImage(img);
    const { digest } = layerOf(img);
    up.faults = { blobBytesPerSecond: 24 * MB };
    up.resetCounters();
    const url = `${m.url}/v2/library/join/blobs/${digest}`;
    const first = pull(url);
    const deadline = Date.now() + 10_000;
    while ((m.blobs.progress(parseDigest(digest)) ?? 0) < 5 * MB && Date.now() < deadline) await new Promise((r) => setTimeout(r, 10));
    assert.ok((m.blobs.progress(parseDigest(digest)) ?? 0) >= 5 * MB, 'the download is well under way');
    const [a, b, tail] = await Promise.all([first, pull(url), pull(url, { range: `bytes=${7 * MB}-` })]);
    up.faults = {};
    for (const r of [a, b]) {
      assert.ok(r.complete);
      assert.equal(sha256(r.body), digest);
    }
    assert.equal(tail.status, 206);
    assert.ok(tail.body.equals(img.blobs.get(digest)!.subarray(7 * MB)));
    assert.equal(up.counters.blobGetByDigest.get(digest), 1);
  });

  test('the download outlives the only client, which aborted mid-blob', async () => {
    const img = largeBlobImage('library/abort', '1', 8 * MB, 'abort');
    up.addImage(img);
    const { digest } = layerOf(img);
    up.faults = { blobBytesPerSecond: 16 * MB };
    const ac = new AbortController();
    const res = await request(`${m.url}/v2/library/abort/blobs/${digest}`, { signal: ac.signal });
    for await (const _ of res.body) {
      ac.abort();
      break;
    }
    await settled(m);
    up.faults = {};
    assert.ok(existsSync(publishedPath(m, digest)), 'the blob is published although its client left');
    up.resetCounters();
    const r = await pull(`${m.url}/v2/library/abort/blobs/${digest}`);
    assert.equal(sha256(r.body), digest);
    assert.equal(up.counters.total, 0);
  });

  test('a cached blob is served to another repository only after the upstream confirms it holds it', async () => {
    const { digest } = layerOf(small);
    up.resetCounters();
    const denied = await get(`${m.url}/v2/library/big/blobs/${digest}`);
    assert.equal(denied.status, 404);
    assert.equal(errorCode(denied), 'BLOB_UNKNOWN');
    assert.equal(up.counters.blobHead, 1);
    assert.equal(up.counters.blobGet, 0);
  });

  test('a cached blob named by a manifest fetched through another repository is served there with no upstream HEAD', async () => {
    const [first, second] = ['library/base-a', 'library/base-b'].map((name) => largeBlobImage(name, '1', 1 * MB, 'shared-base'));
    const { digest, bytes } = layerOf(first);
    // Same layer, but named as living elsewhere: such a manifest vouches for nothing.
    const doc = JSON.parse(first.root.bytes.toString()) as { layers: Array<Record<string, unknown>> };
    doc.layers[0] = { ...doc.layers[0], mediaType: 'application/vnd.oci.image.layer.nondistributable.v1.tar', urls: ['https://example.invalid/layer'] };
    const foreignBytes = Buffer.from(JSON.stringify(doc));
    const foreign = { name: 'library/base-f', tag: '1', root: { digest: sha256(foreignBytes), mediaType: first.root.mediaType, bytes: foreignBytes }, manifests: new Map(), blobs: new Map([[digest, bytes]]) };
    foreign.manifests.set(foreign.root.digest, foreign.root);
    for (const img of [first, second, foreign]) up.addImage(img);
    const accept = { accept: first.root.mediaType };
    assert.equal((await get(`${m.url}/v2/library/base-a/manifests/1`, { headers: accept })).status, 200);
    assert.equal(sha256((await pull(`${m.url}/v2/library/base-a/blobs/${digest}`)).body), digest);
    await settled(m);

    up.resetCounters();
    assert.equal((await get(`${m.url}/v2/library/base-b/manifests/1`, { headers: accept })).status, 200);
    assert.equal(sha256((await pull(`${m.url}/v2/library/base-b/blobs/${digest}`)).body), digest);
    assert.equal(up.counters.manifestGet, 1);
    assert.equal(up.counters.blobHead + up.counters.blobGet, 0, 'the manifest from base-b vouched for its layer');

    up.resetCounters();
    assert.equal((await get(`${m.url}/v2/library/base-f/manifests/1`, { headers: accept })).status, 200);
    assert.equal(sha256((await pull(`${m.url}/v2/library/base-f/blobs/${digest}`)).body), digest);
    assert.equal(up.counters.blobHead, 1, 'a layer named with urls is checked with the upstream first');
  });

  test('13.5 an index carrying a layers array does not link those blobs to its repository', async () => {
    const source = largeBlobImage('library/vouch-src', '1', 1 * MB, 'vouch-src');
    const { digest, bytes } = layerOf(source);
    up.addImage(source);
    assert.equal(sha256((await pull(`${m.url}/v2/library/vouch-src/blobs/${digest}`)).body), digest);
    await settled(m);
    // What distribution refuses since CVE-2021-41190 and a hostile upstream can still serve.
    const doc = JSON.parse(source.root.bytes.toString()) as { layers: unknown[]; config: unknown };
    const crafted = Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [], layers: doc.layers, config: doc.config }));
    const index = { digest: sha256(crafted), mediaType: MediaTypes.ociIndex, bytes: crafted };
    up.addImage({ name: 'library/vouch-evil', tag: '1', root: index, manifests: new Map([[index.digest, index]]), blobs: new Map() });

    up.resetCounters();
    const got = await get(`${m.url}/v2/library/vouch-evil/manifests/1`, { headers: { accept: MediaTypes.ociIndex } });
    assert.equal(got.status, 200);
    assert.equal(got.headers['docker-content-digest'], index.digest);
    const head = await get(`${m.url}/v2/library/vouch-evil/blobs/${digest}`, { method: 'HEAD' });
    const blob = await get(`${m.url}/v2/library/vouch-evil/blobs/${digest}`);
    assert.equal(head.status, 404, 'the upstream does not hold the blob in that repository');
    assert.equal(blob.status, 404);
    assert.equal(errorCode(blob), 'BLOB_UNKNOWN');
    assert.equal(up.counters.blobHead, 2, 'each answer was checked with the upstream');
    assert.equal(up.counters.blobGet, 0);
    // The repository that really holds it is served from the store as before.
    up.resetCounters();
    assert.deepEqual((await pull(`${m.url}/v2/library/vouch-src/blobs/${digest}`)).body, bytes);
    assert.equal(up.counters.total, 0);
  });

  test('invalid digests are refused before any I/O', async () => {
    up.resetCounters();
    for (const d of ['sha256:abc', 'sha256:' + 'A'.repeat(64), 'md5:' + 'a'.repeat(32), 'notadigest']) {
      const r = await get(`${m.url}/v2/library/big/blobs/${d}`);
      assert.equal(r.status, 400, d);
      assert.equal(errorCode(r), 'DIGEST_INVALID', d);
    }
    assert.equal(up.counters.total, 0);
  });
});

test('temp files left by a crash are removed at start-up', async () => {
  const first = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }] });
  const { dataDir } = first;
  await first.close();
  await writeFile(join(dataDir, 'tmp', 'leftover'), 'partial');
  const second = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }], dataDir });
  try {
    assert.deepEqual(await readdir(join(dataDir, 'tmp')), []);
  } finally {
    await second.stop();
    const { rm } = await import('node:fs/promises');
    await rm(dataDir, { recursive: true, force: true });
  }
});
