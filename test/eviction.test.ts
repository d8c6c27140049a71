// A size limit that holds: pulling more than fits keeps the store under its high
// watermark, keeps the most recently used image and pinned content, never removes a blob
// a slow client is reading, and an evicted image can be pulled again.
import assert from 'node:assert/strict';
import { readdir, stat } from 'node:fs/promises';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { downloadsSettled, get, sha256, startMirror, type Mirror } from './helpers.js';

const MB = 1024 * 1024;

/** Bytes of every file under blobs/: what the disk really holds. */
async function bytesOnDisk(dataDir: string): Promise<number> {
  let total = 0;
  const root = join(dataDir, 'blobs', 'sha256');
  for (const prefix of await readdir(root)) {
    for (const f of await readdir(join(root, prefix))) total += (await stat(join(root, prefix, f))).size;
  }
  return total;
}

async function pull(m: Mirror, img: FixtureImage): Promise<void> {
  assert.equal((await get(`${m.url}/v2/${img.name}/manifests/${img.tag}`)).status, 200);
  for (const [digest] of img.blobs) assert.equal(sha256((await get(`${m.url}/v2/${img.name}/blobs/${digest}`)).body), digest);
  await downloadsSettled(m);
}

async function cached(m: Mirror, img: FixtureImage): Promise<boolean> {
  for (const d of img.blobs.keys()) if ((await m.metadata.getBlob(d)) === undefined) return false;
  return true;
}

describe('eviction', () => {
  let up: FakeUpstream;
  let m: Mirror;
  const images = Array.from({ length: 10 }, (_, i) => largeBlobImage(`library/img${i}`, '1', 1 * MB, `evict-${i}`));
  const high = Math.floor(6 * MB * 0.9);

  before(async () => {
    up = await FakeUpstream.start();
    for (const img of images) up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', storage: { maxSize: 6 * MB, highWatermark: 90, lowWatermark: 60 } });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('pulling more than fits keeps the store under the high watermark; the newest image stays', async () => {
    // img0 is pinned as an imported bundle would pin it.
    await pull(m, images[0]);
    await m.metadata.setBlobPins([...images[0].blobs.keys(), images[0].root.digest], []);
    for (const img of images.slice(1)) {
      await pull(m, img);
      await m.evictor!.run();
      assert.ok((await m.metadata.storeSize()).bytes <= high, `store ${(await m.metadata.storeSize()).bytes} over ${high}`);
      assert.ok((await bytesOnDisk(m.dataDir)) <= high, 'the files agree with the rows');
      assert.ok(await cached(m, img), `${img.name}, just pulled, is still cached`);
    }
    assert.ok(await cached(m, images[0]), 'the pinned image survived');
    assert.ok(!(await cached(m, images[1])), 'the least recently used image was evicted');
  });

  test('an evicted image can be pulled again', async () => {
    up.resetCounters();
    await pull(m, images[1]);
    assert.ok(up.counters.blobGet > 0);
    assert.ok(await cached(m, images[1]));
  });
});

test('a blob a slow client is reading is not evicted under pressure', async () => {
  const up = await FakeUpstream.start();
  const slow = largeBlobImage('library/slow', '1', 64 * MB, 'evict-slow');
  const fillers = Array.from({ length: 5 }, (_, i) => largeBlobImage(`library/fill${i}`, '1', 16 * MB, `evict-fill-${i}`));
  for (const img of [slow, ...fillers]) up.addImage(img);
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', storage: { maxSize: 120 * MB, highWatermark: 90, lowWatermark: 60 } });
  try {
    await pull(m, slow);
    const [layer, bytes] = [...slow.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    // Far larger than the socket buffers: the server is still reading the file while we wait.
    const res = await request(`${m.url}/v2/${slow.name}/blobs/${layer}`);
    const iter = res.body[Symbol.asyncIterator]();
    const first = await iter.next();
    for (const img of fillers) {
      await pull(m, img);
      await m.evictor!.run();
    }
    assert.ok(await m.metadata.getBlob(layer), 'the blob being read was kept although it is the least recently used');
    const chunks = [first.value as Buffer];
    for (let r = await iter.next(); !r.done; r = await iter.next()) chunks.push(r.value as Buffer);
    assert.equal(sha256(Buffer.concat(chunks)), sha256(bytes));
    await new Promise((r) => setTimeout(r, 50));
    assert.ok(!m.blobs.inUse(layer), 'once the reader is gone the blob may be evicted like any other');
    assert.ok((await m.metadata.storeSize()).bytes <= Math.floor(120 * MB * 0.9));
  } finally {
    await m.stop();
    await up.close();
  }
});

test('a small blob answered from memory, whole, in a range or to a client that hung up, leaves no reader behind', async () => {
  const up = await FakeUpstream.start();
  const img = largeBlobImage('library/tiny', '1', 8 * 1024, 'evict-tiny');
  up.addImage(img);
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
  try {
    await pull(m, img);
    const [layer, bytes] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    const url = `${m.url}/v2/${img.name}/blobs/${layer}`;
    // The first hit reads the file and keeps it; these are answered from memory.
    for (let i = 0; i < 3; i++) assert.equal(sha256((await get(url)).body), sha256(bytes));
    const part = await get(url, { headers: { range: 'bytes=100-199' } });
    assert.equal(part.status, 206);
    assert.ok(part.body.equals(bytes.subarray(100, 200)));
    // Gone before the answer is ready: the request is sent and the socket closed at once.
    const { hostname, port, pathname } = new URL(url);
    for (let i = 0; i < 20; i++) {
      const s = connect(Number(port), hostname, () => s.end(`GET ${pathname} HTTP/1.1\r\nhost: ${hostname}\r\n\r\n`, () => s.destroy()));
      s.on('error', () => undefined);
    }
    await new Promise((r) => setTimeout(r, 100));
    assert.ok(!m.blobs.inUse(layer), 'every answer released the blob');
  } finally {
    await m.stop();
    await up.close();
  }
});
