// The off-thread hash: what the worker computes from a growing file plus an in-memory
// tail must equal sha256 of those bytes, mismatches must be reported as such, and a
// worker retired after idling must be replaced transparently.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { appendFile, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { DigestMismatch, SizeMismatch } from '../src/errors.js';
import { parseDigest, type Digest } from '../src/oci/digest.js';
import { OffThreadHash } from '../src/store/content-hash.js';
import { hashThread } from '../src/store/hash-worker.js';

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-hash-'));
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

const sha = (...parts: Buffer[]) => parseDigest(`sha256:${createHash('sha256').update(Buffer.concat(parts)).digest('hex')}`);
const bytes = (n: number, seed: number) => Buffer.from(Array.from({ length: n }, (_, i) => (i * 31 + seed) & 0xff));

/** Creates the file, then the hash (as Spool.create does), then writes `parts` one by one, telling the hash after each. */
async function grow(path: string, expected: Digest, size: number, parts: Buffer[]): Promise<OffThreadHash> {
  await writeFile(path, '');
  const hash = new OffThreadHash(path, expected, size);
  let end = 0;
  for (const p of parts) {
    await appendFile(path, p);
    end += p.length;
    hash.written([p], p.length, end);
  }
  return hash;
}

test('a file hashed as it grows, then an in-memory tail: the digest of all of it', async () => {
  const parts = [bytes(3 << 20, 1), bytes(100_000, 2), bytes(2 << 20, 3)];
  const tail = [bytes(70_000, 4), bytes(5, 5)];
  const path = join(dir, 'grow');
  const size = [...parts, ...tail].reduce((n, b) => n + b.length, 0);
  const hash = await grow(path, sha(...parts, ...tail), size, parts);
  for (const t of tail) hash.tail(t);
  await hash.verify();
});

test('wrong content is a DigestMismatch, a short file a SizeMismatch', async () => {
  const good = bytes(5 << 20, 7);
  const path = join(dir, 'bad');
  const wrong = await grow(path, sha(bytes(5 << 20, 8)), good.length, [good]);
  await assert.rejects(wrong.verify(), DigestMismatch);
  const short = await grow(path, sha(good), good.length + 1, [good]);
  await assert.rejects(short.verify(), SizeMismatch);
});

test('after the idle worker has exited, the next hash starts a new one', async () => {
  const path = join(dir, 'again');
  const first = bytes(1 << 20, 9);
  await (await grow(path, sha(first), first.length, [first])).verify();
  const idle = hashThread();
  assert.ok(idle, 'the worker lingers after its job');
  // The thread and its linger timer hold no event loop open; this deadline does, and fails the test if the exit never comes.
  let deadline: NodeJS.Timeout | undefined;
  await Promise.race([idle.exited, new Promise((_, reject) => (deadline = setTimeout(() => reject(new Error('the idle worker did not exit')), 10_000)))]);
  clearTimeout(deadline);
  assert.equal(hashThread(), undefined, 'the idle worker has exited');
  const second = bytes(2 << 20, 10);
  await (await grow(path, sha(second), second.length, [second])).verify();
  const next = hashThread();
  assert.ok(next, 'a new worker hashed the second file');
  assert.notEqual(next.threadId, idle.threadId);
});
