// A published object read for the serving loop with ranged GETs, a chunk at a time, the
// next chunk's request sent as soon as the current one is being read: its body waits in
// the socket's buffers (TCP flow control bounds it), so a blob of any size costs a few
// buffers and the client never waits for a round trip at a chunk boundary. A body that
// waits long behind a slow client may be cut by the server's idle timeout (RGW's is 65 s):
// the rest of that chunk is asked for again.
import type { Readable } from 'node:stream';
import type { BodySource } from '../body-source.js';
import type { ByteRange } from '../content-store.js';

/** One ranged GET's body (inclusive `start`..`end`), rejecting with the store's error. */
export type RangeGetter = (start: number, end: number, signal: AbortSignal) => Promise<Readable>;

export const RANGE_CHUNK = 8 * 1024 * 1024;
/** Times one chunk's body may be cut and asked for again from where it was cut. */
const MAX_RESUMES = 2;

export class S3RangeSource implements BodySource {
  readonly #get: RangeGetter;
  readonly #end: number;
  readonly #chunk: number;
  readonly #abort = new AbortController();
  /** Where the next request starts. */
  #next: number;
  #current?: RangeChunk;
  #ahead?: RangeChunk;
  #closed = false;

  constructor(get: RangeGetter, size: number, range?: ByteRange, chunk = RANGE_CHUNK) {
    this.#get = get;
    this.#next = range?.start ?? 0;
    this.#end = range?.end ?? size - 1;
    this.#chunk = chunk;
  }

  async readInto(buf: Buffer): Promise<number> {
    if (this.#closed) throw new Error('read after close');
    let filled = 0;
    while (filled < buf.length) {
      if (!this.#current) {
        if (!this.#ahead && this.#next > this.#end) break;
        this.#current = this.#ahead ?? this.#request();
        this.#ahead = undefined;
      }
      if (!this.#ahead && this.#next <= this.#end) this.#ahead = this.#request();
      const n = await this.#current.copyInto(buf, filled);
      if (n === 0) this.#current = undefined;
      filled += n;
    }
    return filled;
  }

  async close(): Promise<void> {
    this.#closed = true;
    this.#abort.abort();
    this.#current?.destroy();
    this.#ahead?.destroy();
    this.#current = this.#ahead = undefined;
  }

  #request(): RangeChunk {
    const start = this.#next;
    const end = Math.min(this.#end, start + this.#chunk - 1);
    this.#next = end + 1;
    const signal = this.#abort.signal;
    return new RangeChunk(start, end, (from) => this.#get(from, end, signal));
  }
}

/** The body of one ranged GET, copied out as it arrives; it must be exactly the range. */
class RangeChunk {
  readonly #open: (from: number) => Promise<Readable>;
  readonly #start: number;
  readonly #length: number;
  #body: Promise<Readable>;
  #it?: AsyncIterator<Buffer>;
  #left: Buffer = Buffer.alloc(0);
  #received = 0;
  #resumes = 0;

  /** `open(from)` GETs the chunk's bytes from `from` to its end. */
  constructor(start: number, end: number, open: (from: number) => Promise<Readable>) {
    this.#open = open;
    this.#start = start;
    this.#length = end - start + 1;
    this.#body = this.#request(start);
  }

  /** Copies into `buf` at `offset`; 0 once the whole range was copied. */
  async copyInto(buf: Buffer, offset: number): Promise<number> {
    if (this.#left.length === 0) {
      if (this.#received === this.#length) return 0;
      const value = await this.#nextBytes();
      this.#received += value.length;
      if (this.#received > this.#length) throw new Error(`ranged GET at ${this.#start} gave more than the ${this.#length} bytes asked for`);
      this.#left = value;
    }
    const n = this.#left.copy(buf, offset);
    this.#left = this.#left.subarray(n);
    return n;
  }

  destroy(): void {
    this.#body.then((b) => b.destroy(), () => undefined);
  }

  /** The body's next bytes; a body cut (not refused) is asked for again from where it stopped. */
  async #nextBytes(): Promise<Buffer> {
    for (;;) {
      const body = await this.#body; // a refused request (BlobGone, StoreFull) throws here
      try {
        this.#it ??= body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
        const { value, done } = await this.#it.next();
        // The size was checked before serving; another length now means the object changed.
        if (done) throw new Error(`object ends at ${this.#start + this.#received}, expected ${this.#start + this.#length}`);
        return value;
      } catch (err) {
        if (this.#resumes >= MAX_RESUMES || !isCut(err)) throw err;
        this.#resumes++;
        body.destroy();
        this.#it = undefined;
        this.#body = this.#request(this.#start + this.#received);
      }
    }
  }

  #request(from: number): Promise<Readable> {
    const body = this.#open(from);
    body.catch(() => undefined); // reported when the chunk is read, if it ever is
    return body;
  }
}

/** A connection that ended under a body (idle timeout, reset), not an answer. */
function isCut(err: unknown): boolean {
  const code = (err as NodeJS.ErrnoException).code;
  return code === 'ECONNRESET' || code === 'ERR_STREAM_PREMATURE_CLOSE' || code === 'EPIPE' || code === 'ETIMEDOUT';
}
