// Clients that join a running download are served from the chunks it keeps in memory
// while they keep up, and from its spool file once they fall behind them. A client that
// stops reading must not hold the download back, must still get every byte right when
// it reads on, and a client that walks away, whether it was keeping up or far behind,
// leaves the download, the other clients and no open file behind.
import assert from 'node:assert/strict';
import { get as httpGet, type IncomingMessage } from 'node:http';
import { readdir, readlink } from 'node:fs/promises';
import { after, before, describe, test } from 'node:test';
import { largeBlobImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { pull, sha256, startMirror, until, type Mirror } from './helpers.js';
import { RECENT_BYTES } from '../src/cache/download.js';
import { parseDigest } from '../src/oci/digest.js';

const MB = 1024 * 1024;

function layerOf(img: FixtureImage): { digest: string; bytes: Buffer } {
  const [digest, bytes] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  return { digest, bytes };
}

/** A GET whose reader stops once it has `pauseAt` bytes, until resume() (or leave()). */
function stallingPull(url: string, pauseAt: number) {
  const chunks: Buffer[] = [];
  let received = 0;
  let res: IncomingMessage | undefined;
  let paused = false;
  const body = new Promise<Buffer>((resolve, reject) => {
    const req = httpGet(url, (r) => {
      res = r;
      r.on('data', (c: Buffer) => {
        chunks.push(c);
        received += c.length;
        if (!paused && received >= pauseAt) {
          paused = true;
          r.pause();
        }
      });
      r.on('end', () => resolve(Buffer.concat(chunks)));
      r.on('error', reject);
      r.on('aborted', () => reject(new Error('aborted')));
    });
    req.on('error', reject);
  });
  body.catch(() => undefined);
  return {
    body,
    get received() {
      return received;
    },
    get paused() {
      return paused;
    },
    resume: () => res?.resume(),
    leave: () => res?.destroy(),
  };
}

/** Descriptors this process holds on files under `dir`. */
async function openUnder(dir: string): Promise<string[]> {
  const out: string[] = [];
  for (const fd of await readdir('/proc/self/fd')) {
    const target = await readlink(`/proc/self/fd/${fd}`).catch(() => '');
    if (target.startsWith(dir + '/') && !/\.(db|db-wal|db-shm|sqlite)$/.test(target) && !target.includes('/metadata')) out.push(target);
  }
  return out;
}

describe('followers of a running download', () => {
  let up: FakeUpstream;
  let m: Mirror;

  before(async () => {
    up = await FakeUpstream.start();
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('a client that stops reading does not hold the download back, and later reads every byte right from the spool', async () => {
    // Far larger than the memory window plus what socket buffers hold, so the stalled
    // client is many MiB behind the window when the download ends.
    const size = 10 * RECENT_BYTES + 24 * MB;
    const img = largeBlobImage('library/stall', '1', size, 'stall');
    up.addImage(img);
    const { digest, bytes } = layerOf(img);
    up.faults = { blobBytesPerSecond: 96 * MB };
    up.resetCounters();
    const url = `${m.url}/v2/library/stall/blobs/${digest}`;
    try {
      const slow = stallingPull(url, 2 * MB);
      await until('the slow client is reading', () => slow.paused);
      const fast = await pull(url);
      assert.ok(fast.complete);
      assert.equal(sha256(fast.body), digest);
      await until('the download is committed', () => m.blobs.inFlight === 0);
      assert.ok(slow.received < size / 2, `the stalled client had ${slow.received} bytes when the download ended`);
      slow.resume();
      const body = await slow.body;
      assert.equal(body.length, size);
      assert.ok(body.equals(bytes), 'the stalled client got the blob byte for byte');
      assert.equal(up.counters.blobGetByDigest.get(digest), 1);
    } finally {
      up.faults = {};
    }
  });

  test('clients walking away mid-blob, one keeping up and one far behind, leave the download, the others and no open file behind', async () => {
    const size = 8 * RECENT_BYTES;
    const img = largeBlobImage('library/leave', '1', size, 'leave');
    up.addImage(img);
    const { digest } = layerOf(img);
    up.faults = { blobBytesPerSecond: 48 * MB };
    up.resetCounters();
    const url = `${m.url}/v2/library/leave/blobs/${digest}`;
    try {
      const behind = stallingPull(url, MB);
      const keeping = stallingPull(url, Infinity);
      const stays = pull(url);
      await until('the download is past the first window', () => (m.blobs.progress(parseDigest(digest)) ?? 0) >= 3 * RECENT_BYTES);
      keeping.leave();
      behind.leave();
      await assert.rejects(keeping.body);
      await assert.rejects(behind.body);
      const r = await stays;
      assert.ok(r.complete);
      assert.equal(sha256(r.body), digest);
      await until('the download is committed', () => m.blobs.inFlight === 0);
      await until('no spool or blob file left open', async () => (await openUnder(m.dataDir)).length === 0, 5_000);
      up.resetCounters();
      const again = await pull(url);
      assert.equal(sha256(again.body), digest);
      assert.equal(up.counters.total, 0, 'served from the store');
    } finally {
      up.faults = {};
    }
  });
});
