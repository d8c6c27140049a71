// Work that one replica does for the whole cluster while the others wait for its result
// (a tag's revalidation: one upstream HEAD per tag and TTL, not one per replica). The
// replica that takes the work's lease does it; the others look for its result until it
// appears, the lease comes free (they then take it), or they have waited long enough, in
// which case they do the work themselves: a slow or dead replica delays, never blocks.
import { setTimeout as sleep } from 'node:timers/promises';
import { MetadataUnavailable } from '../errors.js';
import type { LeaseStore } from '../store/leases.js';

/** How often a waiting replica looks for the result. */
const POLL_MS = 50;

export interface SharedWorkOptions {
  /** The lease's life: longer than the work normally takes. */
  ttlMs: number;
  /** How long to wait for another replica's result before doing the work here. */
  waitMs: number;
}

export class SharedWork {
  readonly #leases: LeaseStore;
  readonly #holder: string;

  constructor(leases: LeaseStore, holder: string) {
    this.#leases = leases;
    this.#holder = holder;
  }

  /**
   * `work()` here, or the result another replica's work left, as `result()` reads it
   * (undefined: not there yet).
   */
  async run<T>(key: string, opts: SharedWorkOptions, work: () => Promise<T>, result: () => Promise<T | undefined>): Promise<T> {
    const deadline = Date.now() + opts.waitMs;
    for (;;) {
      if (await this.#take(key, opts.ttlMs)) {
        try {
          // The lease may be free because another replica has just done the work and
          // released it: its result, when there, saves doing the work twice.
          return (await result()) ?? (await work());
        } finally {
          this.#leases.release(key, this.#holder).catch(() => undefined);
        }
      }
      if (Date.now() >= deadline) return work();
      await sleep(POLL_MS);
      const done = await result();
      if (done !== undefined) return done;
    }
  }

  /** Whether this replica holds the lease now; a database out of reach leaves the work to each replica. */
  async #take(key: string, ttlMs: number): Promise<boolean> {
    try {
      return (await this.#leases.acquire(key, this.#holder, ttlMs)).holder === this.#holder;
    } catch (err) {
      if (err instanceof MetadataUnavailable) return true;
      throw err;
    }
  }
}
