// Evicted blobs whose bytes outlive their rows for a grace period. Replicas sharing a
// bucket cannot see each other's readers: the evictor of one may choose a blob a client of
// another is streaming (with ranged GETs, one chunk at a time). Its rows go at once, so no
// replica starts a new read of it as a hit; its object goes only after the grace, when
// such a read has finished. Meanwhile a lease `leaving:<digest>` tells every process that
// the row-less object is not a crash's leftover to delete on sight (see `store` below).
import pLimit from 'p-limit';
import type { Logger } from '../log.js';
import type { Digest } from '../oci/digest.js';
import { COMMIT_GRACE_MS, type ContentStore } from '../store/content-store.js';
import type { Metadata } from '../store/metadata.js';

export interface DeferredRemovalDeps {
  /** The store as the backend has it. */
  store: ContentStore;
  metadata: Metadata;
  log: Logger;
  /** This process, as the holder of the `leaving:` leases. */
  holder: string;
  /** How long an evicted blob's bytes stay; 0 removes them at once. */
  graceMs: number;
  now?: () => number;
}

const LEASE_PREFIX = 'leaving:';
/** The lease outlives the grace by this much: time to check the row and delete the object. */
const LEASE_SLACK_MS = 60_000;
const REMOVE_CONCURRENCY = 8;

/** Removes evicted blobs' objects after the grace, unless they were published again. */
export class DeferredRemovals {
  readonly #d: DeferredRemovalDeps;
  readonly #timers = new Set<NodeJS.Timeout>();
  /**
   * The store as everyone else in this process uses it: a row-less blob in its grace counts
   * as recently committed, so neither the open-time integrity check nor gc removes it early.
   */
  readonly store: ContentStore;

  constructor(deps: DeferredRemovalDeps) {
    this.#d = deps;
    this.store = leavingAware(deps.store, (d) => this.#leaving(d));
  }

  /** Removes the objects of blobs whose rows were just deleted: now, or once the grace is over. */
  async remove(digests: readonly Digest[]): Promise<void> {
    const { store, metadata, holder, graceMs, log } = this.#d;
    if (graceMs === 0) {
      // A few at once: an eviction pass removes a batch of files, each an unlink that waits on the disk.
      const limit = pLimit(REMOVE_CONCURRENCY);
      await Promise.all(digests.map((d) => limit(() => store.remove(d))));
      return;
    }
    const evictedAt = this.#now();
    // Without the lease another process might remove an object early; this one still waits.
    await Promise.all(digests.map((d) => metadata.leases.acquire(LEASE_PREFIX + d, holder, graceMs + LEASE_SLACK_MS))).catch((err: Error) => log.warn('could not mark evicted blobs as leaving; removing them after the grace all the same', { err }));
    // Unref'd: shutdown does not wait for the grace. Removals pending at exit are lost;
    // their objects have no row and gc removes them once their lease is over.
    const timer = setTimeout(() => {
      this.#timers.delete(timer);
      void this.#expire(digests, evictedAt);
    }, graceMs);
    timer.unref();
    this.#timers.add(timer);
  }

  /** Removals waiting for their grace. */
  get pending(): number {
    return this.#timers.size;
  }

  /** Forgets the pending removals (gc cleans up after them). */
  close(): void {
    for (const t of this.#timers) clearTimeout(t);
    this.#timers.clear();
  }

  async #expire(digests: readonly Digest[], evictedAt: number): Promise<void> {
    const { store, metadata, holder, log } = this.#d;
    for (const d of digests) {
      try {
        if (await this.#stillEvicted(d, evictedAt)) await store.remove(d);
        await metadata.leases.release(LEASE_PREFIX + d, holder);
      } catch (err) {
        // Kept: an object with no row is gc's once the lease has run out.
        log.warn('could not remove an evicted blob after its grace; gc will', { digest: d, err: err as Error });
      }
    }
  }

  /** No row again, and not published again since the eviction (a download whose row is not written yet). */
  async #stillEvicted(d: Digest, evictedAt: number): Promise<boolean> {
    if (await this.#d.metadata.getBlob(d)) return false;
    // recentlyCommitted(d, t) is "committed after t − COMMIT_GRACE_MS": here, after evictedAt.
    return !(await this.#d.store.recentlyCommitted(d, evictedAt + COMMIT_GRACE_MS));
  }

  async #leaving(d: Digest): Promise<boolean> {
    return (await this.#d.metadata.leases.list(LEASE_PREFIX + d)).length > 0;
  }

  #now(): number {
    return (this.#d.now ?? Date.now)();
  }
}

/** `inner`, with blobs for which `leaving` holds counted as recently committed. */
function leavingAware(inner: ContentStore, leaving: (d: Digest) => Promise<boolean>): ContentStore {
  return {
    stat: (d) => inner.stat(d),
    source: (d, size, range) => inner.source(d, size, range),
    read: (d) => inner.read(d),
    commit: (spool) => inner.commit(spool),
    commitAndHold: (spool) => inner.commitAndHold(spool),
    hold: (d, size) => inner.hold(d, size),
    put: (d, bytes) => inner.put(d, bytes),
    remove: (d) => inner.remove(d),
    list: () => inner.list(),
    present: (digests) => inner.present(digests),
    recentlyCommitted: async (d, now) => (await inner.recentlyCommitted(d, now)) || (await leaving(d)),
    capacity: () => inner.capacity(),
    checkWritable: () => inner.checkWritable(),
    // Optional: a store without it must stay without it, so redirects know to stream.
    ...(inner.locate ? { locate: (d: Digest, size: number, opts: { expiresInSeconds: number }) => inner.locate!(d, size, opts) } : {}),
  };
}
