// After an upstream failure the mirror backs off, but lets one request at a time probe the
// upstream, so the first success after an outage ends the backoff for everyone.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, startMirror, until } from './helpers.js';

test('13.14 once the upstream is back, the first request through ends the failure backoff; meanwhile one probe at a time goes upstream', async (t) => {
  const up = await FakeUpstream.start({ auth: 'none' });
  const images = await Promise.all(['a', 'b', 'c', 'd'].map((n) => singleImage({ name: `library/${n}`, tag: '1', seed: `outage-${n}` })));
  for (const img of images) up.addImage(img);
  // The default backoff (10 s) is far longer than this test may take.
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, failureBackoffMs: 10_000 }], defaultUpstream: 'docker.io' });
  t.after(async () => {
    await m.stop();
    await up.close();
  });
  const manifest = (name: string) => get(`${m.url}/v2/library/${name}/manifests/1`);

  up.faults.refuse = true;
  const down = await manifest('a');
  assert.equal(down.status, 502);
  assert.equal(errorCode(down), 'UNAVAILABLE');

  // The upstream is back but slow: the first miss probes it, a second one meanwhile fails at once.
  up.faults = { latencyMs: 1500 };
  up.resetCounters();
  const probe = manifest('b');
  await until('the probe to reach the upstream', () => up.counters.total === 1);
  const started = Date.now();
  const meanwhile = await manifest('c');
  assert.equal(meanwhile.status, 502, 'while a probe is in flight the others are not sent');
  assert.ok(Date.now() - started < 1000, 'and they fail at once');
  assert.equal(up.counters.total, 1);
  assert.equal((await probe).status, 200);

  // The probe's success ended the backoff: misses go upstream again at once.
  up.faults = {};
  const after = await manifest('d');
  assert.equal(after.status, 200);
  assert.deepEqual(after.body, images[3].root.bytes);
  assert.equal((await manifest('c')).status, 200);
});
