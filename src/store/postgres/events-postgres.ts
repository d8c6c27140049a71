// Events on PostgreSQL, shared by the replicas: an append is one INSERT of arrays, every
// call one statement.
import { DEFAULT_EVENT_LIMIT, toEvent, type EventQuery, type EventRow, type EventStore, type RawEvent, type StoredEvent } from '../events.js';
import type { Queries, Statement } from './connection.js';

const q = (name: string, text: string): Statement => ({ name: `regmirror.events.${name}`, text });

const APPEND = q(
  'append',
  `INSERT INTO events (at, kind, upstream, repository, tag, digest, message, details, count)
   SELECT at, kind, upstream, repository, tag, digest, message, details, count FROM unnest($1::bigint[], $2::text[], $3::text[], $4::text[], $5::text[], $6::text[], $7::text[], $8::text[], $9::bigint[]) WITH ORDINALITY AS t(at, kind, upstream, repository, tag, digest, message, details, count, n)
   ORDER BY n`,
);
const LIST = q(
  'list',
  `SELECT id, at, kind, upstream, repository, tag, digest, message, details, count FROM events
   WHERE at >= $1 AND at < $2 AND ($3::text[] IS NULL OR kind = ANY($3::text[])) ORDER BY at DESC, id DESC LIMIT $4`,
);
const COUNT = q('count', 'SELECT kind, sum(count)::bigint AS n FROM events WHERE at >= $1 GROUP BY kind ORDER BY kind');
const PRUNE = q('prune', 'DELETE FROM events WHERE at < $1');

export class PostgresEvents implements EventStore {
  readonly #db: Queries;

  constructor(db: Queries) {
    this.#db = db;
  }

  async append(rows: readonly EventRow[]): Promise<void> {
    if (rows.length === 0) return;
    const col = <T>(f: (r: EventRow) => T) => rows.map(f);
    await this.#db.changes(APPEND, [
      col((r) => r.at),
      col((r) => r.kind),
      col((r) => r.upstream ?? null),
      col((r) => r.repository ?? null),
      col((r) => r.tag ?? null),
      col((r) => r.digest ?? null),
      col((r) => r.message),
      col((r) => (r.details ? JSON.stringify(r.details) : null)),
      col((r) => r.count ?? 1),
    ]);
  }

  async list(query: EventQuery = {}): Promise<StoredEvent[]> {
    const kinds = query.kinds?.length ? [...query.kinds] : null;
    const rows = await this.#db.rows<RawEvent>(LIST, [query.since ?? 0, query.until ?? Number.MAX_SAFE_INTEGER, kinds, query.limit ?? DEFAULT_EVENT_LIMIT]);
    return rows.map(toEvent);
  }

  async countByKind(since: number): Promise<Record<string, number>> {
    const rows = await this.#db.rows<{ kind: string; n: number }>(COUNT, [since]);
    return Object.fromEntries(rows.map((r) => [r.kind, Number(r.n)]));
  }

  prune(before: number): Promise<number> {
    return this.#db.changes(PRUNE, [before]);
  }
}
