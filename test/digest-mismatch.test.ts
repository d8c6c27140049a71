// An upstream that serves a blob whose bytes do not match its digest: the mismatch is
// remembered for a short while, so retrying clients (every kubelet on the node) do not
// each re-download the corrupt blob in full.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { downloadsSettled, errorCode, get, sha256, startMirror, type Mirror } from './helpers.js';

/** Reads a whole response; `complete` is false when the transfer failed part-way. */
async function pull(url: string): Promise<{ status: number; complete: boolean; body: Buffer }> {
  const res = await request(url, { signal: AbortSignal.timeout(30_000) });
  const chunks: Buffer[] = [];
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
    return { status: res.statusCode, complete: true, body: Buffer.concat(chunks) };
  } catch {
    return { status: res.statusCode, complete: false, body: Buffer.concat(chunks) };
  }
}

function counter(text: string, name: string): number {
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(text);
  return m ? Number(m[1]) : 0;
}

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

    // The upstream is fixed; once the memory has passed, the next request fetches again.
    up.faults = {};
    skew += 5 * 60_000;
    const ok = await pull(`${m.url}/v2/${img.name}/blobs/${layer}`);
    assert.equal(ok.status, 200);
    assert.equal(sha256(ok.body), layer);
    assert.equal(up.counters.blobGet, 1);
  });
});
