// Keeps the store inside its size limit: above the high watermark, the least recently
// used blobs are removed until it is under the low one. Pinned blobs, blobs being
// downloaded and blobs a client is reading are never removed. It runs in the background
// in bounded batches, yielding between them, so serving never waits on it.
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { ContentStore } from '../store/content-store.js';
import { crashPoint } from '../store/crash-point.js';
import type { Metadata } from '../store/metadata.js';
import type { Digest } from '../oci/digest.js';

export interface EvictorDeps {
  store: ContentStore;
  metadata: Metadata;
  log: Logger;
  metrics?: Metrics;
  /** Being downloaded or read right now. */
  inUse: (digest: string) => boolean;
  /** The store's limit in bytes (resolved from a size or a share of the file system). */
  limitBytes: number;
  highWatermark: number;
  lowWatermark: number;
}

const BATCH = 256;

/** LRU eviction by watermarks. */
export class Evictor {
  readonly #d: EvictorDeps;
  #running?: Promise<{ removed: number; freed: number }>;
  #timer?: NodeJS.Timeout;
  #pending = false;

  constructor(deps: EvictorDeps) {
    this.#d = deps;
  }

  get highBytes(): number {
    return Math.floor((this.#d.limitBytes * this.#d.highWatermark) / 100);
  }

  get lowBytes(): number {
    return Math.floor((this.#d.limitBytes * this.#d.lowWatermark) / 100);
  }

  /** Checks now and then every `everyMs`. */
  start(everyMs = 10_000): void {
    this.#timer = setInterval(() => this.poke(), everyMs);
    this.#timer.unref();
    this.poke();
  }

  /** The store grew: run soon (once, however many pokes arrive while a run is going). */
  poke(): void {
    if (this.#running) {
      this.#pending = true;
      return;
    }
    void this.run();
  }

  /** Evicts until under the low watermark (if over the high one); one run at a time. */
  run(): Promise<{ removed: number; freed: number }> {
    this.#running ??= this.#evict()
      .catch((err: Error) => {
        this.#d.log.error('eviction failed', { err });
        return { removed: 0, freed: 0 };
      })
      .finally(() => {
        this.#running = undefined;
        if (this.#pending) {
          this.#pending = false;
          this.poke();
        }
      });
    return this.#running;
  }

  async #evict(): Promise<{ removed: number; freed: number }> {
    const { metadata, store, log, inUse, metrics } = this.#d;
    let size = (await metadata.storeSize()).bytes;
    if (size <= this.highBytes) return { removed: 0, freed: 0 };
    const started = size;
    let removed = 0;
    const skipped = new Set<string>();
    while (size > this.lowBytes) {
      const batch = (await metadata.evictionCandidates(BATCH + skipped.size))
        .filter((c) => !skipped.has(c.digest))
        .slice(0, BATCH);
      if (batch.length === 0) break;
      const victims: Array<{ digest: string; size: number }> = [];
      for (const c of batch) {
        if (size <= this.lowBytes) break;
        if (inUse(c.digest)) {
          skipped.add(c.digest);
          continue;
        }
        victims.push(c);
        size -= c.size;
      }
      if (victims.length === 0) continue;
      crashPoint('evict:before-delete');
      // The rows go first: a crash between the two leaves a file without a row, which is
      // never served as a hit and is swept by gc. A row pinned since it was chosen (an
      // import beside the server) stays, and so does its file.
      const gone = new Set(await metadata.evictBlobs(victims.map((v) => v.digest)));
      for (const v of victims) {
        if (gone.has(v.digest)) await store.remove(v.digest as Digest);
        else {
          size += v.size;
          skipped.add(v.digest);
        }
      }
      removed += gone.size;
      metrics?.evictions.inc(gone.size);
      metadata.bump('(store)', 'evicted', gone.size);
      await yieldToLoop();
    }
    if (removed > 0) log.info('evicted least-recently-used blobs', { removed, freed: started - size, storeBytes: size, lowWatermarkBytes: this.lowBytes });
    else if (size > this.highBytes) log.warn('store over its high watermark but nothing can be evicted (pinned or in use)', { storeBytes: size });
    return { removed, freed: started - size };
  }

  /** Stops the timer and waits for a run in progress. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }
}
