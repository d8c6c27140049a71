// The behaviour every ContentStore must have, as a reusable suite: register it with
// contentStoreContract('name', makeStore) from a *.test.ts file. It speaks only the
// interface (no paths, no files): what a backend does with its bytes is its own affair,
// and its layout is tested beside it. The spool is the local one every store takes
// verified blobs from.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { describe, test, type TestContext } from 'node:test';
import { BlobGone, DigestMismatch, RangeNotSatisfiable, SizeMismatch } from '../../src/errors.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import type { BodySource } from '../../src/store/body-source.js';
import { COMMIT_GRACE_MS, type ContentStore } from '../../src/store/content-store.js';
import type { Spool } from '../../src/store/spool.js';

export type MakeStore = () => Promise<{ store: ContentStore; spool: Spool; cleanup(): Promise<void> }>;

export function digestOf(bytes: Uint8Array): Digest {
  return parseDigest('sha256:' + createHash('sha256').update(bytes).digest('hex'));
}

/** Deterministic bytes, different for each seed. */
export function bytesOf(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  let block = Buffer.alloc(0);
  for (let off = 0, i = 0; off < length; off += block.length, i++) {
    block = createHash('sha256').update(`${seed}:${i}`).digest();
    block.copy(out, off);
  }
  return out;
}

/** Everything a source gives, read in chunks of `chunk` bytes. */
export async function drain(source: BodySource, chunk = 256 * 1024): Promise<Buffer> {
  const parts: Buffer[] = [];
  try {
    for (;;) {
      const buf = Buffer.alloc(chunk);
      const n = await source.readInto(buf);
      if (n === 0) return Buffer.concat(parts);
      parts.push(buf.subarray(0, n));
    }
  } finally {
    await source.close();
  }
}

async function listed(store: ContentStore): Promise<Digest[]> {
  const out: Digest[] = [];
  for await (const d of store.list()) out.push(d);
  return out.sort();
}

