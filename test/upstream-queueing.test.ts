// Long blob downloads hold an upstream slot for their whole body; manifest, HEAD and token
// requests must not queue behind them, and must not queue without a deadline either.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, sha256, startMirror, until } from './helpers.js';

test('13.10 a stale tag is revalidated while a long blob download holds every blob slot', async (t) => {
  const big = await singleImage({ name: 'library/big', tag: 'v1', seed: 'queue-big', layerSizes: [1024 * 1024] });
  const small = await singleImage({ name: 'library/small', tag: 'v1', seed: 'queue-small' });
  const up = await FakeUpstream.start();
  up.addImage(big);
  up.addImage(small);
  let clock = 1_000_000;
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, concurrency: 1, tagTtlMs: 60_000 }], defaultUpstream: 'docker.io', now: () => clock });
  t.after(async () => {
    await m.stop();
    await up.close();
  });
  assert.equal((await get(`${m.url}/v2/library/small/manifests/v1`)).status, 200);

  // About 5 s for the layer: the single slot stays taken meanwhile.
  up.faults = { blobBytesPerSecond: 200 * 1024 };
  const layer = [...big.blobs.entries()].sort((a, b) => b[1].length - a[1].length)[0][0];
  let downloaded = false;
  const download = get(`${m.url}/v2/library/big/blobs/${layer}`, { timeoutMs: 30_000 }).then((r) => {
    downloaded = true;
    return r;
  });
  await until('the layer download to start', () => up.counters.cdnGet === 1);

  clock += 120_000;
  up.resetCounters();
  const started = Date.now();
  const r = await get(`${m.url}/v2/library/small/manifests/v1`, { timeoutMs: 30_000 });
  const took = Date.now() - started;
  assert.equal(r.status, 200);
  assert.ok(took < 2500, `answered after ${took} ms, not after the layer's 5 s`);
  assert.equal(r.headers.warning, undefined, 'revalidated, not served stale');
  assert.equal(up.counters.manifestHead, 1);
  assert.equal(downloaded, false, 'answered while the layer was still downloading');
  assert.equal(sha256((await download).body), layer);
});

test('13.10 a request that waits too long for an upstream slot is served from the cache, stale if need be', async (t) => {
  const [slow, cached] = await Promise.all(['slow', 'cached'].map((n) => singleImage({ name: `library/${n}`, tag: 'v1', seed: `queue-${n}` })));
  const up = await FakeUpstream.start({ auth: 'none' });
  up.addImage(slow);
  up.addImage(cached);
  let clock = 1_000_000;
  // One slot for small requests, and timeouts.connect as the deadline for getting it.
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, concurrency: 1, tagTtlMs: 60_000, connectTimeoutMs: 300, headersTimeoutMs: 10_000 }], defaultUpstream: 'docker.io', now: () => clock });
  t.after(async () => {
    await m.stop();
    await up.close();
  });
  assert.equal((await get(`${m.url}/v2/library/cached/manifests/v1`)).status, 200);

  up.faults = { latencyMs: 3000 };
  up.resetCounters();
  const miss = get(`${m.url}/v2/library/slow/manifests/v1`, { timeoutMs: 30_000 });
  await until('the miss to reach the upstream', () => up.counters.total === 1);
  clock += 120_000;
  const started = Date.now();
  const stale = await get(`${m.url}/v2/library/cached/manifests/v1`, { timeoutMs: 30_000 });
  const took = Date.now() - started;
  assert.equal(stale.status, 200);
  assert.equal(stale.headers.warning, '110 regmirror "Response is Stale"');
  assert.deepEqual(stale.body, cached.root.bytes);
  assert.ok(took < 2000, `served after ${took} ms, not after the slot came free`);
  assert.equal(up.counters.total, 1, 'the queued revalidation never went upstream');
  assert.equal((await miss).status, 200);
});
