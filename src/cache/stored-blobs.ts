// The published copy of a blob as the cache may serve it: there, readable, and still the
// bytes that were verified (size and version as recorded at commit); and, with
// storage.redirect, the store's own URL for it.
import { MetadataUnavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { Digest } from '../oci/digest.js';
import type { ContentStore } from '../store/content-store.js';
import type { BlobRow, Metadata } from '../store/metadata.js';
import { isStoreFull } from './download.js';

/**
 * How long a redirect's URL stays valid. The client follows it at once, and the store
 * checks it only when a request starts, so a long transfer needs no more; a short life
 * makes a URL that leaks (a proxy's log) worth little. Ten minutes rather than a minute
 * because the store judges it by its own clock, which may be minutes off the mirror's.
 * (distribution uses twenty.)
 */
export const REDIRECT_EXPIRY_SECONDS = 600;

const UNREADABLE_LOG_EVERY_MS = 10_000;

export interface StoredBlobsDeps {
  store: ContentStore;
  metadata: Metadata;
  log: Logger;
  /** Hand out hits as the store's URL where it has one. */
  redirect?: boolean;
  /** Being downloaded or read here: a mismatch then is not a reason to drop it. */
  inUse: (digest: string) => boolean;
  now?: () => number;
}

export class StoredBlobs {
  readonly #deps: StoredBlobsDeps;
  #unreadableLoggedAt = -Infinity;
  #unlocatableLoggedAt = -Infinity;

  constructor(deps: StoredBlobsDeps) {
    this.#deps = deps;
  }

  /**
   * The store's URL for a hit, when redirects are on and the store has one; undefined
   * otherwise, and when it fails (the blob is then streamed, which always works).
   */
  async locate(digest: Digest, size: number): Promise<string | undefined> {
    const { store, redirect } = this.#deps;
    if (!redirect || !store.locate) return undefined;
    try {
      return await store.locate(digest, size, { expiresInSeconds: REDIRECT_EXPIRY_SECONDS });
    } catch (err) {
      // A failure here (credentials the chain cannot resolve) meets every hit: one line every ten seconds.
      const now = this.#now();
      if (now - this.#unlocatableLoggedAt >= UNREADABLE_LOG_EVERY_MS) {
        this.#unlocatableLoggedAt = now;
        this.#deps.log.warn('cannot locate a blob in the store; streaming it instead', { digest, err });
      }
      return undefined;
    }
  }

  /**
   * The store's stat, or undefined when the store cannot be read now (a bucket out of
   * reach): the request is then a miss served from the upstream, and nothing is forgotten.
   */
  async stat(digest: Digest): Promise<{ size: number; version: string } | undefined> {
    try {
      return await this.#deps.store.stat(digest);
    } catch (err) {
      if (!isStoreFull(err)) throw err;
      // Every request meets an outage of the store: one line every ten seconds says it.
      const now = this.#now();
      if (now - this.#unreadableLoggedAt >= UNREADABLE_LOG_EVERY_MS) {
        this.#unreadableLoggedAt = now;
        this.#deps.log.warn('blob store unreadable; answering from the upstream', { digest, code: err.reason });
      }
      return undefined;
    }
  }

  /**
   * The stored blob, if it is still the one that was verified: its size and version (for
   * files, the mtime) match what was recorded at commit. A blob that changed, or has no
   * row (a crash between commit and record), is dropped and fetched again, not served.
   */
  async intact(digest: Digest): Promise<{ size: number } | undefined> {
    const { metadata, store, log } = this.#deps;
    const st = await this.stat(digest);
    if (!st) return undefined;
    const row = await this.row(digest);
    if (row === 'unknown') return undefined;
    if (row && row.size === st.size && (row.version === undefined || row.version === st.version)) return st;
    if (this.#deps.inUse(digest)) return undefined;
    // No row yet may mean another process (import, prewarm) has just published it and
    // records it next: a miss for now, not a leftover to delete.
    if (!row && (await store.recentlyCommitted(digest))) return undefined;
    log.warn(row ? 'stored blob changed on disk; fetching it again' : 'stored blob has no record; fetching it again', { digest });
    await metadata.forgetBlobs([digest]);
    await store.remove(digest);
    return undefined;
  }

  /** The blob's row; 'unknown' while the database cannot say (a miss then, never a reason to drop the file). */
  async row(digest: Digest): Promise<BlobRow | undefined | 'unknown'> {
    try {
      return await this.#deps.metadata.getBlob(digest);
    } catch (err) {
      if (err instanceof MetadataUnavailable) return 'unknown';
      throw err;
    }
  }

  #now(): number {
    return (this.#deps.now ?? Date.now)();
  }
}
