// The behaviour every BlobStore must have, as a reusable suite: register it with
// blobStoreContract('name', makeStore) from a *.test.ts file. The store must also say where
// a digest's file would be (pathFor) so the suite can check nothing partial was published.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Readable } from 'node:stream';
import { describe, test, type TestContext } from 'node:test';
import { DigestMismatch, SizeMismatch } from '../../src/errors.js';
import { parseDigest, type Digest } from '../../src/oci/digest.js';
import type { BlobStore } from '../../src/store/blob-store.js';

export interface ContractStore extends BlobStore {
  /** Where the published file for `d` lives (whether or not it exists). */
  pathFor(d: Digest): string;
}

export type MakeStore = () => Promise<{ store: ContractStore; cleanup(): Promise<void> }>;

function digestOf(bytes: Uint8Array): Digest {
  return parseDigest('sha256:' + createHash('sha256').update(bytes).digest('hex'));
}

/** Deterministic bytes, different for each seed. */
function bytesOf(seed: string, length: number): Buffer {
  const out = Buffer.alloc(length);
  let block = Buffer.alloc(0);
  for (let off = 0, i = 0; off < length; off += block.length, i++) {
    block = createHash('sha256').update(`${seed}:${i}`).digest();
    block.copy(out, off);
  }
  return out;
}

async function drain(stream: Readable): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const c of stream) chunks.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(chunks);
}

async function filesIn(dir: string): Promise<string[]> {
  return readdir(dir).catch((err: NodeJS.ErrnoException) => {
    if (err.code === 'ENOENT') return [];
    throw err;
  });
}

