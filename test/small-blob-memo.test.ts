// SmallBlobMemo over a real FsBlobStore: the ContentStore contract still holds through it,
// small blobs are served from memory after a stat, and nothing the file system says
// (a blob gone, a blob changed) is ever hidden by what memory holds.
import assert from 'node:assert/strict';
import { mkdtemp, rm, stat, unlink, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { BlobGone, RangeNotSatisfiable } from '../src/errors.js';
import { blobsDir, spoolDir } from '../src/store/data-dir.js';
import { FsBlobStore } from '../src/store/fs/fs-blob-store.js';
import { ADMIT_AFTER_READS, SMALL_BLOB_BYTES, SMALL_BLOB_STAT_MS, SmallBlobMemo } from '../src/store/small-blob-memo.js';
import { Spool } from '../src/store/spool.js';
import { bytesOf, contentStoreContract, digestOf, drain } from './contracts/blob-store.contract.js';

/** The memo's clock, moved by hand: a held blob's stat answers for SMALL_BLOB_STAT_MS. */
const clock = { ms: 0 };

async function makeStores(maxBytes?: number) {
  const dataDir = await mkdtemp(join(tmpdir(), 'regmirror-memo-'));
  const spool = new Spool(spoolDir(dataDir));
  await spool.init();
  const fs = new FsBlobStore(blobsDir(dataDir), spoolDir(dataDir), spool);
  await fs.init();
  return { fs, store: new SmallBlobMemo(fs, maxBytes, () => clock.ms), spool, cleanup: () => rm(dataDir, { recursive: true, force: true }) };
}

contentStoreContract('SmallBlobMemo over FsBlobStore', makeStores);

/** Rewrites the file behind the store with other bytes of the same size, keeping its mtime: only a read of the file can tell. */
async function swapKeepingVersion(path: string, bytes: Buffer): Promise<void> {
  const before = await stat(path);
  await writeFile(path, bytes);
  await utimes(path, before.atime, before.mtime);
}

/** What a hit does: stat, then the body. */
async function hit(store: SmallBlobMemo, d: ReturnType<typeof digestOf>): Promise<Buffer> {
  const st = await store.stat(d);
  assert.ok(st, 'the blob is there');
  return drain(store.source(d, st.size));
}

async function setup(t: TestContext, maxBytes?: number) {
  const s = await makeStores(maxBytes);
  t.after(s.cleanup);
  return s;
}

test('a small blob is read from the file once, then from memory, whole and in ranges', async (t) => {
  const { fs, store } = await setup(t);
  const bytes = bytesOf('config', 3000);
  const d = digestOf(bytes);
  await store.put(d, bytes);
  assert.ok((await hit(store, d)).equals(bytes));
  await swapKeepingVersion(fs.pathFor(d), bytesOf('other', 3000));
  assert.ok((await hit(store, d)).equals(bytes), 'the second hit does not read the file');
  assert.ok((await drain(store.source(d, 3000, { start: 10, end: 19 }))).equals(bytes.subarray(10, 20)));
  assert.throws(() => store.source(d, 3000, { start: 0, end: 3000 }), RangeNotSatisfiable);
});

test('a blob removed behind the memo (another process, an operator) is served from memory for a second at most, then its stat says so and a source fails', async (t) => {
  const { fs, store } = await setup(t);
  const bytes = bytesOf('gone', 2000);
  const d = digestOf(bytes);
  await store.put(d, bytes);
  await hit(store, d);
  await unlink(fs.pathFor(d));
  clock.ms += SMALL_BLOB_STAT_MS - 1;
  assert.ok((await hit(store, d)).equals(bytes), 'the last stat still answers, with the bytes read at its version');
  clock.ms += 1;
  assert.equal(await store.stat(d), undefined);
  await assert.rejects(drain(store.source(d, 2000)), BlobGone);
});

test('a blob whose file changed (a new version) is read from the file again', async (t) => {
  const { fs, store } = await setup(t);
  const bytes = bytesOf('changed', 2000);
  const d = digestOf(bytes);
  await store.put(d, bytes);
  await hit(store, d);
  const other = bytesOf('tampered', 2000);
  await writeFile(fs.pathFor(d), other);
  const later = new Date(Date.now() + 5000);
  await utimes(fs.pathFor(d), later, later);
  assert.ok((await hit(store, d)).equals(bytes), 'within the second, what was read at the version last seen');
  clock.ms += SMALL_BLOB_STAT_MS;
  assert.ok((await hit(store, d)).equals(other), 'what the file holds now, which the cache layer above then judges');
});

test('removing or committing again through the memo drops what it held', async (t) => {
  const { fs, store } = await setup(t);
  const bytes = bytesOf('again', 1500);
  const d = digestOf(bytes);
  await store.put(d, bytes);
  await hit(store, d);
  await store.remove(d);
  await assert.rejects(drain(store.source(d, 1500)), BlobGone);
  await store.put(d, bytes);
  await hit(store, d);
  await store.put(d, bytes); // a re-publish may leave the version as it was: memory is dropped all the same
  await swapKeepingVersion(fs.pathFor(d), bytesOf('swapped', 1500));
  assert.ok((await hit(store, d)).equals(bytesOf('swapped', 1500)));
});

test(`blobs over ${SMALL_BLOB_BYTES / 1024} KiB are never kept; the memo is bounded by bytes`, async (t) => {
  const { fs, store } = await setup(t, 16 * 1024);
  const big = bytesOf('big', SMALL_BLOB_BYTES + 1);
  const bd = digestOf(big);
  await store.put(bd, big);
  await hit(store, bd);
  const bigOther = bytesOf('big other', SMALL_BLOB_BYTES + 1);
  await swapKeepingVersion(fs.pathFor(bd), bigOther);
  assert.ok((await hit(store, bd)).equals(bigOther), 'read from the file every time');
  // Sixteen 4 KiB blobs through a 16 KiB memo: the first ones are no longer held.
  const small = Array.from({ length: 16 }, (_, i) => bytesOf(`small ${i}`, 4096));
  for (const b of small) {
    await store.put(digestOf(b), b);
    for (let i = 0; i < ADMIT_AFTER_READS; i++) await hit(store, digestOf(b));
  }
  await swapKeepingVersion(fs.pathFor(digestOf(small[0])), bytesOf('first swapped', 4096));
  assert.ok((await hit(store, digestOf(small[0]))).equals(bytesOf('first swapped', 4096)), 'the oldest was let go');
  await swapKeepingVersion(fs.pathFor(digestOf(small[15])), bytesOf('last swapped', 4096));
  assert.ok((await hit(store, digestOf(small[15]))).equals(small[15]), 'the newest is still held');
});

test(`once the memo is full, a blob read from the file displaces another only at its ${ADMIT_AFTER_READS}th read`, async (t) => {
  const { fs, store } = await setup(t, 16 * 1024);
  const held = Array.from({ length: 3 }, (_, i) => bytesOf(`held ${i}`, 4096));
  for (const b of held) {
    await store.put(digestOf(b), b);
    await hit(store, digestOf(b));
  }
  const late = bytesOf('late', 4096);
  const d = digestOf(late);
  await store.put(d, late);
  // Each version written behind the memo tells whether a hit read the file or memory.
  for (let read = 1; read <= ADMIT_AFTER_READS; read++) {
    const onDisk = bytesOf(`late, file at read ${read}`, 4096);
    await swapKeepingVersion(fs.pathFor(d), onDisk);
    assert.ok((await hit(store, d)).equals(onDisk), `read ${read} is from the file`);
  }
  await swapKeepingVersion(fs.pathFor(d), bytesOf('late, file after', 4096));
  assert.ok((await hit(store, d)).equals(bytesOf(`late, file at read ${ADMIT_AFTER_READS}`, 4096)), `kept at read ${ADMIT_AFTER_READS}`);
  // It took the place of the least recently used, and only that one.
  await swapKeepingVersion(fs.pathFor(digestOf(held[0])), bytesOf('held 0 swapped', 4096));
  assert.ok((await hit(store, digestOf(held[0]))).equals(bytesOf('held 0 swapped', 4096)), 'the oldest was let go');
  await swapKeepingVersion(fs.pathFor(digestOf(held[2])), bytesOf('held 2 swapped', 4096));
  assert.ok((await hit(store, digestOf(held[2]))).equals(held[2]), 'the others are still held');
});
