// SQLite's "another process holds the lock" errors, as the metadata seam reports them.
import { MetadataUnavailable } from '../../errors.js';

/** A lock held past the busy timeout by another process is an outage to the caller, not a hang. */
const BUSY_CODES = new Set(['SQLITE_BUSY', 'SQLITE_LOCKED', 'SQLITE_BUSY_SNAPSHOT', 'SQLITE_BUSY_RECOVERY']);

/** Runs `fn`; a lock another process held past the busy timeout is MetadataUnavailable: the caller queues or falls back. */
export function busy<T>(fn: () => T): T {
  try {
    return fn();
  } catch (err) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string' && BUSY_CODES.has(code)) throw new MetadataUnavailable(code);
    throw err;
  }
}
