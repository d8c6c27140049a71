// Writes of the serving path (a tag fetched, a blob published, a link learnt) that the
// database could not take because it was unreachable: kept in order and retried, so that
// a database restart loses nothing a client was served. Bounded: past `max` waiting
// writes, new ones are dropped and counted (what they would have recorded is fetched
// again later, or swept by gc).
import { MetadataUnavailable } from '../errors.js';

const RETRY_FIRST_MS = 250;
const RETRY_MAX_MS = 5000;

export interface WriteQueueOptions {
  max: number;
  /** A write could not be made now and waits (or, when full, was dropped). */
  onUnavailable: (err: MetadataUnavailable, dropped: boolean) => void;
  /** A queued write failed for another reason when retried: it is dropped. */
  onFailed: (err: Error) => void;
}

export class WriteQueue {
  readonly #opts: WriteQueueOptions;
  readonly #ops: Array<() => Promise<void>> = [];
  #timer: NodeJS.Timeout | undefined;
  #delay = RETRY_FIRST_MS;
  #draining: Promise<void> | undefined;
  #closed = false;

  constructor(opts: WriteQueueOptions) {
    this.#opts = opts;
  }

  /** Writes waiting for the database. */
  get size(): number {
    return this.#ops.length;
  }

  /** Runs `op` now, or after the writes already waiting; resolves once it is written or queued. */
  async write(op: () => Promise<void>): Promise<void> {
    if (this.#ops.length === 0) {
      try {
        await op();
        return;
      } catch (err) {
        if (!(err instanceof MetadataUnavailable)) throw err;
        this.#enqueue(op, err);
        return;
      }
    }
    this.#enqueue(op);
  }

  #enqueue(op: () => Promise<void>, err?: MetadataUnavailable): void {
    const full = this.#ops.length >= this.#opts.max;
    if (!full) this.#ops.push(op);
    if (err || full) this.#opts.onUnavailable(err ?? new MetadataUnavailable('write queue full'), full);
    this.#schedule();
  }

  #schedule(): void {
    if (this.#timer || this.#closed || this.#ops.length === 0) return;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.drain();
    }, this.#delay);
    this.#timer.unref();
  }

  /** Writes what waits, in order, until the database refuses again; never throws. */
  drain(): Promise<void> {
    this.#draining ??= this.#drainOnce().finally(() => {
      this.#draining = undefined;
      this.#schedule();
    });
    return this.#draining;
  }

  async #drainOnce(): Promise<void> {
    while (this.#ops.length > 0) {
      try {
        await this.#ops[0]();
      } catch (err) {
        if (err instanceof MetadataUnavailable) {
          this.#delay = Math.min(this.#delay * 2, RETRY_MAX_MS);
          return;
        }
        this.#opts.onFailed(err as Error);
      }
      this.#ops.shift();
    }
    this.#delay = RETRY_FIRST_MS;
  }

  /** Stops retrying; what still waits is given up (the caller reports it). */
  close(): void {
    this.#closed = true;
    clearTimeout(this.#timer);
    this.#timer = undefined;
  }
}
