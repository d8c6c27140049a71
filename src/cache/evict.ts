// Keeps the store inside its size limit: above the high watermark, the least recently
// used blobs are removed until it is under the low one. Pinned blobs, blobs being
// downloaded and blobs a client is reading are never removed. It runs in the background
// in bounded batches, yielding between them, so serving never waits on it. Processes
// sharing one metadata database (replicas, or a server and a command on one SQLite file)
// take turns: a pass runs only while its process holds the `evictor` lease.
import { setImmediate as yieldToLoop } from 'node:timers/promises';
import { MetadataUnavailable } from '../errors.js';
import type { EventSink } from '../events/event.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { crashPoint } from '../store/crash-point.js';
import type { EvictionCandidate, LruPosition, Metadata } from '../store/metadata.js';
import type { Digest } from '../oci/digest.js';
import type { LeaseStore } from '../store/leases.js';

export interface EvictorDeps {
  metadata: Metadata;
  log: Logger;
  metrics?: Metrics;
  /** Being downloaded or read right now (by this process: other replicas' readers are covered by `remove`'s grace). */
  inUse: (digest: string) => boolean;
  /** Removes the objects of evicted blobs (whose rows are gone): now, or after a grace. */
  remove: (digests: Digest[]) => Promise<void>;
  /** This process, as the holder of the `evictor` lease. */
  holder: string;
  /** The lease's time to live, renewed while a pass runs: a holder that dies blocks the others this long at most. */
  leaseTtlMs?: number;
  /** The store's limit in bytes (resolved from a size or a share of the file system). */
  limitBytes: number;
  highWatermark: number;
  lowWatermark: number;
  /** Told when a pass cannot bring the store under its high watermark. */
  events?: EventSink;
}

/** Candidates read per query while choosing. */
const PAGE = 4096;
/** Blobs chosen per round at most: a round's candidates are held in memory (some 150 bytes each). */
const ROUND = 131_072;
/** Rows forgotten per transaction, and objects removed after them. */
const BATCH = 1024;
const LEASE_KEY = 'evictor';
const LEASE_TTL_MS = 30_000;
const NOTHING = { removed: 0, freed: 0 };

/** LRU eviction by watermarks. */
export class Evictor {
  readonly #d: EvictorDeps;
  #running?: Promise<{ removed: number; freed: number }>;
  #timer?: NodeJS.Timeout;
  #pending = false;

  constructor(deps: EvictorDeps) {
    this.#d = deps;
  }

