// An upstream that serves a blob whose bytes do not match its digest: the mismatch is
// remembered for a short while, so retrying clients (every kubelet on the node) do not
// each re-download the corrupt blob in full.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { counter, downloadsSettled, errorCode, get, pull, sha256, startMirror, until, type Mirror } from './helpers.js';



describe('digest mismatch', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let skew = 0;
  const img = largeBlobImage('library/corrupt', '1', 2 * 1024 * 1024, 'corrupt');
  const [layer] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];

  before(async () => {
    up = await FakeUpstream.start();
    up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', now: () => Date.now() + skew });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('13.12 digest mismatch is remembered briefly and counted: a retry fails at once without an upstream GET', async () => {
    up.faults = { corruptBlob: true };
    const first = await pull(`${m.url}/v2/${img.name}/blobs/${layer}`);
    assert.ok(!(first.status === 200 && first.complete), 'a corrupt body never completes');
    await downloadsSettled(m);
    assert.equal(up.counters.blobGet, 1);

    up.resetCounters();
    for (let i = 0; i < 3; i++) {
      const again = await get(`${m.url}/v2/${img.name}/blobs/${layer}`);
      assert.equal(again.status, 502);
      assert.equal(errorCode(again), 'UNAVAILABLE');
      assert.match(again.body.toString(), /did not match its digest/);
    }
    assert.equal(up.counters.blobGet, 0, 'no upstream GET while the mismatch is remembered');
    const metrics = (await get(`${m.url}/metrics`)).body.toString();
    assert.equal(counter(metrics, 'regmirror_blob_digest_mismatches_total'), 1);
    // Recorded as an event once (the refusals that follow ask no upstream and tell nothing new).
    await until('the mismatch stored as an event', async () => (await m.metadata.events.list({ kinds: ['digest_mismatch'] })).length > 0);
    const [event] = await m.metadata.events.list({ kinds: ['digest_mismatch'] });
    assert.deepEqual([event.upstream, event.repository, event.digest, event.details], ['docker.io', img.name, layer, { what: 'blob' }]);
    assert.match(event.message, /did not match/);
    assert.match(metrics, /regmirror_events_total\{kind="digest_mismatch"\} 1\b/);

    // The upstream is fixed; once the memory has passed, the next request fetches again.
    up.faults = {};
    skew += 5 * 60_000;
    const ok = await pull(`${m.url}/v2/${img.name}/blobs/${layer}`);
    assert.equal(ok.status, 200);
    assert.equal(sha256(ok.body), layer);
    assert.equal(up.counters.blobGet, 1);
  });
});
