// Every statement PostgresMetadataStore runs, each a named prepared statement. The SQL
// is the SQLite backend's, in PostgreSQL's dialect: INSERT OR REPLACE becomes an upsert
// that sets every column, INSERT OR IGNORE becomes ON CONFLICT DO NOTHING, and lists of
// digests travel as one array parameter instead of one statement per digest.
import type { Statement } from './connection.js';

const q = (name: string, text: string): Statement => ({ name: `regmirror.${name}`, text });

const TAG_COLUMNS = 'upstream, repository, tag, accept, digest, media_type AS "mediaType", fetched_at AS "fetchedAt", expires_at AS "expiresAt", pinned';

export const TAGS = {
  get: q('tag.get', 'SELECT digest, media_type AS "mediaType", fetched_at AS "fetchedAt", expires_at AS "expiresAt", pinned FROM tags WHERE upstream = $1 AND repository = $2 AND tag = $3 AND accept = $4'),
  rows: q('tag.rows', `SELECT ${TAG_COLUMNS} FROM tags WHERE upstream = $1 AND repository = $2 AND tag = $3 ORDER BY fetched_at DESC, accept DESC`),
  list: q('tag.list', `SELECT ${TAG_COLUMNS} FROM tags ORDER BY upstream, repository, tag, accept`),
  listRepository: q('tag.list-repository', `SELECT ${TAG_COLUMNS} FROM tags WHERE upstream = $1 AND repository = $2 ORDER BY tag, accept`),
  /** Replaces the whole row, pin included (INSERT OR REPLACE). */
  put: q(
    'tag.put',
    `INSERT INTO tags (upstream, repository, tag, accept, digest, media_type, fetched_at, expires_at, pinned) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)
     ON CONFLICT (upstream, repository, tag, accept) DO UPDATE SET digest = EXCLUDED.digest, media_type = EXCLUDED.media_type,
       fetched_at = EXCLUDED.fetched_at, expires_at = EXCLUDED.expires_at, pinned = EXCLUDED.pinned`,
  ),
  refresh: q('tag.refresh', 'UPDATE tags SET fetched_at = $1, expires_at = $2 WHERE upstream = $3 AND repository = $4 AND tag = $5 AND accept = $6'),
  setPinned: q('tag.set-pinned', 'UPDATE tags SET pinned = $1 WHERE upstream = $2 AND repository = $3 AND tag = $4'),
  remove: q('tag.remove', 'DELETE FROM tags WHERE upstream = $1 AND repository = $2 AND tag = $3'),
};

export const BLOBS = {
  get: q('blob.get', 'SELECT size, version, pinned FROM blobs WHERE digest = $1'),
  /** A blob recorded again keeps its creation time, access time, hits and pin; a new version replaces the old. */
  put: q(
    'blob.put',
    `INSERT INTO blobs (digest, size, created_at, last_access, version) VALUES ($1, $2, $3, $3, $4)
     ON CONFLICT (digest) DO UPDATE SET size = EXCLUDED.size, version = COALESCE(EXCLUDED.version, blobs.version)`,
  ),
  pin: q('blob.pin', 'UPDATE blobs SET pinned = true WHERE digest = $1'),
  setPinned: q('blob.set-pinned', 'UPDATE blobs SET pinned = $2 WHERE digest = ANY($1::text[])'),
  remove: q('blob.remove', 'DELETE FROM blobs WHERE digest = ANY($1::text[])'),
  // $2 null: whenever last used.
  evict: q('blob.evict', 'DELETE FROM blobs WHERE digest = ANY($1::text[]) AND pinned = false AND ($2::bigint IS NULL OR last_access <= $2) RETURNING digest'),
  // pinned = false (not NOT pinned) so that the planner walks blobs_lru in order.
  lru: q('blob.lru', 'SELECT digest, size, last_access AS "lastAccess" FROM blobs WHERE pinned = false ORDER BY last_access, digest LIMIT $1'),
  // The walk goes on past a position: the row comparison is a range of blobs_lru.
  lruAfter: q('blob.lru-after', 'SELECT digest, size, last_access AS "lastAccess" FROM blobs WHERE pinned = false AND (last_access, digest) > ($1, $2) ORDER BY last_access, digest LIMIT $3'),
  all: q('blob.all', 'SELECT digest, size FROM blobs ORDER BY digest'),
  page: q('blob.page', 'SELECT digest, size, pinned FROM blobs WHERE digest > $1 ORDER BY digest LIMIT $2'),
  known: q('blob.known', 'SELECT digest FROM blobs WHERE digest = ANY($1::text[])'),
  stats: q('blob.stats', 'SELECT last_access AS "lastAccess", hits FROM blobs WHERE digest = $1'),
  size: q(
    'blob.size',
    'SELECT count(*) AS blobs, COALESCE(sum(size), 0)::bigint AS bytes, COALESCE(sum(size) FILTER (WHERE pinned), 0)::bigint AS "pinnedBytes" FROM blobs',
  ),
};

export const MANIFESTS = {
  get: q('manifest.get', 'SELECT m.media_type AS "mediaType", b.size FROM manifests m JOIN blobs b USING (digest) WHERE m.digest = $1'),
  put: q('manifest.put', 'INSERT INTO manifests (digest, media_type) VALUES ($1, $2) ON CONFLICT (digest) DO UPDATE SET media_type = EXCLUDED.media_type'),
  remove: q('manifest.remove', 'DELETE FROM manifests WHERE digest = ANY($1::text[])'),
};