  get limitBytes(): number {
    return this.#d.limitBytes;
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
    // Asked first, without the lease: most pokes find the store under its watermark.
    if ((await this.#d.metadata.storeSize()).bytes <= this.highBytes) return NOTHING;
    const lease = await this.#lease();
    if (!lease) return NOTHING;
    try {
      return await this.#pass(lease);
    } finally {
      await lease.end();
    }
  }

  /** The evictor lease for one pass, or undefined when another process holds it or the database cannot say. */
  async #lease(): Promise<PassLease | undefined> {
    const { metadata, holder, log, metrics } = this.#d;
    try {
      const lease = await PassLease.take(metadata.leases, holder, this.#d.leaseTtlMs ?? LEASE_TTL_MS, log);
      if (!lease) metrics?.evictionPasses.inc({ result: 'held_elsewhere' });
      return lease;
    } catch (err) {
      if (!(err instanceof MetadataUnavailable)) throw err;
      metrics?.evictionPasses.inc({ result: 'unavailable' });
      log.warn('eviction skipped: the metadata database is unavailable', { reason: err.reason });
      return undefined;
    }
  }

  async #pass(lease: PassLease): Promise<{ removed: number; freed: number }> {
    const { metadata, log, metrics } = this.#d;
    // Read again under the lease: the previous holder may have just brought it down.
    let size = (await metadata.storeSize()).bytes;
    if (size <= this.highBytes) return NOTHING;
    metrics?.evictionPasses.inc({ result: 'ran' });
    const startedAt = new Date().toISOString();
    log.debug('eviction pass started', { storeBytes: size });
    const started = size;
    let removed = 0;
    // The walk goes on from where the last round stopped: blobs passed over (in use, or
    // used since they were chosen) are not chosen again in this pass.
    let after: LruPosition | undefined;
    while (size > this.lowBytes && !lease.lost) {
      const { victims, after: next } = await this.#choose(size - this.lowBytes, after);
      if (victims.length === 0) break;
      after = next;
      // The last chosen was used last: any victim used later than it was used since.
      const gone = await this.#forget(victims, victims[victims.length - 1].lastAccess, lease);
      removed += gone.removed;
      size -= gone.bytes;
    }
    log.info('eviction pass', { startedAt, removed, freed: started - size, storeBytes: size, lowWatermarkBytes: this.lowBytes, ...(lease.lost ? { leaseLost: true } : {}) });
    // A lost lease is another process's turn, not a store that cannot be brought down.
    if (size > this.highBytes && !lease.lost) {
      metrics?.evictionStuck.inc();
      this.#d.events?.record({ kind: 'pinned_eviction_refused', message: `store still over its high watermark after eviction (${size} of ${this.highBytes} bytes): what is left is pinned or in use`, details: { storeBytes: size, highWatermarkBytes: this.highBytes, removed } });
    }
    if (removed === 0 && size > this.highBytes) log.warn('store over its high watermark but nothing can be evicted (pinned or in use)', { storeBytes: size });
    return { removed, freed: started - size };
  }

  /** The next least recently used blobs not in use, `excess` bytes of them (at most ROUND), and where the walk stopped. */
  async #choose(excess: number, after: LruPosition | undefined): Promise<{ victims: EvictionCandidate[]; after?: LruPosition }> {
    const victims: EvictionCandidate[] = [];
    let bytes = 0;
    let at = after;
    while (bytes < excess && victims.length < ROUND) {
      const page = await this.#d.metadata.evictionCandidates(PAGE, at);
      if (page.length === 0) break;
      for (const c of page) {
        at = c;
        if (this.#d.inUse(c.digest)) continue;
        victims.push(c);
        bytes += c.size;
        if (bytes >= excess || victims.length >= ROUND) break;
      }
    }
    return { victims, after: at };
  }

  /**
   * Forgets a round's victims' rows, then removes their objects, a batch at a time. By
   * digest: the rows of one batch share pages of the tables keyed by digest, so a batch
   * rewrites far fewer pages than the same number of blobs taken in LRU order (on SQLite,
   * what the pass waits for is writing those pages). A victim in use by now, used since it
   * was chosen (last access past `usedBefore`) or pinned since stays.
   */
  async #forget(victims: EvictionCandidate[], usedBefore: number, lease: PassLease): Promise<{ removed: number; bytes: number }> {
    const { metadata, inUse, metrics, remove } = this.#d;
    const sorted = [...victims].sort((a, b) => (a.digest < b.digest ? -1 : a.digest > b.digest ? 1 : 0));
    let removed = 0;
    let bytes = 0;
    for (let i = 0; i < sorted.length && !lease.lost; i += BATCH) {
      const batch = sorted.slice(i, i + BATCH).filter((v) => !inUse(v.digest));
      if (batch.length === 0) continue;
      crashPoint('evict:before-delete');
      // The rows go first: a crash between the two leaves a file without a row, which is
      // never served as a hit and is swept by gc. A row pinned since it was chosen (an
      // import beside the server) stays, and so does its file.
      const gone = new Set(await metadata.evictBlobs(batch.map((v) => v.digest), usedBefore));
      for (const v of batch) if (gone.has(v.digest)) bytes += v.size;
      await remove([...gone] as Digest[]);
      removed += gone.size;
      metrics?.evictions.inc(gone.size);
      await yieldToLoop();
    }
    // Once a round, not a batch: written by the next flush, which would otherwise be a commit between every two batches.
    metadata.bump('(store)', 'evicted', removed);
    return { removed, bytes };
  }

  /** Stops the timer and waits for a run in progress. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#running;
  }
}

/** The `evictor` lease held for one pass: renewed while it runs; lost, the pass stops before its next batch. */
class PassLease {
  #lost = false;
  readonly #timer: NodeJS.Timeout;

  private constructor(
    readonly leases: LeaseStore,
    readonly holder: string,
    ttlMs: number,
    log: Logger,
  ) {
    this.#timer = setInterval(() => {
      leases.renew(holder, [LEASE_KEY], ttlMs).then(
        (kept) => {
          if (kept.length === 0) this.#lost = true;
        },
        (err: Error) => {
          // Unrenewed, it may run out and another process take over: stop rather than both evict.
          this.#lost = true;
          log.warn('could not renew the evictor lease; the pass stops', { err });
        },
      );
    }, Math.max(1, Math.floor(ttlMs / 3)));
    this.#timer.unref();
  }

  static async take(leases: LeaseStore, holder: string, ttlMs: number, log: Logger): Promise<PassLease | undefined> {
    const lease = await leases.acquire(LEASE_KEY, holder, ttlMs);
    return lease.holder === holder ? new PassLease(leases, holder, ttlMs, log) : undefined;
  }

  get lost(): boolean {
    return this.#lost;
  }

  /** Stops renewing and hands the lease back (should that fail, it runs out by itself). */
  async end(): Promise<void> {
    clearInterval(this.#timer);
    await this.leases.release(LEASE_KEY, this.holder).catch(() => undefined);
  }
}