export function contentStoreContract(name: string, makeStore: MakeStore): void {
  async function setup(t: TestContext): Promise<{ store: ContentStore; spool: Spool }> {
    const { store, spool, cleanup } = await makeStore();
    t.after(cleanup);
    return { store, spool };
  }

  /** A spool file holding `bytes`, expected to be `d` of `size`. */
  async function spooled(spool: Spool, bytes: Buffer, d = digestOf(bytes), size: number | undefined = bytes.length) {
    const f = await spool.create(d, size);
    for (let off = 0; off < bytes.length; off += 100_000) await f.write(bytes.subarray(off, off + 100_000));
    return f;
  }

  /** Nothing published under `d`: stat, list, read and source all say so. */
  async function assertAbsent(store: ContentStore, d: Digest): Promise<void> {
    assert.equal(await store.stat(d), undefined, 'stat() sees no blob');
    assert.ok(!(await listed(store)).includes(d), 'list() does not name it');
    await assert.rejects(store.read(d), BlobGone);
  }

  describe(`ContentStore contract: ${name}`, () => {
    const small = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}');
    const large = bytesOf('large', 3 * 1024 * 1024 + 17); // more than one read chunk

    test('put, then stat, read and source return the bytes; put returns the version stat reports', async (t) => {
      const { store } = await setup(t);
      for (const bytes of [small, large]) {
        const d = digestOf(bytes);
        assert.equal(await store.stat(d), undefined);
        const { version } = await store.put(d, bytes);
        assert.equal(typeof version, 'string');
        assert.deepEqual(await store.stat(d), { size: bytes.length, version });
        assert.ok((await store.read(d)).equals(bytes));
        assert.ok((await drain(store.source(d, bytes.length))).equals(bytes));
      }
    });

    test('a spool written in chunks and committed: invisible before, whole after, at the version commit returns', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(large);
      const f = await spooled(spool, large);
      assert.equal(f.written, large.length);
      assert.equal(await store.stat(d), undefined, 'not visible before commit');
      const { version } = await store.commit(f);
      assert.deepEqual(await store.stat(d), { size: large.length, version });
      assert.ok((await store.read(d)).equals(large));
      await f.discard();
      assert.ok((await store.read(d)).equals(large), 'discarding a committed spool leaves the blob');
    });

    // Whether the same bytes committed again get a new version is the store's affair (a
    // file's mtime does; an object's ETag, a hash of the bytes, does not): either way the
    // cache serves the blob only while stat reports the version the last commit returned.
    test('a blob committed again is at the version that commit returns', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(small);
      await store.put(d, small);
      await store.remove(d);
      await sleep(5);
      const second = await store.commit(await spooled(spool, small));
      assert.equal((await store.stat(d))?.version, second.version);
      assert.ok((await store.read(d)).equals(small));
    });

    test('source with a range returns exactly the inclusive range', async (t) => {
      const { store } = await setup(t);
      const d = digestOf(large);
      await store.put(d, large);
      const last = large.length - 1;
      for (const [start, end] of [
        [0, 0],
        [0, 9],
        [10, 19],
        [last, last],
        [1024 * 1024 - 1, 1024 * 1024 + 1],
        [5, last],
        [0, last],
      ]) {
        const got = await drain(store.source(d, large.length, { start, end }), 64 * 1024);
        assert.ok(got.equals(large.subarray(start, end + 1)), `bytes=${start}-${end}: got ${got.length} bytes`);
      }
    });

    test('a range outside the blob is RangeNotSatisfiable', async (t) => {
      const { store } = await setup(t);
      const d = digestOf(small);
      await store.put(d, small);
      for (const range of [
        { start: small.length, end: small.length },
        { start: 0, end: small.length },
        { start: 5, end: 4 },
      ]) {
        assert.throws(() => store.source(d, small.length, range), (err: unknown) => err instanceof RangeNotSatisfiable && err.size === small.length, JSON.stringify(range));
      }
    });

    test('an empty blob', async (t) => {
      const { store } = await setup(t);
      const empty = Buffer.alloc(0);
      const d = digestOf(empty);
      await store.put(d, empty);
      assert.equal((await store.stat(d))?.size, 0);
      assert.equal((await store.read(d)).length, 0);
      assert.equal((await drain(store.source(d, 0))).length, 0);
    });

    test('commit of a spool with the wrong bytes throws DigestMismatch and publishes nothing', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(large);
      const wrong = Buffer.from(large);
      wrong[wrong.length - 1] ^= 0xff;
      await assert.rejects(store.commit(await spooled(spool, wrong, d)), (err: unknown) => err instanceof DigestMismatch && err.expected === d && err.actual === digestOf(wrong));
      await assertAbsent(store, d);
      await assert.rejects(store.commitAndHold(await spooled(spool, wrong, d)), DigestMismatch);
      await assertAbsent(store, d);
    });

    test('commit of a spool with the wrong size throws SizeMismatch and publishes nothing', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(small);
      await assert.rejects(store.commit(await spooled(spool, small, d, small.length + 1)), (err: unknown) => err instanceof SizeMismatch && err.expected === small.length + 1 && err.actual === small.length);
      await assertAbsent(store, d);
      await assert.rejects(store.commit(await spooled(spool, Buffer.concat([small, Buffer.from('x')]), d, small.length)), SizeMismatch);
      await assertAbsent(store, d);
    });

    test('put with the wrong bytes throws DigestMismatch and publishes nothing', async (t) => {
      const { store } = await setup(t);
      const d = digestOf(small);
      await assert.rejects(store.put(d, Buffer.from(small.toString().toUpperCase())), DigestMismatch);
      await assertAbsent(store, d);
    });

    test('a failed commit leaves an already published copy intact', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(small);
      const { version } = await store.put(d, small);
      await assert.rejects(store.commit(await spooled(spool, Buffer.alloc(small.length, 0x20), d)), DigestMismatch);
      assert.ok((await store.read(d)).equals(small));
      assert.equal((await store.stat(d))?.version, version);
    });

    test('concurrent commits of one digest from several spools are safe', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(large);
      const files = await Promise.all(Array.from({ length: 6 }, () => spool.create(d, large.length)));
      // Interleave the writes so every spool is half written while the others progress.
      const half = Math.floor(large.length / 2);
      await Promise.all(files.map((f) => f.write(large.subarray(0, half))));
      await Promise.all(files.map((f) => f.write(large.subarray(half))));
      const results = await Promise.allSettled(files.map((f) => store.commit(f)));
      assert.deepEqual(
        results.map((r) => r.status),
        files.map(() => 'fulfilled'),
      );
      assert.equal((await store.stat(d))?.size, large.length);
      assert.ok((await store.read(d)).equals(large));
      await Promise.all(files.map((f) => f.discard()));
    });

    test('putting the same blob twice keeps it', async (t) => {
      const { store } = await setup(t);
      const d = digestOf(small);
      await Promise.all([store.put(d, small), store.put(d, small)]);
      await store.put(d, small);
      assert.ok((await store.read(d)).equals(small));
    });

    test('remove deletes a blob, read and source then say BlobGone; removing an absent one is fine', async (t) => {
      const { store } = await setup(t);
      const a = digestOf(small);
      const b = digestOf(large);
      await store.put(a, small);
      await store.put(b, large);
      const opened = store.source(a, small.length);
      await store.remove(a);
      await assertAbsent(store, a);
      await assert.rejects(store.read(a), { code: 'BLOB_GONE' });
      await assert.rejects(drain(opened), BlobGone, 'a source not yet read finds the blob gone');
      await assert.rejects(drain(store.source(a, small.length)), BlobGone);
      assert.ok((await store.read(b)).equals(large), 'other blobs are untouched');
      await store.remove(a);
    });

    test('list names every published blob once', async (t) => {
      const { store } = await setup(t);
      assert.deepEqual(await listed(store), []);
      const blobs = [small, large, Buffer.from('a third')];
      for (const b of blobs) await store.put(digestOf(b), b);
      assert.deepEqual(await listed(store), blobs.map(digestOf).sort());
      await store.remove(digestOf(large));
      assert.deepEqual(await listed(store), [small, Buffer.from('a third')].map(digestOf).sort());
    });

    test('present names the published blobs of a batch, and no others', async (t) => {
      const { store } = await setup(t);
      const third = Buffer.from('a third');
      for (const b of [small, large, third]) await store.put(digestOf(b), b);
      await store.remove(digestOf(large));
      const never = digestOf(Buffer.from('never published'));
      const got = await store.present([digestOf(small), digestOf(large), never, digestOf(third)]);
      assert.deepEqual([...got].sort(), [digestOf(small), digestOf(third)].sort());
      assert.deepEqual([...(await store.present([]))], []);
    });

    test('a spool is readable while it is being written, at any offset up to what is written', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(large);
      const f = await spool.create(d, large.length);
      const r = f.reader();
      const buf = Buffer.alloc(large.length);
      await f.write(large.subarray(0, 1000));
      assert.equal(await r.read(buf, 1000, 0), 1000);
      assert.ok(buf.subarray(0, 1000).equals(large.subarray(0, 1000)));
      assert.equal(await r.read(buf, 10, 1000), 0, 'nothing beyond what is written');
      await f.append([large.subarray(1000, 5000), large.subarray(5000)]);
      assert.equal(await r.read(buf.subarray(500), 2000, 500), 2000);
      assert.ok(buf.subarray(500, 2500).equals(large.subarray(500, 2500)));
      await r.close();
      await store.commit(f);
      await f.discard();
    });

    test('commit while readers are mid-way: they finish with the right bytes, and so does one opened after', async (t) => {
      const { store, spool } = await setup(t);
      const d = digestOf(large);
      const f = await spooled(spool, large, d);
      const early = f.reader();
      const buf = Buffer.alloc(large.length);
      const half = Math.floor(large.length / 2);
      let n = 0;
      while (n < half) n += await early.read(buf.subarray(n), half - n, n);
      await store.commit(f);
      const late = f.reader();
      while (n < large.length) n += await early.read(buf.subarray(n), large.length - n, n);
      assert.ok(buf.equals(large), 'the reader opened before the commit');
      const again = Buffer.alloc(large.length);
      for (let m = 0; m < large.length; ) m += await late.read(again.subarray(m), large.length - m, m);
      assert.ok(again.equals(large), 'the reader opened after the commit');
      await f.discard();
      assert.equal(await early.read(buf, 10, 0), 10, 'an open reader outlives the discard');
      await Promise.all([early.close(), late.close()]);
      assert.ok((await store.read(d)).equals(large));
    });

    test('a held blob is restored after it was removed; release is idempotent', async (t) => {
      const { store, spool } = await setup(t);
      const a = digestOf(small);
      await store.put(a, small);
      assert.equal(await store.hold(a, small.length + 1), undefined, 'not held at another size');
      assert.equal(await store.hold(digestOf(large), large.length), undefined, 'nothing to hold');
      const held = (await store.hold(a, small.length))!;
      assert.ok((await held.read()).equals(small));
      await store.remove(a);
      const { version } = await held.restore();
      assert.deepEqual(await store.stat(a), { size: small.length, version });
      assert.ok((await store.read(a)).equals(small));
      assert.equal((await held.restore()).version, version, 'restoring a blob that is there changes nothing');
      await held.release();
      await held.release();

      const b = digestOf(large);
      const committed = await store.commitAndHold(await spooled(spool, large));
      assert.equal((await store.stat(b))?.version, committed.version);
      await store.remove(b);
      await assertAbsent(store, b);
      assert.deepEqual(await store.stat(b), undefined);
      const back = await committed.held.restore();
      assert.deepEqual(await store.stat(b), { size: large.length, version: back.version });
      assert.ok((await store.read(b)).equals(large));
      await committed.held.release();
      assert.ok((await store.read(b)).equals(large), 'releasing the hold leaves the published blob');
    });

    test('a blob just committed is recent; an hour on it is not', async (t) => {
      const { store } = await setup(t);
      const d = digestOf(small);
      assert.equal(await store.recentlyCommitted(d), false, 'absent');
      await store.put(d, small);
      assert.equal(await store.recentlyCommitted(d), true);
      assert.equal(await store.recentlyCommitted(d, Date.now() + COMMIT_GRACE_MS + 1000), false);
    });

    test('capacity is undefined or a total with the free part in it; checkWritable resolves', async (t) => {
      const { store } = await setup(t);
      const c = await store.capacity();
      if (c !== undefined) {
        assert.deepEqual(Object.keys(c).sort(), ['freeBytes', 'totalBytes']);
        assert.ok(Number.isSafeInteger(c.totalBytes) && c.totalBytes > 0, `totalBytes ${c.totalBytes}`);
        assert.ok(Number.isSafeInteger(c.freeBytes) && c.freeBytes >= 0 && c.freeBytes <= c.totalBytes, `freeBytes ${c.freeBytes}`);
      }
      await store.checkWritable();
      assert.deepEqual(await listed(store), [], 'the probe is no blob');
    });
  });
}