export const LINKS = {
  exists: q('link.exists', 'SELECT 1 AS one FROM links WHERE upstream = $1 AND repository = $2 AND digest = $3'),
  put: q('link.put', 'INSERT INTO links (upstream, repository, digest) VALUES ($1, $2, $3) ON CONFLICT DO NOTHING'),
  remove: q('link.remove', 'DELETE FROM links WHERE digest = ANY($1::text[])'),
};

export const COUNTS = {
  blobs: q('count.blobs', 'SELECT count(*) AS n FROM blobs'),
  manifests: q('count.manifests', 'SELECT count(*) AS n FROM manifests'),
  links: q('count.links', 'SELECT count(*) AS n FROM links'),
  tags: q('count.tags', 'SELECT count(*) AS n FROM tags'),
};

/**
 * gc: rows that point at nothing, as counts (dry run) or deletions. NOT EXISTS rather than
 * SQLite's NOT IN: the same rows (digests are never NULL), planned as an anti-join.
 */
export const RECONCILE = {
  links: { where: 'FROM links l WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = l.digest)' },
  manifests: { where: 'FROM manifests m WHERE NOT EXISTS (SELECT 1 FROM blobs b WHERE b.digest = m.digest)' },
  tags: { where: 'FROM tags t WHERE NOT EXISTS (SELECT 1 FROM manifests m WHERE m.digest = t.digest)' },
  rollups: { where: 'FROM rollups WHERE hour < $1' },
} as const;

/** gc: subject roll-ups go with the others, counted among them. */
export const reconcileSubjects = (dryRun: boolean): Statement =>
  dryRun
    ? q('reconcile.count.subject-rollups', 'SELECT count(*) AS n FROM subject_rollups WHERE hour < $1')
    : q('reconcile.delete.subject-rollups', 'DELETE FROM subject_rollups WHERE hour < $1');

export const reconcileStatement = (kind: keyof typeof RECONCILE, dryRun: boolean): Statement =>
  dryRun ? q(`reconcile.count.${kind}`, `SELECT count(*) AS n ${RECONCILE[kind].where}`) : q(`reconcile.delete.${kind}`, `DELETE ${RECONCILE[kind].where}`);

export const COUNTERS = {
  // Rows are locked in digest order first, so two replicas flushing overlapping batches
  // queue behind each other instead of deadlocking.
  lockTouched: q('counters.lock-touched', 'SELECT 1 FROM blobs WHERE digest = ANY($1::text[]) ORDER BY digest FOR UPDATE'),
  touch: q(
    'counters.touch',
    `UPDATE blobs b SET last_access = GREATEST(b.last_access, t.at), hits = b.hits + t.hits
     FROM unnest($1::text[], $2::bigint[], $3::bigint[]) AS t(digest, at, hits) WHERE b.digest = t.digest`,
  ),
  addRollups: q(
    'counters.add-rollups',
    `INSERT INTO rollups (hour, upstream, metric, value) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::bigint[])
     ON CONFLICT (hour, upstream, metric) DO UPDATE SET value = rollups.value + EXCLUDED.value`,
  ),
  // An observation older than the one on record (another replica's, flushed first) does not replace it.
  putRateLimits: q(
    'counters.put-rate-limits',
    `INSERT INTO rate_limits (upstream, credential, limit_n, remaining, window_s, source, observed_at)
     SELECT * FROM unnest($1::text[], $2::text[], $3::bigint[], $4::bigint[], $5::bigint[], $6::text[], $7::bigint[])
     ON CONFLICT (upstream, credential) DO UPDATE SET limit_n = EXCLUDED.limit_n, remaining = EXCLUDED.remaining, window_s = EXCLUDED.window_s,
       source = EXCLUDED.source, observed_at = EXCLUDED.observed_at
     WHERE rate_limits.observed_at <= EXCLUDED.observed_at`,
  ),
  rateLimits: q(
    'counters.rate-limits',
    'SELECT upstream, credential, limit_n AS "limit", remaining, window_s AS "windowSeconds", source, observed_at AS "observedAt" FROM rate_limits ORDER BY upstream, credential',
  ),
  // The lowest budget of an hour is kept by minimum; every other subject metric adds up.
  addSubjects: q(
    'counters.add-subjects',
    `INSERT INTO subject_rollups (hour, upstream, subject, metric, value) SELECT * FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::bigint[])
     ON CONFLICT (hour, upstream, subject, metric) DO UPDATE SET value = CASE WHEN subject_rollups.metric = 'budget_low'
       THEN LEAST(subject_rollups.value, EXCLUDED.value) ELSE subject_rollups.value + EXCLUDED.value END`,
  ),
  rollupHours: q('counters.rollup-hours', 'SELECT hour, upstream, metric AS key, value FROM rollups WHERE hour >= $1 ORDER BY hour, upstream, metric'),
  subjectHours: q(
    'counters.subject-hours',
    'SELECT hour, upstream, subject AS key, value FROM subject_rollups WHERE metric = $1 AND hour >= $2 ORDER BY hour, upstream, subject',
  ),
  topSubjects: q(
    'counters.top-subjects',
    `SELECT upstream, subject, sum(value)::bigint AS value FROM subject_rollups WHERE metric = $1 AND hour >= $2
     GROUP BY upstream, subject ORDER BY value DESC, upstream, subject LIMIT $3`,
  ),
  rollupsSince: q('counters.rollups-since', 'SELECT upstream, metric, sum(value)::bigint AS value FROM rollups WHERE hour >= $1 GROUP BY upstream, metric ORDER BY upstream, metric'),
};

export const SCHEMA = {
  version: q('schema.version', 'SELECT version FROM regmirror_schema'),
};
