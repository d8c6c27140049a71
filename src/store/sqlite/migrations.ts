// The SQLite file: opening it (pragmas, lock waits) and its numbered schema migrations.
// PRAGMA user_version says how many migrations have run; each runs once, in order,
// inside one transaction with the version bump.
import Database from 'better-sqlite3';

/** Migration N (1-based) brings the schema from user_version N-1 to N. Append only. */
export const MIGRATIONS: readonly string[] = [
  `
  -- Every published blob, manifest bodies included: the file at blobs/sha256/xx/<hex> exists
  -- once the row does. last_access and hits are batched, not written per request.
  CREATE TABLE blobs (
    digest      TEXT PRIMARY KEY,
    size        INTEGER NOT NULL,
    created_at  INTEGER NOT NULL,
    last_access INTEGER NOT NULL,
    hits        INTEGER NOT NULL DEFAULT 0
  ) WITHOUT ROWID;

  -- Which blobs are manifests, and of which media type.
  CREATE TABLE manifests (
    digest     TEXT PRIMARY KEY,
    media_type TEXT NOT NULL
  ) WITHOUT ROWID;

  -- A blob or manifest is served for a repository only when it is linked to it.
  CREATE TABLE links (
    upstream   TEXT NOT NULL,
    repository TEXT NOT NULL,
    digest     TEXT NOT NULL,
    PRIMARY KEY (upstream, repository, digest)
  ) WITHOUT ROWID;
  CREATE INDEX links_digest ON links (digest);

  -- A tag resolves per Accept class (bitmask of manifest types the client takes).
  CREATE TABLE tags (
    upstream   TEXT NOT NULL,
    repository TEXT NOT NULL,
    tag        TEXT NOT NULL,
    accept     INTEGER NOT NULL,
    digest     TEXT NOT NULL,
    media_type TEXT NOT NULL,
    fetched_at INTEGER NOT NULL,
    expires_at INTEGER NOT NULL,
    PRIMARY KEY (upstream, repository, tag, accept)
  ) WITHOUT ROWID;
  `,
  `
  -- The last rate-limit budget each upstream reported, per credential (username or anonymous).
  CREATE TABLE rate_limits (
    upstream    TEXT NOT NULL,
    credential  TEXT NOT NULL,
    limit_n     INTEGER,
    remaining   INTEGER,
    window_s    INTEGER,
    source      TEXT,
    observed_at INTEGER NOT NULL,
    PRIMARY KEY (upstream, credential)
  ) WITHOUT ROWID;

  -- Hourly roll-ups: upstream requests by kind (manifest_get is what Docker Hub counts),
  -- client pulls served, cache hits, bytes from cache and from upstream.
  CREATE TABLE rollups (
    hour     INTEGER NOT NULL,
    upstream TEXT NOT NULL,
    metric   TEXT NOT NULL,
    value    INTEGER NOT NULL,
    PRIMARY KEY (hour, upstream, metric)
  ) WITHOUT ROWID;
  `,
  `
  -- Pins, set by importing a bundle: a pinned tag never expires (it is answered without
  -- asking the upstream), and a pinned blob is never evicted.
  ALTER TABLE tags ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
  ALTER TABLE blobs ADD COLUMN pinned INTEGER NOT NULL DEFAULT 0;
  `,
  `
  -- The file's mtime when it was published: a cheap check at open that the bytes on disk
  -- are still the ones that were verified (an in-place edit changes it).
  ALTER TABLE blobs ADD COLUMN mtime_ms REAL;
  CREATE INDEX blobs_lru ON blobs (pinned, last_access);
  `,
  `
  -- The blob store's opaque version of the content at publish (a file's mtime, an object's
  -- ETag), replacing mtime_ms; rows written before keep mtime_ms, read as its version.
  ALTER TABLE blobs ADD COLUMN version TEXT;
  `,
  `
  -- Claims that processes sharing the metadata take on a piece of work (a download, a
  -- tag's revalidation, an eviction pass); see src/store/leases.ts. Never exported.
  CREATE TABLE leases (
    key        TEXT PRIMARY KEY,
    holder     TEXT NOT NULL,
    data       TEXT,
    expires_at INTEGER NOT NULL
  ) WITHOUT ROWID;
  `,
  `
  -- Hourly roll-ups per subject: a repository's pulls and bytes served, a credential's
  -- lowest budget (see SubjectMetric in src/store/rows.ts).
  CREATE TABLE subject_rollups (
    hour     INTEGER NOT NULL,
    upstream TEXT NOT NULL,
    subject  TEXT NOT NULL,
    metric   TEXT NOT NULL,
    value    INTEGER NOT NULL,
    PRIMARY KEY (hour, upstream, subject, metric)
  ) WITHOUT ROWID;
  CREATE INDEX subject_rollups_metric ON subject_rollups (metric, hour);
  `,
  `
  -- Immutable tags (tag policies): the digest each is held to, per class of clients, and
  -- the change the upstream made that nobody accepted yet; see src/store/guarded-tags.ts.
  CREATE TABLE guarded_tags (
    upstream      TEXT NOT NULL,
    repository    TEXT NOT NULL,
    tag           TEXT NOT NULL,
    class         TEXT NOT NULL,
    digest        TEXT NOT NULL,
    guarded_at    INTEGER NOT NULL,
    change_digest TEXT,
    change_since  INTEGER,
    change_action TEXT,
    PRIMARY KEY (upstream, repository, tag, class)
  ) WITHOUT ROWID;
  `,
  `
  -- What the mirror told its operators (src/store/events.ts): appended in batches, listed
  -- newest first, pruned past the retention. details is a JSON object. Never exported.
  CREATE TABLE events (
    id         INTEGER PRIMARY KEY,
    at         INTEGER NOT NULL,
    kind       TEXT NOT NULL,
    upstream   TEXT,
    repository TEXT,
    tag        TEXT,
    digest     TEXT,
    message    TEXT NOT NULL,
    details    TEXT,
    count      INTEGER NOT NULL DEFAULT 1
  );
  CREATE INDEX events_at ON events (at);
  CREATE INDEX events_kind_at ON events (kind, at);
  `,
  `
  -- The store's totals, kept by triggers: the evictor asks after every publish, /readyz and
  -- the metrics on every scrape, and summing a million rows takes the event loop for a
  -- third of a second each time. Only size and pinned move them (not access times).
  CREATE TABLE store_totals (
    id           INTEGER PRIMARY KEY CHECK (id = 1),
    blobs        INTEGER NOT NULL,
    bytes        INTEGER NOT NULL,
    pinned_bytes INTEGER NOT NULL
  );
  INSERT INTO store_totals SELECT 1, count(*), coalesce(sum(size), 0), coalesce(sum(CASE WHEN pinned = 1 THEN size ELSE 0 END), 0) FROM blobs;
  CREATE TRIGGER blobs_totals_insert AFTER INSERT ON blobs BEGIN
    UPDATE store_totals SET blobs = blobs + 1, bytes = bytes + new.size, pinned_bytes = pinned_bytes + CASE WHEN new.pinned = 1 THEN new.size ELSE 0 END;
  END;
  CREATE TRIGGER blobs_totals_delete AFTER DELETE ON blobs BEGIN
    UPDATE store_totals SET blobs = blobs - 1, bytes = bytes - old.size, pinned_bytes = pinned_bytes - CASE WHEN old.pinned = 1 THEN old.size ELSE 0 END;
  END;
  CREATE TRIGGER blobs_totals_update AFTER UPDATE OF size, pinned ON blobs BEGIN
    UPDATE store_totals SET bytes = bytes - old.size + new.size,
      pinned_bytes = pinned_bytes - CASE WHEN old.pinned = 1 THEN old.size ELSE 0 END + CASE WHEN new.pinned = 1 THEN new.size ELSE 0 END;
  END;
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Brings the database to SCHEMA_VERSION; refuses one written by a newer regmirror. */
export function migrate(db: Database.Database): void {
  const version = db.pragma('user_version', { simple: true }) as number;
  if (version > MIGRATIONS.length) {
    throw new Error(`metadata: database schema version ${version} is newer than this regmirror (${MIGRATIONS.length}); upgrade regmirror`);
  }
  for (let v = version; v < MIGRATIONS.length; v++) {
    db.transaction(() => {
      db.exec(MIGRATIONS[v]);
      db.pragma(`user_version = ${v + 1}`);
    })();
  }
}

/**
 * How long a write waits for another process's lock. Writes on the request path wait:
 * their row matters. The timed flush only moves counters, so it gives up almost at once
 * and tries again at the next tick rather than holding the event loop in SQLite's busy
 * handler while `cache pin` or `gc` holds the lock.
 */
export const BUSY_TIMEOUT_MS = 5000;
export const FLUSH_BUSY_TIMEOUT_MS = 20;

/** SQLite's own default: the commit that takes the WAL past this many pages checkpoints it. */
const CHECKPOINT_PAGES = 1000;
/** For an eviction batch's commit: 16 MiB of 4 KiB pages. */
const EVICT_CHECKPOINT_PAGES = 4096;

/**
 * Runs `fn` (an eviction batch's transaction) letting the WAL grow to EVICT_CHECKPOINT_PAGES
 * before its commit checkpoints it. A batch rewrites a thousand pages or so, and a
 * checkpoint (two fsyncs) after every batch was most of what a pass waited for; pages that
 * consecutive batches rewrite (the LRU index's) are then checkpointed once.
 */
export function checkpointingLess<T>(db: Database.Database, fn: () => T): T {
  db.pragma(`wal_autocheckpoint = ${EVICT_CHECKPOINT_PAGES}`);
  try {
    return fn();
  } finally {
    if (db.open) db.pragma(`wal_autocheckpoint = ${CHECKPOINT_PAGES}`);
  }
}

/**
 * Opens the SQLite file for a SqliteMetadataStore: migrated, WAL, and waiting `busyTimeoutMs` for
 * the write lock, since prewarm, import and gc open the same file beside a running server.
 */
export function openDatabase(path: string, busyTimeoutMs: number): Database.Database {
  const db = new Database(path);
  db.pragma(`busy_timeout = ${busyTimeoutMs}`);
  try {
    // Refuse a newer schema before changing anything in the file (not even its journal mode).
    migrate(db);
  } catch (err) {
    db.close();
    throw err;
  }
  db.pragma('journal_mode = WAL');
  db.pragma('synchronous = NORMAL');
  // The WAL is reused, not shrunk, after a checkpoint: without a limit it stays at its
  // high-water mark (4 MB and up), a good part of a small cache's footprint.
  db.pragma('journal_size_limit = 1048576');
  return db;
}
