// The batched metadata flush beside another writer: a second connection on the same
// database file (as `regmirror cache pin/rm/gc` would be) holds the write lock for longer
// than any busy timeout. The server keeps serving without stalling, says so in its log and
// /metrics, and writes the counts it kept once the lock is gone.
import assert from 'node:assert/strict';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { counter, downloadsSettled, get, type Mirror, sha256, startMirror, until } from './helpers.js';

/** The value of a counter without labels in a /metrics text, 0 when absent. */

describe('metadata flush under a held write lock', () => {
  let up: FakeUpstream;
  let m: Mirror;
  const img = largeBlobImage('library/flush', '1', 64 * 1024, 'flush');

  before(async () => {
    up = await FakeUpstream.start();
    up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('13.4 a failed metadata flush is logged, counted and retried, and the server keeps serving', async () => {
    const [layer] = [...img.blobs.keys()];
    // Cached first, so the hits below write nothing but batched counts.
    assert.equal(sha256((await get(`${m.url}/v2/${img.name}/blobs/${layer}`)).body), layer);
    await downloadsSettled(m);

    const other = new Database(join(m.dataDir, 'mirror.db'));
    const hitsNow = () => (other.prepare("SELECT coalesce(sum(value), 0) AS n FROM rollups WHERE metric = 'cache_hits'").get() as { n: number }).n;
    const before = hitsNow();
    other.exec('BEGIN IMMEDIATE');
    let released = false;
    try {
      for (let i = 0; i < 3; i++) assert.equal(sha256((await get(`${m.url}/v2/${img.name}/blobs/${layer}`)).body), layer);
      // Held across at least one timed flush (every 5 s), and longer than the 5 s busy timeout.
      await until('a flush failure in /metrics', async () => counter((await get(`${m.url}/metrics`)).body.toString(), 'regmirror_metadata_flush_failures_total') >= 1);
      // The event loop is not parked in SQLite's busy handler: small requests answer at once.
      for (let i = 0; i < 5; i++) {
        const t0 = performance.now();
        assert.equal((await get(`${m.url}/v2/`)).status, 200);
        assert.ok(performance.now() - t0 < 1000, `GET /v2/ took ${Math.round(performance.now() - t0)} ms while the lock was held`);
      }
      assert.ok(m.logs.some((l) => /metadata flush failed/.test(l) && /SQLITE_BUSY/.test(l)), 'the failure is logged with its cause');
      assert.equal(hitsNow(), before, 'nothing was written while the lock was held');
      other.exec('COMMIT');
      released = true;
      // The batch was kept, not lost: the next flush writes the three hits.
      await until('the kept hits to reach the database', () => hitsNow() >= before + 3);
      assert.equal(hitsNow(), before + 3);
      assert.equal(sha256((await get(`${m.url}/v2/${img.name}/blobs/${layer}`)).body), layer, 'still serving');
    } finally {
      if (!released) other.exec('ROLLBACK');
      other.close();
    }
  });
});
