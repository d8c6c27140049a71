// Moving a whole store in or out (`regmirror migrate`): every table read through a cursor
// in one snapshot, and loaded with one array-parameter INSERT per batch inside one
// transaction, so a copy is all or nothing and a million rows are a thousand statements.
import { StoreNotEmpty } from '../../errors.js';
import type { RowBatch, StoredRows } from '../metadata-store.js';
import type { Queries, Session, Statement } from './connection.js';

/** Rows per exported batch (and so per INSERT on import). */
export const EXPORT_BATCH = 1000;

type Table = keyof StoredRows;
type Row = Record<string, unknown>;

interface TableCopy {
  /** The SQL table. */
  sql: string;
  /** Read back under the interface's field names, in primary-key order. */
  select: string;
  /** Column name → [field, array type] for the unnest() of an import. */
  columns: Array<[column: string, field: string, type: string]>;
}

const TABLES: Record<Table, TableCopy> = {
  blobs: {
    sql: 'blobs',
    select: 'SELECT digest, size, created_at AS "createdAt", last_access AS "lastAccess", hits, pinned, version FROM blobs ORDER BY digest',
    columns: [['digest', 'digest', 'text'], ['size', 'size', 'bigint'], ['created_at', 'createdAt', 'bigint'], ['last_access', 'lastAccess', 'bigint'], ['hits', 'hits', 'bigint'], ['pinned', 'pinned', 'boolean'], ['version', 'version', 'text']],
  },
  manifests: {
    sql: 'manifests',
    select: 'SELECT digest, media_type AS "mediaType" FROM manifests ORDER BY digest',
    columns: [['digest', 'digest', 'text'], ['media_type', 'mediaType', 'text']],
  },
  links: {
    sql: 'links',
    select: 'SELECT upstream, repository, digest FROM links ORDER BY upstream, repository, digest',
    columns: [['upstream', 'upstream', 'text'], ['repository', 'repository', 'text'], ['digest', 'digest', 'text']],
  },
  tags: {
    sql: 'tags',
    select:
      'SELECT upstream, repository, tag, accept, digest, media_type AS "mediaType", fetched_at AS "fetchedAt", expires_at AS "expiresAt", pinned FROM tags ORDER BY upstream, repository, tag, accept',
    columns: [
      ['upstream', 'upstream', 'text'], ['repository', 'repository', 'text'], ['tag', 'tag', 'text'], ['accept', 'accept', 'integer'], ['digest', 'digest', 'text'],
      ['media_type', 'mediaType', 'text'], ['fetched_at', 'fetchedAt', 'bigint'], ['expires_at', 'expiresAt', 'bigint'], ['pinned', 'pinned', 'boolean'],
    ],
  },
  rateLimits: {
    sql: 'rate_limits',
    select:
      'SELECT upstream, credential, limit_n AS "limit", remaining, window_s AS "windowSeconds", source, observed_at AS "observedAt" FROM rate_limits ORDER BY upstream, credential',
    columns: [
      ['upstream', 'upstream', 'text'], ['credential', 'credential', 'text'], ['limit_n', 'limit', 'bigint'], ['remaining', 'remaining', 'bigint'],
      ['window_s', 'windowSeconds', 'bigint'], ['source', 'source', 'text'], ['observed_at', 'observedAt', 'bigint'],
    ],
  },
  rollups: {
    sql: 'rollups',
    select: 'SELECT hour, upstream, metric, value FROM rollups ORDER BY hour, upstream, metric',
    columns: [['hour', 'hour', 'bigint'], ['upstream', 'upstream', 'text'], ['metric', 'metric', 'text'], ['value', 'value', 'bigint']],
  },
  subjectRollups: {
    sql: 'subject_rollups',
    select: 'SELECT hour, upstream, subject, metric, value FROM subject_rollups ORDER BY hour, upstream, subject, metric',
    columns: [['hour', 'hour', 'bigint'], ['upstream', 'upstream', 'text'], ['subject', 'subject', 'text'], ['metric', 'metric', 'text'], ['value', 'value', 'bigint']],
  },
};

const ORDER = Object.keys(TABLES) as Table[];

const declare = (t: Table): Statement => ({ name: `regmirror.export.declare.${t}`, text: `DECLARE regmirror_export_${t} NO SCROLL CURSOR FOR ${TABLES[t].select}` });
const fetch = (t: Table): Statement => ({ name: `regmirror.export.fetch.${t}`, text: `FETCH FORWARD ${EXPORT_BATCH} FROM regmirror_export_${t}` });
const close = (t: Table): Statement => ({ name: `regmirror.export.close.${t}`, text: `CLOSE regmirror_export_${t}` });

/** Every row of every table, in batches of at most EXPORT_BATCH, from one snapshot. */
export function exportRows(session: Session): AsyncGenerator<RowBatch> {
  return session.snapshot(async function* (q) {
    for (const table of ORDER) {
      await q.changes(declare(table));
      for (;;) {
        const rows = (await q.rows<Row>(fetch(table))).map(withoutNulls);
        if (rows.length === 0) break;
        yield { table, rows } as RowBatch;
        if (rows.length < EXPORT_BATCH) break;
      }
      await q.changes(close(table));
    }
  });
}

/** Absent optional fields (a blob's version, a budget's limit) are omitted, as the row types say. */
function withoutNulls(r: Row): Row {
  return Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null));
}

const countAll: Statement = {
  name: 'regmirror.import.count',
  text: `SELECT ${ORDER.map((t) => `(SELECT count(*) FROM ${TABLES[t].sql}) AS "${t}"`).join(', ')}`,
};

const insert = (t: Table): Statement => {
  const cols = TABLES[t].columns;
  return {
    name: `regmirror.import.insert.${t}`,
    text: `INSERT INTO ${TABLES[t].sql} (${cols.map((c) => c[0]).join(', ')}) SELECT * FROM unnest(${cols.map((c, i) => `$${i + 1}::${c[2]}[]`).join(', ')})`,
  };
};

/**
 * Loads batches into this empty store in one transaction; refuses a store with any row.
 * Writers are shut out meanwhile (reads go on), so the store stays as found until commit.
 */
export async function importRows(session: Session, batches: AsyncIterable<RowBatch>): Promise<number> {
  return session.transaction(async (q) => {
    await q.changes({ name: 'regmirror.import.lock', text: `LOCK TABLE ${ORDER.map((t) => TABLES[t].sql).join(', ')} IN EXCLUSIVE MODE` });
    await refuseNonEmpty(q);
    let loaded = 0;
    for await (const batch of batches) {
      if (batch.rows.length === 0) continue;
      const columns = TABLES[batch.table].columns;
      const values = columns.map(([, field]) => (batch.rows as Row[]).map((r) => r[field] ?? null));
      loaded += await q.changes(insert(batch.table), values);
    }
    return loaded;
  }, { slow: true });
}

async function refuseNonEmpty(q: Queries): Promise<void> {
  const [counts] = await q.rows<Record<Table, number>>(countAll);
  const full = ORDER.find((t) => counts[t] > 0);
  if (full) throw new StoreNotEmpty(counts[full], TABLES[full].sql);
}
