// A published object read for the serving loop with ranged GETs, a chunk at a time, the
// next chunk's request sent as soon as the current one is being read: its body waits in
// the socket's buffers (TCP flow control bounds it), so a blob of any size costs a few
// buffers and the client never waits for a round trip at a chunk boundary.
import type { Readable } from 'node:stream';
import type { BodySource } from '../body-source.js';
import type { ByteRange } from '../content-store.js';

/** One ranged GET's body (inclusive `start`..`end`), rejecting with the store's error. */
export type RangeGetter = (start: number, end: number, signal: AbortSignal) => Promise<Readable>;

export const RANGE_CHUNK = 8 * 1024 * 1024;

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
    return new RangeChunk(start, end, this.#get(start, end, this.#abort.signal));
  }
}

/** The body of one ranged GET, copied out as it arrives; it must be exactly the range. */
class RangeChunk {
  readonly #body: Promise<Readable>;
  readonly #length: number;
  readonly #start: number;
  #it?: AsyncIterator<Buffer>;
  #left: Buffer = Buffer.alloc(0);
  #received = 0;

  constructor(start: number, end: number, body: Promise<Readable>) {
    this.#start = start;
    this.#length = end - start + 1;
    this.#body = body;
    body.catch(() => undefined); // reported when the chunk is read, if it ever is
  }

  /** Copies into `buf` at `offset`; 0 once the whole range was copied. */
  async copyInto(buf: Buffer, offset: number): Promise<number> {
    if (this.#left.length === 0) {
      if (this.#received === this.#length) return 0;
      this.#it ??= (await this.#body)[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      const { value, done } = await this.#it.next();
      // The size was checked before serving; another length now means the object changed.
      if (done) throw new Error(`object ends at ${this.#start + this.#received}, expected ${this.#start + this.#length}`);
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
}
