// The content-addressed blob store. Every path under the data dir is built here, and only
// from a parsed Digest:
//
//   <data>/blobs/sha256/ab/<hex>   published blobs and manifest bodies (never partial)
//   <data>/tmp/<pid>-<random>      downloads and imports in progress, by process; swept at
//                                  start-up unless that process is still running
//
// Bytes reach blobs/ only through publish(), which verifies size and digest, fsyncs and
// renames (or links), so a crash leaves either the whole verified file or nothing.
import { randomBytes } from 'node:crypto';
import { createReadStream, type ReadStream } from 'node:fs';
import { FileRangeSource, type BodySource } from './body-source.js';
import { link, mkdir, open, readFile, readdir, rename, rm, stat, utimes, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import { digestHex, isDigest, type Digest } from '../oci/digest.js';
import { InlineHash, OffThreadHash, type ContentHash } from './content-hash.js';
import { BlobGone, StoreFull } from '../errors.js';

/**
 * Crash tests name a point (REGMIRROR_CRASH_AT=publish:before-rename) at which the process
 * kills itself with SIGKILL, so a kill lands exactly there rather than by luck of timing.
 */
const CRASH_AT = process.env.REGMIRROR_CRASH_AT;
/**
 * Likewise, REGMIRROR_STOP_AT stops the process the first time it gets there (SIGSTOP),
 * until it gets SIGCONT: another process acts meanwhile.
 */
let stopAt = process.env.REGMIRROR_STOP_AT;
export function crashPoint(name: string): void {
  if (CRASH_AT === name) process.kill(process.pid, 'SIGKILL');
  if (stopAt === name) {
    stopAt = undefined;
    process.kill(process.pid, 'SIGSTOP');
  }
}

/** An inclusive byte range, as HTTP Range speaks of it. */
export interface ByteRange {
  start: number;
  end: number;
}

/** Read chunk for serving files: large reads cost far less per byte than 64 KiB ones. */
export const READ_CHUNK = 1024 * 1024;

/** A blob being written: bytes are hashed as they are written, and publish() checks them. */
export class TempBlob {
  readonly path: string;
  readonly expected: Digest;
  /** Hashes what is written (and, in pass-through, what follows in memory). */
  readonly hash: ContentHash;
  #fh: FileHandle;
  #written = 0;
  #closed = false;

  constructor(path: string, fh: FileHandle, expected: Digest, hash: ContentHash) {
    this.path = path;
    this.#fh = fh;
    this.expected = expected;
    this.hash = hash;
  }

  /** Bytes written so far; readers of the temp file may read up to here. */
  get written(): number {
    return this.#written;
  }

  async write(bytes: Uint8Array): Promise<void> {
    const chunk = Buffer.isBuffer(bytes) ? bytes : Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
    let off = 0;
    while (off < chunk.byteLength) {
      const { bytesWritten } = await this.#fh.write(chunk, off, chunk.byteLength - off, this.#written + off).catch(rethrowAsStoreError);
      off += bytesWritten;
    }
    this.#written += chunk.byteLength;
    this.hash.written([chunk], chunk.byteLength, this.#written);
  }

  /** Writes several chunks with one writev (far fewer syscalls than one write each), hashing what was written. */
  async append(chunks: Buffer[]): Promise<void> {
    let rest = chunks;
    let total = chunks.reduce((n, c) => n + c.length, 0);
    while (total > 0) {
      const { bytesWritten } = await this.#fh.writev(rest, this.#written).catch(rethrowAsStoreError);
      this.#written += bytesWritten;
      total -= bytesWritten;
      this.hash.written(rest, bytesWritten, this.#written);
      rest = dropBytes(rest, bytesWritten);
    }
  }

  /** Throws SizeMismatch or DigestMismatch unless every byte hashed to the expected digest. */
  verify(): Promise<void> {
    return this.hash.verify();
  }

  /**
   * Flushes and closes the file, which stays in place for publish() (that calls this too).
   * Idempotent: a writer holding many finished temps (import) closes each one early, so it
   * does not keep a descriptor open per blob until it publishes them.
   */
  async syncAndClose(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.sync();
    await this.#fh.close();
  }

  /** Closes and deletes the temp file; safe to call more than once. */
  async discard(): Promise<void> {
    this.hash.close();
    await this.#fh.close().catch(() => {});
    await rm(this.path, { force: true });
  }
}

/** The chunks after the first `n` bytes (a short writev). */
export function dropBytes(chunks: Buffer[], n: number): Buffer[] {
  const out: Buffer[] = [];
  for (const c of chunks) {
    if (n >= c.length) n -= c.length;
    else {
      out.push(n > 0 ? c.subarray(n) : c);
      n = 0;
    }
  }
  return out;
}

/**
 * A published file with no row is normally a crash's leftover, but for a while it may be
 * one another process (an import, a download) has just published and is about to record.
 * gc and the open-time integrity check leave such files alone for this long after they
 * were published.
 */
export const PUBLISH_GRACE_MS = 60 * 60_000;

export interface TempOptions {
  /** Hash in the worker thread, reading the file back: for large downloads, whose hashing would hold up the event loop. */
  hashOffThread?: boolean;
}

export interface PublishOptions {
  /**
   * Link the temp file into place instead of renaming it, so it stays in tmp/ (until
   * discarded) and the blob can be put back with relink() if another process removes it
   * before the caller has recorded it.
   */
  keepTemp?: boolean;
}

/** Where blobs live. One implementation today (FsBlobStore); tests run a contract suite on it. */
export interface BlobStore {
  stat(d: Digest): Promise<{ size: number; version: string } | undefined>;
  open(d: Digest, range?: ByteRange): ReadStream;
  source(d: Digest, size: number, range?: ByteRange): BodySource;
  read(d: Digest): Promise<Buffer>;
  createTemp(expected: Digest, expectedSize?: number, opts?: TempOptions): Promise<TempBlob>;
  publish(t: TempBlob, opts?: PublishOptions): Promise<{ version: string }>;
  put(d: Digest, bytes: Uint8Array): Promise<{ version: string }>;
  remove(d: Digest): Promise<void>;
  sweepTmp(): Promise<number>;
}

export class FsBlobStore implements BlobStore {
  readonly #blobs: string;
  readonly #tmp: string;

  constructor(dataDir: string) {
    this.#blobs = join(dataDir, 'blobs');
    this.#tmp = join(dataDir, 'tmp');
  }

  /** Creates the directories; call once before use. */
  async init(): Promise<void> {
    await mkdir(join(this.#blobs, 'sha256'), { recursive: true });
    await mkdir(this.#tmp, { recursive: true });
  }

  /** `<data>/blobs/sha256/ab/<hex>`: the only function that turns a digest into a path. */
  pathFor(d: Digest): string {
    const hex = digestHex(d);
    return join(this.#blobs, 'sha256', hex.slice(0, 2), hex);
  }

  async stat(d: Digest): Promise<{ size: number; version: string } | undefined> {
    try {
      const st = await stat(this.pathFor(d));
      return { size: st.size, version: String(st.mtimeMs) };
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
  }

  open(d: Digest, range?: ByteRange): ReadStream {
    return createReadStream(this.pathFor(d), { highWaterMark: READ_CHUNK, ...(range ? { start: range.start, end: range.end } : {}) });
  }

  /** The blob (of the size checked before serving) for the serving loop, which reads into its own buffers. */
  source(d: Digest, size: number, range?: ByteRange): BodySource {
    return new FileRangeSource(this.pathFor(d), size, range);
  }

  /** A stored blob whole (manifest bodies); BlobGone when it is not there. */
  read(d: Digest): Promise<Buffer> {
    return readFile(this.pathFor(d)).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' ? new BlobGone(d) : err;
    });
  }

  async createTemp(expected: Digest, expectedSize?: number, opts: TempOptions = {}): Promise<TempBlob> {
    const path = this.#tmpName();
    const fh = await open(path, 'wx+', 0o644).catch(rethrowAsStoreError);
    const hash = opts.hashOffThread ? new OffThreadHash(path, expected, expectedSize) : new InlineHash(expected, expectedSize);
    return new TempBlob(path, fh, expected, hash);
  }

  /** Verifies, fsyncs and renames (or links) into place; throws DigestMismatch/SizeMismatch and deletes the temp file. */
  async publish(t: TempBlob, opts: PublishOptions = {}): Promise<{ version: string }> {
    try {
      await t.verify();
      await t.syncAndClose();
      const dest = this.pathFor(t.expected);
      await mkdir(join(dest, '..'), { recursive: true });
      // A published file's mtime is when it was published (an import's temps may have been
      // written long before): what PUBLISH_GRACE_MS is measured from.
      const now = new Date();
      await utimes(t.path, now, now);
      const { mtimeMs } = await stat(t.path);
      crashPoint('publish:before-rename');
      if (opts.keepTemp) await linkInto(t.path, dest);
      else await rename(t.path, dest);
      crashPoint('publish:after-rename');
      return { version: String(mtimeMs) };
    } catch (err) {
      await t.discard();
      rethrowAsStoreError(err);
    }
  }

  /**
   * Holds a published blob of `size` bytes with a link in tmp/, so it outlives its
   * removal from blobs/ (eviction) until relink() puts it back; undefined when the store
   * has no such file. The hold is removed with release().
   */
  async hold(d: Digest, size: number): Promise<string | undefined> {
    const path = this.#tmpName();
    try {
      await link(this.pathFor(d), path);
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw err;
    }
    if ((await stat(path)).size === size) return path;
    await rm(path, { force: true });
    return undefined;
  }

  /** Puts a held (or kept) file back at `d`'s place if it is missing there; returns the published file's mtime. */
  async relink(path: string, d: Digest): Promise<{ version: string }> {
    const dest = this.pathFor(d);
    await mkdir(join(dest, '..'), { recursive: true });
    await linkInto(path, dest);
    return { version: String((await stat(dest)).mtimeMs) };
  }

  async release(path: string): Promise<void> {
    await rm(path, { force: true });
  }

  /** Published within PUBLISH_GRACE_MS (by its mtime, set at publish): maybe not yet recorded by its publisher. */
  async recentlyPublished(d: Digest, now = Date.now()): Promise<boolean> {
    const st = await stat(this.pathFor(d)).catch(() => undefined);
    return st !== undefined && now - st.mtimeMs < PUBLISH_GRACE_MS;
  }

  /** Writes a small blob (a manifest body) through the same verify-then-publish path. */
  async put(d: Digest, bytes: Uint8Array): Promise<{ version: string }> {
    const t = await this.createTemp(d, bytes.byteLength);
    try {
      await t.write(bytes);
    } catch (err) {
      await t.discard();
      throw err;
    }
    return this.publish(t);
  }

  async remove(d: Digest): Promise<void> {
    await rm(this.pathFor(d), { force: true });
  }

  /** Every published blob's digest, by walking blobs/sha256 (gc, verify, export). */
  async *walk(): AsyncGenerator<Digest> {
    const root = join(this.#blobs, 'sha256');
    for (const prefix of await readdir(root).catch(() => [] as string[])) {
      if (!/^[a-f0-9]{2}$/.test(prefix)) continue;
      for (const name of await readdir(join(root, prefix)).catch(() => [] as string[])) {
        if (name.startsWith(prefix) && isDigest(`sha256:${name}`)) yield `sha256:${name}` as Digest;
      }
    }
  }

  /** Removes what a crash left in tmp/ (files of this process and of processes no longer running); returns how many files. */
  async sweepTmp(): Promise<number> {
    const names = (await readdir(this.#tmp).catch(() => [] as string[])).filter((n) => !ownerRunning(n));
    await Promise.all(names.map((n) => rm(join(this.#tmp, n), { force: true, recursive: true })));
    return names.length;
  }

  /** `<pid>-<random>`: another process's sweep can tell the file is still being written. */
  #tmpName(): string {
    return join(this.#tmp, `${process.pid}-${randomBytes(12).toString('hex')}`);
  }
}

/** The file's name says another process that is still running made it. */
function ownerRunning(name: string): boolean {
  const m = /^(\d+)-/.exec(name);
  if (!m || Number(m[1]) === process.pid) return false;
  try {
    process.kill(Number(m[1]), 0);
    return true;
  } catch (err) {
    // EPERM: running, as another user.
    return (err as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** A second name for `from` at `to`; one already there is the same verified content. */
async function linkInto(from: string, to: string): Promise<void> {
  try {
    await link(from, to);
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
  }
}

/** File-system answers that mean "the store cannot take this write now", not "the content is bad". */
const STORE_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EFBIG']);

/** Rethrows a file-system error as the domain error callers above the store know (StoreFull), anything else as it is. */
function rethrowAsStoreError(err: unknown): never {
  const code = (err as NodeJS.ErrnoException).code;
  throw code !== undefined && STORE_FULL_CODES.has(code) ? new StoreFull(code) : err;
}