export function blobStoreContract(name: string, makeStore: MakeStore): void {
  async function setup(t: TestContext): Promise<ContractStore> {
    const { store, cleanup } = await makeStore();
    t.after(cleanup);
    return store;
  }

  /** The published file is absent and the temp directory holds nothing. */
  async function assertNothingLeft(store: ContractStore, d: Digest, tmpDir: string): Promise<void> {
    assert.equal(await store.stat(d), undefined, 'stat() sees no blob');
    assert.equal(existsSync(store.pathFor(d)), false, `nothing at ${store.pathFor(d)}`);
    assert.deepEqual(await filesIn(tmpDir), [], 'nothing left in the temp directory');
  }

  describe(`BlobStore contract: ${name}`, () => {
    const small = Buffer.from('{"schemaVersion":2,"mediaType":"application/vnd.oci.image.manifest.v1+json"}');
    const large = bytesOf('large', 3 * 1024 * 1024 + 17); // more than one read chunk

    test('put, then stat, read and open return the bytes', async (t) => {
      const store = await setup(t);
      for (const bytes of [small, large]) {
        const d = digestOf(bytes);
        assert.equal(await store.stat(d), undefined);
        await store.put(d, bytes);
        assert.equal((await store.stat(d))?.size, bytes.length);
        assert.ok((await store.read(d)).equals(bytes));
        assert.ok((await drain(store.open(d))).equals(bytes));
      }
    });

    test('open with a range returns exactly the inclusive range', async (t) => {
      const store = await setup(t);
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
        const got = await drain(store.open(d, { start, end }));
        assert.ok(got.equals(large.subarray(start, end + 1)), `bytes=${start}-${end}: got ${got.length} bytes`);
      }
    });

    test('an empty blob', async (t) => {
      const store = await setup(t);
      const empty = Buffer.alloc(0);
      const d = digestOf(empty);
      await store.put(d, empty);
      assert.equal((await store.stat(d))?.size, 0);
      assert.equal((await store.read(d)).length, 0);
    });

    test('createTemp, write in chunks, publish: the blob appears and the temp file is gone', async (t) => {
      const store = await setup(t);
      const d = digestOf(large);
      const tmp = await store.createTemp(d, large.length);
      assert.equal(existsSync(tmp.path), true);
      for (let off = 0; off < large.length; off += 100_000) {
        await tmp.write(large.subarray(off, off + 100_000));
        assert.equal(tmp.written, Math.min(off + 100_000, large.length));
      }
      assert.equal(await store.stat(d), undefined, 'not visible before publish');
      await store.publish(tmp);
      assert.ok((await store.read(d)).equals(large));
      assert.equal(existsSync(tmp.path), false);
      assert.deepEqual(await filesIn(dirname(tmp.path)), []);
    });

    test('publish with the wrong bytes throws DigestMismatch and leaves nothing behind', async (t) => {
      const store = await setup(t);
      const d = digestOf(large);
      const wrong = Buffer.from(large);
      wrong[wrong.length - 1] ^= 0xff;
      const tmp = await store.createTemp(d, large.length);
      await tmp.write(wrong);
      await assert.rejects(
        store.publish(tmp),
        (err: unknown) => err instanceof DigestMismatch && err.expected === d && err.actual === digestOf(wrong),
      );
      await assertNothingLeft(store, d, dirname(tmp.path));
    });

    test('put with the wrong bytes throws DigestMismatch and leaves nothing behind', async (t) => {
      const store = await setup(t);
      const d = digestOf(small);
      const probe = await store.createTemp(d);
      const tmpDir = dirname(probe.path);
      await probe.discard();
      await assert.rejects(store.put(d, Buffer.from(small.toString().toUpperCase())), DigestMismatch);
      await assertNothingLeft(store, d, tmpDir);
    });

    test('publish with the wrong size throws SizeMismatch and leaves nothing behind', async (t) => {
      const store = await setup(t);
      const d = digestOf(small);
      const tooFew = await store.createTemp(d, small.length + 1);
      await tooFew.write(small);
      await assert.rejects(store.publish(tooFew), (err: unknown) => err instanceof SizeMismatch && err.expected === small.length + 1 && err.actual === small.length);
      await assertNothingLeft(store, d, dirname(tooFew.path));

      const tooMany = await store.createTemp(d, small.length);
      await tooMany.write(small);
      await tooMany.write(Buffer.from('x'));
      await assert.rejects(store.publish(tooMany), SizeMismatch);
      await assertNothingLeft(store, d, dirname(tooMany.path));
    });

    test('a failed publish leaves an already published copy intact', async (t) => {
      const store = await setup(t);
      const d = digestOf(small);
      await store.put(d, small);
      const bad = await store.createTemp(d, small.length);
      await bad.write(Buffer.alloc(small.length, 0x20));
      await assert.rejects(store.publish(bad), DigestMismatch);
      assert.ok((await store.read(d)).equals(small));
      assert.deepEqual(await filesIn(dirname(bad.path)), []);
    });

    test('concurrent publishes of one digest from several temps are safe', async (t) => {
      const store = await setup(t);
      const d = digestOf(large);
      const temps = await Promise.all(Array.from({ length: 6 }, () => store.createTemp(d, large.length)));
      assert.equal(new Set(temps.map((x) => x.path)).size, temps.length, 'each temp has its own file');
      // Interleave the writes so every temp is half written while the others progress.
      const half = Math.floor(large.length / 2);
      await Promise.all(temps.map((x) => x.write(large.subarray(0, half))));
      await Promise.all(temps.map((x) => x.write(large.subarray(half))));
      const results = await Promise.allSettled(temps.map((x) => store.publish(x)));
      assert.deepEqual(
        results.map((r) => r.status),
        temps.map(() => 'fulfilled'),
      );
      assert.equal((await store.stat(d))?.size, large.length);
      assert.ok((await store.read(d)).equals(large));
      assert.deepEqual(await filesIn(dirname(temps[0].path)), []);
    });

    test('putting the same blob twice keeps it', async (t) => {
      const store = await setup(t);
      const d = digestOf(small);
      await Promise.all([store.put(d, small), store.put(d, small)]);
      await store.put(d, small);
      assert.ok((await store.read(d)).equals(small));
    });

    test('remove deletes a blob; removing an absent one is fine', async (t) => {
      const store = await setup(t);
      const a = digestOf(small);
      const b = digestOf(large);
      await store.put(a, small);
      await store.put(b, large);
      await store.remove(a);
      assert.equal(await store.stat(a), undefined);
      assert.equal(existsSync(store.pathFor(a)), false);
      await assert.rejects(store.read(a), { code: 'BLOB_GONE' });
      assert.ok((await store.read(b)).equals(large), 'other blobs are untouched');
      await store.remove(a);
    });

    test('sweepTmp removes leftover temp files and nothing published', async (t) => {
      const store = await setup(t);
      const published = digestOf(small);
      await store.put(published, small);

      const d = digestOf(large);
      const leftovers = [await store.createTemp(d, large.length), await store.createTemp(d)];
      await leftovers[0].write(large.subarray(0, 1000));
      const tmpDir = dirname(leftovers[0].path);
      assert.equal((await filesIn(tmpDir)).length, 2);

      assert.equal(await store.sweepTmp(), 2);
      assert.deepEqual(await filesIn(tmpDir), []);
      assert.ok((await store.read(published)).equals(small));
      assert.equal(await store.sweepTmp(), 0);
      for (const x of leftovers) await x.discard();
    });

    test('discard deletes a temp file, and may be called twice', async (t) => {
      const store = await setup(t);
      const d = digestOf(small);
      const tmp = await store.createTemp(d, small.length);
      await tmp.write(small);
      await tmp.discard();
      await tmp.discard();
      assert.equal(existsSync(tmp.path), false);
      assert.equal(await store.stat(d), undefined);
    });
  });
}
