// FileRangeSource on plain descriptors: a source closed at any moment (the client gone
// mid-read) leaves no descriptor open, and a read never lands on another file that took
// the closed descriptor's number.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { FileRangeSource } from '../src/store/body-source.js';
import { bytesOf } from './contracts/blob-store.contract.js';

const openFds = async () => (await readdir('/proc/self/fd')).length;

test('sources closed while their reads are in flight close every descriptor, and no read returns another file\'s bytes', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-source-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const files = await Promise.all(
    Array.from({ length: 64 }, async (_, i) => {
      const bytes = bytesOf(`file ${i}`, 64 * 1024);
      const path = join(dir, `f${i}`);
      await writeFile(path, bytes);
      return { path, bytes };
    }),
  );
  const before = await openFds();
  for (let round = 0; round < 20; round++) {
    await Promise.all(
      files.map(async ({ path, bytes }, i) => {
        const source = new FileRangeSource(path, bytes.length);
        const buf = Buffer.alloc(bytes.length);
        const read = source.readInto(buf).then(
          (n) => ({ n }),
          (err: Error) => ({ err }),
        );
        // Close at once, after the open, or after the read, by turns.
        if (i % 3 === 1) await new Promise((r) => setImmediate(r));
        if (i % 3 === 2) await read;
        await source.close();
        const got = await read;
        if ('n' in got) assert.ok(buf.subarray(0, got.n).equals(bytes.subarray(0, got.n)), `${path}: its own bytes`);
        else assert.match(got.err.message, /read after close/);
      }),
    );
  }
  assert.equal(await openFds(), before, 'every descriptor closed');
});

test('a range is read across several reads, and a file shorter than its size fails the read', async (t) => {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-source-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const bytes = bytesOf('ranged', 10_000);
  const path = join(dir, 'blob');
  await writeFile(path, bytes);
  const source = new FileRangeSource(path, bytes.length, { start: 100, end: 9_099 });
  const parts: Buffer[] = [];
  for (;;) {
    const buf = Buffer.alloc(4096);
    const n = await source.readInto(buf);
    if (n === 0) break;
    parts.push(buf.subarray(0, n));
  }
  await source.close();
  assert.ok(Buffer.concat(parts).equals(bytes.subarray(100, 9_100)));
  const short = new FileRangeSource(path, bytes.length + 10);
  await short.readInto(Buffer.alloc(bytes.length));
  await assert.rejects(short.readInto(Buffer.alloc(10)), /ends at 10000, expected 10010 bytes/);
  await short.close();
});
