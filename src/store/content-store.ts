// The published-content store: verified blobs under their digests, with no paths in its
// interface, so that a file system (store/fs/) and an object store can both be one. Bytes
// arrive in it only from a verified spool (store/spool.ts) or as a small verified body.
import type { Digest } from '../oci/digest.js';
import type { BodySource } from './body-source.js';
import type { SpoolFile } from './spool.js';

/** An inclusive byte range, as HTTP Range speaks of it. */
export interface ByteRange {
  start: number;
  end: number;
}

/** A published blob: its size and the store's opaque version of it (for files, the mtime; for objects, the ETag). */
export interface ContentStat {
  size: number;
  /**
   * Changes whenever the stored bytes may have changed in place (for files, the mtime; for
   * objects, the ETag or version id). A re-commit of the same bytes may keep it or not, as
   * the store has it. The cache records it at commit and serves the blob only while it is
   * still the same.
   */
  version: string;
}

/** Room in a store that has a bound (a file system); a bucket has none. */
export interface Capacity {
  totalBytes: number;
  freeBytes: number;
}

/**
 * A verified blob kept aside by its committer until it is recorded, so that another
 * process (gc, the evictor) removing the published copy meanwhile loses nothing.
 */
export interface HeldBlob {
  /** The bytes, whole (small blobs: manifests). */
  read(): Promise<Buffer>;
  /** Publishes the kept bytes again if the published copy is gone; the published copy's version. */
  restore(): Promise<{ version: string }>;
  /** Drops what was kept; safe to call more than once. */
  release(): Promise<void>;
}

/**
 * A published copy with no metadata row is normally a crash's leftover, but for a while
 * it may be one that another process (an import, a download) has just committed and is
 * about to record. gc and the open-time integrity check leave such blobs alone this long.
 */
export const COMMIT_GRACE_MS = 60 * 60_000;

/**
 * Where published blobs live. Every method throws the domain errors of errors.ts
 * (StoreFull when the store refuses a write, BlobGone for a blob that is not there,
 * DigestMismatch/SizeMismatch for content that is not what it claims), never a
 * backend's own codes.
 */
export interface ContentStore {
  /** The published blob's size and version; undefined when there is none. */
  stat(d: Digest): Promise<ContentStat | undefined>;
  /**
   * The blob (of `size`, as stat gave it), or an inclusive range of it, for the serving
   * loop. RangeNotSatisfiable for a range outside it; BlobGone at the first read if it
   * went meanwhile.
   */
  source(d: Digest, size: number, range?: ByteRange): BodySource;
  /** A small blob whole (manifest bodies); BlobGone when it is not there. */
  read(d: Digest): Promise<Buffer>;
  /**
   * Verifies the spool's size and digest and publishes it under its digest, durably.
   * A mismatch publishes nothing and discards the spool. The spool stays its creator's,
   * to discard once done with it (readers already open keep reading either way).
   */
  commit(spool: SpoolFile): Promise<{ version: string }>;
  /** As commit, keeping the bytes aside until the hold is released (an import, until its rows are written). */
  commitAndHold(spool: SpoolFile): Promise<{ version: string; held: HeldBlob }>;
  /** Keeps an already published blob of `size` bytes aside; undefined when the store has no such blob. */
  hold(d: Digest, size: number): Promise<HeldBlob | undefined>;
  /** Verifies and publishes a small body (a manifest). */
  put(d: Digest, bytes: Uint8Array): Promise<{ version: string }>;
  /** Removes a published blob; removing one that is not there is no error. */
  remove(d: Digest): Promise<void>;
  /** Every published blob's digest (gc, verify). */
  list(): AsyncIterable<Digest>;
  /** Those of `digests` that are published (gc): for a batch, cheaper than a stat each where the store can list. */
  present(digests: readonly Digest[]): Promise<Set<Digest>>;
  /** Committed within COMMIT_GRACE_MS of `now`: maybe not yet recorded by its committer. */
  recentlyCommitted(d: Digest, now?: number): Promise<boolean>;
  /** Total and free bytes where the store has a bound; undefined where it has none. */
  capacity(): Promise<Capacity | undefined>;
  /** Resolves when the store takes a write now (readiness); throws StoreFull or the failure otherwise. */
  checkWritable(): Promise<void>;
  /**
   * Optional: a URL from which a client can GET the published blob's bytes directly (and
   * ranges of them), carrying only the store's own short-lived authorisation and valid
   * for about `expiresInSeconds`; undefined when this blob cannot be reached that way.
   * A store without it serves every byte through the mirror. It does not check that the
   * blob is there: the caller has just done so.
   */
  locate?(d: Digest, size: number, opts: { expiresInSeconds: number }): Promise<string | undefined>;
}
