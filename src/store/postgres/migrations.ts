// The PostgreSQL schema: numbered migrations with the tables and meaning of the SQLite
// ones (src/store/migrations.ts) in PostgreSQL's types. The version lives in a one-row
// table; migrating holds a transaction-scoped advisory lock, so replicas that start
// together migrate once and the others find the work done.
import type pg from 'pg';

/** Migration N (1-based) brings the schema from version N-1 to N. Append only. */
export const MIGRATIONS: readonly string[] = [
  `
  -- Key columns compare bytewise (COLLATE "C"), as SQLite's TEXT does: orderings and
  -- uniqueness are the same on both backends whatever the database's locale.

  -- Every published blob, manifest bodies included: the blob store holds its bytes once
  -- the row exists. Times are ms since the epoch; last_access and hits are batched.
  -- version: the blob store's opaque version of the content at publish (checked at open).
  -- pinned: set by importing a bundle or cache pin; a pinned blob is never evicted.
  CREATE TABLE blobs (
    digest      TEXT COLLATE "C" PRIMARY KEY,
    size        BIGINT NOT NULL,
    created_at  BIGINT NOT NULL,
    last_access BIGINT NOT NULL,
    hits        BIGINT NOT NULL DEFAULT 0,
    pinned      BOOLEAN NOT NULL DEFAULT false,
    version     TEXT
  );
  -- The evictor's walk: unpinned blobs, least recently used first (digest breaks ties).
  CREATE INDEX blobs_lru ON blobs (pinned, last_access, digest);

  -- Which blobs are manifests, and of which media type.
  CREATE TABLE manifests (
    digest     TEXT COLLATE "C" PRIMARY KEY,
    media_type TEXT NOT NULL
  );

  -- A blob or manifest is served for a repository only when it is linked to it.
  CREATE TABLE links (
    upstream   TEXT COLLATE "C" NOT NULL,
    repository TEXT COLLATE "C" NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    PRIMARY KEY (upstream, repository, digest)
  );
  CREATE INDEX links_digest ON links (digest);

  -- A tag resolves per Accept class (bitmask of manifest types the client takes). A
  -- pinned tag (imported) is fresh whatever expires_at says.
  CREATE TABLE tags (
    upstream   TEXT COLLATE "C" NOT NULL,
    repository TEXT COLLATE "C" NOT NULL,
    tag        TEXT COLLATE "C" NOT NULL,
    accept     INTEGER NOT NULL,
    digest     TEXT COLLATE "C" NOT NULL,
    media_type TEXT NOT NULL,
    fetched_at BIGINT NOT NULL,
    expires_at BIGINT NOT NULL,
    pinned     BOOLEAN NOT NULL DEFAULT false,
    PRIMARY KEY (upstream, repository, tag, accept)
  );

  -- The last rate-limit budget each upstream reported, per credential (username or anonymous).
  CREATE TABLE rate_limits (
    upstream    TEXT COLLATE "C" NOT NULL,
    credential  TEXT COLLATE "C" NOT NULL,
    limit_n     BIGINT,
    remaining   BIGINT,
    window_s    BIGINT,
    source      TEXT,
    observed_at BIGINT NOT NULL,
    PRIMARY KEY (upstream, credential)
  );

  -- Hourly roll-ups: upstream requests by kind, pulls served, hits, bytes by source.
  CREATE TABLE rollups (
    hour     BIGINT NOT NULL,
    upstream TEXT COLLATE "C" NOT NULL,
    metric   TEXT COLLATE "C" NOT NULL,
    value    BIGINT NOT NULL,
    PRIMARY KEY (hour, upstream, metric)
  );
  `,
  `
  -- Claims that replicas take on a piece of work (a download, a tag's revalidation, an
  -- eviction pass); see src/store/leases.ts. Never exported.
  CREATE TABLE leases (
    key        TEXT COLLATE "C" PRIMARY KEY,
    holder     TEXT COLLATE "C" NOT NULL,
    data       TEXT,
    expires_at BIGINT NOT NULL
  );
  `,
  `
  -- Hourly roll-ups per subject: a repository's pulls and bytes served, a credential's
  -- lowest budget (see SubjectMetric in src/store/rows.ts).
  CREATE TABLE subject_rollups (
    hour     BIGINT NOT NULL,
    upstream TEXT COLLATE "C" NOT NULL,
    subject  TEXT COLLATE "C" NOT NULL,
    metric   TEXT COLLATE "C" NOT NULL,
    value    BIGINT NOT NULL,
    PRIMARY KEY (hour, upstream, subject, metric)
  );
  CREATE INDEX subject_rollups_metric ON subject_rollups (metric, hour);
  `,
  `
  -- Immutable tags (tag policies): the digest each is held to, per class of clients, and
  -- the change the upstream made that nobody accepted yet; see src/store/guarded-tags.ts.
  CREATE TABLE guarded_tags (
    upstream      TEXT COLLATE "C" NOT NULL,
    repository    TEXT COLLATE "C" NOT NULL,
    tag           TEXT COLLATE "C" NOT NULL,
    class         TEXT COLLATE "C" NOT NULL,
    digest        TEXT COLLATE "C" NOT NULL,
    guarded_at    BIGINT NOT NULL,
    change_digest TEXT COLLATE "C",
    change_since  BIGINT,
    change_action TEXT,
    PRIMARY KEY (upstream, repository, tag, class)
  );
  `,
  `
  -- What the mirror told its operators (src/store/events.ts): appended in batches, listed
  -- newest first, pruned past the retention. details is a JSON object. Never exported.
  CREATE TABLE events (
    id         BIGINT GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at         BIGINT NOT NULL,
    kind       TEXT COLLATE "C" NOT NULL,
    upstream   TEXT COLLATE "C",
    repository TEXT COLLATE "C",
    tag        TEXT COLLATE "C",
    digest     TEXT COLLATE "C",
    message    TEXT NOT NULL,
    details    TEXT,
    count      BIGINT NOT NULL DEFAULT 1
  );
  CREATE INDEX events_at ON events (at);
  CREATE INDEX events_kind_at ON events (kind, at);
  `,
];

