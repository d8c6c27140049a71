// One upstream GET per blob however many clients ask at once, small blobs included: a
// download that finishes while another request for its digest is still looking it up
// (a database round trip on PostgreSQL) must be found as a hit or joined, never fetched
// again.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, sha256, startMirror, type Mirror } from './helpers.js';

const LAYERS = 48;
const CLIENTS = 12;

let up: FakeUpstream;
let m: Mirror;
let img: FixtureImage;

before(async () => {
  up = await FakeUpstream.start();
  img = await singleImage({ name: 'library/many', tag: 'v1', seed: 'coalesce', layerSizes: Array.from({ length: LAYERS }, (_, i) => 8 * 1024 + i * 512) });
  up.addImage(img);
  m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
});
after(async () => {
  await m?.stop();
  await up?.close();
});

test(`${CLIENTS} clients pulling ${LAYERS} small layers at once: one upstream GET per layer, every body whole`, async () => {
  assert.equal((await get(`${m.url}/v2/${img.name}/manifests/v1`)).status, 200);
  const digests = [...img.blobs.keys()];
  // Each client fetches 4 layers at a time, as containerd does, starting at its own place
  // in the list: requests for one digest arrive spread over the time its download takes.
  const client = async (k: number) => {
    const order = digests.map((_, i) => digests[(i + k * 4) % digests.length]);
    const got: Array<readonly [string, Awaited<ReturnType<typeof get>>]> = [];
    const worker = async () => {
      for (let d = order.shift(); d !== undefined; d = order.shift()) got.push([d, await get(`${m.url}/v2/${img.name}/blobs/${d}`)] as const);
    };
    await Promise.all([worker(), worker(), worker(), worker()]);
    return got;
  };
  const bodies = await Promise.all(Array.from({ length: CLIENTS }, (_, k) => client(k)));
  for (const client of bodies) {
    for (const [d, r] of client) {
      assert.equal(r.status, 200);
      assert.equal(sha256(r.body), d);
    }
  }
  const repeated = digests.filter((d) => (up.counters.blobGetByDigest.get(d) ?? 0) !== 1);
  assert.deepEqual(repeated.map((d) => `${d}: ${up.counters.blobGetByDigest.get(d) ?? 0} GETs`), [], 'every layer fetched exactly once');
});
