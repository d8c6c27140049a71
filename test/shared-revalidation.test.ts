// A HEAD and a GET by tag that arrive together share one revalidation: whatever that
// revalidation found, the GET must carry the manifest's bytes.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, sha256, startMirror } from './helpers.js';

test('13.12 HEAD and GET sharing a revalidation of a stale tag: the GET carries the whole body even when the stored manifest is damaged', async (t) => {
  const img = await singleImage({ name: 'library/shared', tag: 'v1', seed: 'shared-reval' });
  const up = await FakeUpstream.start();
  up.addImage(img);
  const dataDir = await mkdtemp(join(tmpdir(), 'regmirror-test-'));
  t.after(async () => {
    await up.close();
    await rm(dataDir, { recursive: true, force: true });
  });
  let clock = 1_000_000;
  const upstreams = [{ name: 'docker.io', url: up.url, tagTtlMs: 60_000 }];
  const first = await startMirror({ upstreams, defaultUpstream: 'docker.io', dataDir, now: () => clock });
  assert.equal((await get(`${first.url}/v2/library/shared/manifests/v1`)).status, 200);
  await first.stop();

  // A fresh process (nothing in memory), a stale tag, and a stored body that no longer
  // matches its digest (bit rot, a half-restored backup).
  const hex = img.root.digest.slice('sha256:'.length);
  await writeFile(join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex), Buffer.from('{"damaged":true}'));
  clock += 120_000;
  const m = await startMirror({ upstreams, defaultUpstream: 'docker.io', dataDir, now: () => clock });
  t.after(() => m.stop());
  up.resetCounters();

  const url = `${m.url}/v2/library/shared/manifests/v1`;
  const [head, body] = await Promise.all([get(url, { method: 'HEAD' }), get(url)]);
  assert.equal(head.status, 200);
  assert.equal(head.headers['docker-content-digest'], img.root.digest);
  assert.equal(body.status, 200);
  assert.equal(body.body.length, Number(body.headers['content-length']), 'the GET carries as many bytes as its Content-Length says');
  assert.equal(sha256(body.body), body.headers['docker-content-digest']);
  assert.deepEqual(body.body, img.root.bytes);
  assert.equal(up.counters.manifestHead, 1, 'one shared revalidation');

  // The damaged copy was replaced: the next GET is served from the store.
  up.resetCounters();
  const again = await get(url);
  assert.deepEqual(again.body, img.root.bytes);
  assert.equal(up.counters.total, 0);
});
