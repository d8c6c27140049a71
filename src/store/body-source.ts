// A blob body that is read into buffers its consumer owns. The serving loop
// (http/body-writer.ts) keeps two buffers per response and reuses them from chunk to
// chunk: a Readable would allocate a fresh buffer per chunk, and at a gigabyte a second
// the allocation, page faults and garbage collection cost more than the copying itself.
import { Readable } from 'node:stream';
import type { ByteRange } from './content-store.js';
import { closeFd, openForRead, readAt } from './fs-callbacks.js';

/** Read chunk for serving blobs: large reads cost far less per byte than 64 KiB ones. */
export const READ_CHUNK = 1024 * 1024;

export interface BodySource {
  /** Copies the next bytes of the body into `buf` from its start; resolves 0 at the end. Never called twice at once. */
  readInto(buf: Buffer): Promise<number>;
  /** Stops reading and releases what the source holds; safe to call more than once. */
  close(): Promise<void>;
  /**
   * The whole body, when the source already holds it in memory and nothing was read yet:
   * a consumer may send it in one write instead of copying it through readInto, and must
   * still close the source.
   */
  readonly whole?: Buffer;
}

/** A byte range (inclusive end) of a file, opened at the first read, on a plain descriptor (see fs-callbacks.ts). */
export class FileRangeSource implements BodySource {
  readonly #path: string;
  readonly #end: number;
  /** What to throw when the file is not there (the store's BlobGone). */
  readonly #gone?: () => Error;
  #pos: number;
  #fd?: Promise<number>;
  /** The read in flight: the descriptor is closed only after it, so its number is not reused under it. */
  #reading?: Promise<number>;
  #closed = false;

  constructor(path: string, size: number, range?: ByteRange, gone?: () => Error) {
    this.#path = path;
    this.#gone = gone;
    this.#pos = range?.start ?? 0;
    this.#end = range?.end ?? size - 1;
  }

  async readInto(buf: Buffer): Promise<number> {
    const want = Math.min(buf.length, this.#end + 1 - this.#pos);
    if (want <= 0) return 0;
    if (this.#closed) throw new Error('read after close');
    this.#fd ??= openForRead(this.#path).catch((err: NodeJS.ErrnoException) => {
      throw err.code === 'ENOENT' && this.#gone ? this.#gone() : err;
    });
    const fd = await this.#fd;
    if (this.#closed) throw new Error('read after close');
    this.#reading = readAt(fd, buf, want, this.#pos);
    const bytesRead = await this.#reading;
    // The file was checked before serving; shorter now means it changed under us.
    if (bytesRead === 0) throw new Error(`${this.#path}: ends at ${this.#pos}, expected ${this.#end + 1} bytes`);
    this.#pos += bytesRead;
    return bytesRead;
  }

  async close(): Promise<void> {
    this.#closed = true;
    const fd = this.#fd;
    this.#fd = undefined;
    if (!fd) return;
    await this.#reading?.catch(() => undefined);
    const n = await fd.catch(() => undefined);
    if (n !== undefined) await closeFd(n);
  }
}

/** The source as a Readable, for the few consumers that are not the serving loop (a fresh buffer per chunk). */
export function sourceToReadable(source: BodySource, chunkSize: number): Readable {
  return Readable.from(
    (async function* () {
      try {
        for (;;) {
          const buf = Buffer.allocUnsafe(chunkSize);
          const n = await source.readInto(buf);
          if (n === 0) return;
          yield n === buf.length ? buf : buf.subarray(0, n);
        }
      } finally {
        await source.close();
      }
    })(),
    { objectMode: false },
  );
}
