// The spool: local files that downloads and imports are written to while they are
// hashed, and that a download's followers read while they fill. It is on local disk
// whatever stores the published blobs (store/content-store.ts), which take a spool only
// once its size and digest are verified. Callers above store/ never see a spool's path:
// they write to it, read it through a SpoolReader, and hand it to ContentStore.commit().
import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, rename, rm, stat, utimes, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import type { Digest } from '../oci/digest.js';
import { InlineHash, type ContentHash } from './content-hash.js';
import { crashPoint } from './crash-point.js';
import { isNotFound, rethrowAsStoreError } from './file-errors.js';

/** A reader of a spool file at positions of its own choosing, as it fills. */
export interface SpoolReader {
  /** Reads up to `length` bytes at `position` into `buf` from its start; 0 at what is written so far. */
  read(buf: Buffer, length: number, position: number): Promise<number>;
  /** Safe to call more than once. */
  close(): Promise<void>;
}

/** The spool directory of one data dir: creates spool files and sweeps what a crash left. */
export class Spool {
  readonly #dir: string;

  constructor(dir: string) {
    this.#dir = dir;
  }

  /** Creates the directory; call once before use. */
  async init(): Promise<void> {
    await mkdir(this.#dir, { recursive: true });
  }

  /** A new, empty spool file for a blob expected to be `expected` (and `expectedSize` bytes, when known). */
  async create(expected: Digest, expectedSize?: number): Promise<SpoolFile> {
    const path = newSpoolName(this.#dir);
    const fh = await open(path, 'wx+', 0o644).catch(rethrowAsStoreError);
    return new SpoolFile(path, fh, expected, new InlineHash(expected, expectedSize));
  }

  /** Removes what a crash left (files of this process and of processes no longer running); returns how many. */
  async sweep(): Promise<number> {
    const names = (await readdir(this.#dir).catch(() => [] as string[])).filter((n) => !ownerRunning(n));
    await Promise.all(names.map((n) => rm(join(this.#dir, n), { force: true, recursive: true })));
    return names.length;
  }

  /** Resolves when the spool's disk takes a write now; StoreFull (or the failure) otherwise. */
  async checkWritable(): Promise<void> {
    // Named without the `<pid>-` prefix: a sweep removes it whatever process left it.
    const probe = join(this.#dir, `.ready-${process.pid}`);
    try {
      await writeFile(probe, 'ok');
      await rm(probe, { force: true });
    } catch (err) {
      rethrowAsStoreError(err);
    }
  }
}

/** A blob being written: bytes are hashed as they are written, and a commit checks them. */
export class SpoolFile {
  readonly expected: Digest;
  /** Hashes what is written (and, in pass-through, what follows in memory). */
  readonly hash: ContentHash;
  readonly #path: string;
  #fh: FileHandle;
  #written = 0;
  #closed = false;
  /** Where a file store moved the file: readers opening after the move find it there. */
  #movedTo?: string;
  /** Readers still opening the file: it is not removed under them. */
  readonly #opening = new Set<Promise<unknown>>();

  constructor(path: string, fh: FileHandle, expected: Digest, hash: ContentHash) {
    this.#path = path;
    this.#fh = fh;
    this.expected = expected;
    this.hash = hash;
  }

  /** Bytes written so far; readers may read up to here. */
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
   * Flushes and closes the file for writing; it stays readable. Idempotent: a writer
   * holding many finished spools (import) closes each one early, so it does not keep a
   * descriptor open per blob until it commits them.
   */
  async syncAndClose(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#fh.sync().catch(rethrowAsStoreError);
    await this.#fh.close();
  }

  /**
   * A reader from its own offsets. It opens the file at once: an open descriptor keeps
   * reading the same bytes when the file is moved into a file store or removed.
   */
  reader(): SpoolReader {
    const opening = this.#openForRead();
    this.#opening.add(opening);
    const settled = () => this.#opening.delete(opening);
    opening.then(settled, settled);
    return new HandleReader(opening);
  }

  /** The bytes written, whole (small blobs: an import's manifests). */
  read(): Promise<Buffer> {
    return readFile(this.#movedTo ?? this.#path);
  }

  /**
   * For file-system stores only: gives the verified file the name `dest`, moved or (when
   * `keep`) linked so that it keeps its spool name too, after setting its mtime to now
   * (a blob's commit time, which the grace period is measured from). The mtime of what
   * is at `dest` then: a link finds an equal blob already there and leaves it.
   */
  async placeAt(dest: string, keep: boolean): Promise<number> {
    const now = new Date();
    await utimes(this.#path, now, now);
    const { mtimeMs } = await stat(this.#path);
    crashPoint('publish:before-rename');
    if (keep) {
      if (!(await linkInto(this.#path, dest))) return (await stat(dest)).mtimeMs;
    } else {
      this.#movedTo = dest;
      await rename(this.#path, dest).catch((err: unknown) => {
        this.#movedTo = undefined;
        throw err;
      });
    }
    crashPoint('publish:after-rename');
    return mtimeMs;
  }

  /** For file-system stores only: links the kept file to `dest` again if nothing is there. */
  async relinkTo(dest: string): Promise<void> {
    await linkInto(this.#path, dest);
  }

  /** Closes and deletes the spool file (a moved one stays where it went); safe to call more than once. */
  async discard(): Promise<void> {
    this.hash.close();
    await this.#fh.close().catch(() => {});
    await Promise.allSettled([...this.#opening]);
    await rm(this.#path, { force: true });
  }

  async #openForRead(): Promise<FileHandle> {
    try {
      return await open(this.#path, 'r');
    } catch (err) {
      if (isNotFound(err) && this.#movedTo !== undefined) return open(this.#movedTo, 'r');
      throw err;
    }
  }
}

class HandleReader implements SpoolReader {
  #fh?: Promise<FileHandle>;

  constructor(fh: Promise<FileHandle>) {
    this.#fh = fh;
    fh.catch(() => undefined); // reported by the first read
  }

  async read(buf: Buffer, length: number, position: number): Promise<number> {
    if (!this.#fh) throw new Error('read after close');
    return (await (await this.#fh).read(buf, 0, length, position)).bytesRead;
  }

  async close(): Promise<void> {
    const fh = this.#fh;
    this.#fh = undefined;
    await fh?.then((f) => f.close()).catch(() => undefined);
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

/** `<dir>/<pid>-<random>`: another process's sweep can tell the file is still in use. */
export function newSpoolName(dir: string): string {
  return join(dir, `${process.pid}-${randomBytes(12).toString('hex')}`);
}

/** A second name for `from` at `to`; false when one was there already (the same verified content). */
export async function linkInto(from: string, to: string): Promise<boolean> {
  try {
    await link(from, to);
    return true;
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
    return false;
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
