// A blob stored for one repository and asked for through another is checked with an
// upstream HEAD before it is served. The evictor must not remove it while that HEAD is
// in flight, or the client gets a broken answer for a blob the mirror said it had.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { randomBytes, sha256 as fixtureSha } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { downloadsSettled, get, type Mirror, sha256, startMirror, until } from './helpers.js';
import type { Digest } from '../src/oci/digest.js';

const MB = 1024 * 1024;

describe('unlinked hit during eviction', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let a: FixtureImage;
  let b: FixtureImage;
  let layer: string;

  before(async () => {
    up = await FakeUpstream.start({ auth: 'none' });
    a = await singleImage({ name: 'library/a', tag: '1', seed: 'unlinked-a', layerSizes: [1 * MB] });
    layer = [...a.blobs].sort((x, y) => y[1].length - x[1].length)[0][0];
    // b names the same layer: the upstream holds it in both repositories.
    b = await singleImage({ name: 'library/b', tag: '1', seed: 'unlinked-b', layerSizes: [] });
    b.blobs.set(layer, a.blobs.get(layer)!);
    up.addImage(a);
    up.addImage(b);
    m = await startMirror({
      upstreams: [{ name: 'docker.io', url: up.url }],
      defaultUpstream: 'docker.io',
      storage: { maxSize: 1.6 * MB, highWatermark: 90, lowWatermark: 50 },
    });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('13.12 unlinked hit is protected from eviction while its upstream HEAD is in flight', async () => {
    assert.equal(sha256((await get(`${m.url}/v2/library/a/blobs/${layer}`)).body), layer);
    await downloadsSettled(m);
    assert.ok(await m.metadata.getBlob(layer), 'stored through library/a');
    assert.ok(!await m.metadata.isLinked('docker.io', 'library/b', layer));

    // The HEAD that checks library/b holds the layer is held up at the upstream...
    up.faults = { latencyMs: 3000 };
    up.requests.length = 0;
    const res = request(`${m.url}/v2/library/b/blobs/${layer}`, { signal: AbortSignal.timeout(30_000) });
    res.catch(() => {});
    await until('the HEAD for library/b', () => up.requests.some((r) => r.method === 'HEAD' && r.path === `/v2/library/b/blobs/${layer}`));

    // ...while the store goes over its limit (another blob recorded, as a download or an
    // import beside it would) and the evictor runs.
    const other = randomBytes(1 * MB, 'unlinked-other');
    const otherDigest = fixtureSha(other) as Digest;
    const { version } = await m.store.put(otherDigest, other);
    await m.metadata.recordBlob(otherDigest, other.length, undefined, version);
    const run = await m.evictor!.run();
    assert.ok(run.removed > 0, 'the evictor ran and removed something');

    const r = await res;
    const chunks: Buffer[] = [];
    for await (const c of r.body) chunks.push(c as Buffer);
    assert.equal(r.statusCode, 200);
    assert.equal(sha256(Buffer.concat(chunks)), layer, 'the whole blob, not a broken answer');
    up.faults = {};
  });
});
