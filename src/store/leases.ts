// Leases: short-lived, renewable claims that replicas sharing one metadata database take
// so that one of them does a piece of work (downloads a digest, revalidates a tag, runs
// the evictor) and the others know who. A lease names its holder (a replica id) and may
// carry a little data (where the holder can be reached, what it downloads for); it ends
// when released or when its holder stops renewing it. Part of the metadata seam: SQLite
// and PostgreSQL implement it on a `leases` table, with the backend's clock.

export interface Lease {
  key: string;
  holder: string;
  /** What the holder chose to tell the others (JSON, small). */
  data?: string;
  expiresAt: number;
}

export interface LeaseStore {
  /**
   * Takes `key` for `holder` for `ttlMs` unless another holder's lease on it is still in
   * force; a lease `holder` already has is renewed (and its data replaced). Returns the
   * lease in force afterwards: the caller's own, or the other holder's.
   */
  acquire(key: string, holder: string, ttlMs: number, data?: string): Promise<Lease>;
  /**
   * Takes `key` from `from`, a holder known to be gone (it refused a connection), before its
   * lease expires; taken as acquire() would when nobody holds it any more. The lease in force.
   */
  takeOver(key: string, from: string, holder: string, ttlMs: number, data?: string): Promise<Lease>;
  /** Extends the leases of `keys` that `holder` still has; returns those keys. */
  renew(holder: string, keys: readonly string[], ttlMs: number): Promise<string[]>;
  /** Ends `holder`'s lease on `key`; nothing when another holds it now. */
  release(key: string, holder: string): Promise<void>;
  /** The leases in force whose key starts with `prefix`. */
  list(prefix: string): Promise<Lease[]>;
  /** Forgets leases expired for longer than `olderThanMs`; the number removed. */
  prune(olderThanMs: number): Promise<number>;
}