export const SCHEMA_VERSION = MIGRATIONS.length;

/** Any constant will do, as long as nothing else sharing the database takes the same one ("regmir"). */
const MIGRATION_LOCK = '125779852487026';

/**
 * Brings the database to SCHEMA_VERSION in one transaction; refuses (changing nothing) a
 * database written by a newer regmirror. Returns the version it found.
 * DDL runs as simple queries: a migration is several statements, which a prepared
 * statement cannot be.
 */
export async function migrate(client: pg.ClientBase): Promise<number> {
  await client.query('BEGIN');
  try {
    await client.query({ name: 'regmirror.migrate.lock', text: 'SELECT pg_advisory_xact_lock($1::bigint)', values: [MIGRATION_LOCK] });
    await client.query('CREATE TABLE IF NOT EXISTS regmirror_schema (one BOOLEAN PRIMARY KEY DEFAULT true CHECK (one), version INTEGER NOT NULL)');
    const found = await readVersion(client);
    if (found > MIGRATIONS.length) {
      throw new Error(`metadata: database schema version ${found} is newer than this regmirror (${MIGRATIONS.length}); upgrade regmirror`);
    }
    for (let v = found; v < MIGRATIONS.length; v++) await client.query(MIGRATIONS[v]);
    if (found < MIGRATIONS.length) {
      await client.query({
        name: 'regmirror.migrate.set',
        text: 'INSERT INTO regmirror_schema (one, version) VALUES (true, $1) ON CONFLICT (one) DO UPDATE SET version = EXCLUDED.version',
        values: [MIGRATIONS.length],
      });
    }
    await client.query('COMMIT');
    return found;
  } catch (err) {
    await client.query('ROLLBACK').catch(() => {});
    throw err;
  }
}

/** The number of migrations the database has run (0 for an empty one). */
export async function readVersion(client: Pick<pg.ClientBase, 'query'>): Promise<number> {
  const r = await client.query<{ version: number }>({ name: 'regmirror.schema.version', text: 'SELECT version FROM regmirror_schema' });
  return r.rows[0]?.version ?? 0;
}
