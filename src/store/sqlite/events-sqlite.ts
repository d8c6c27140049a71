// Events in the SQLite file: one statement per call, an append in one transaction.
import type Database from 'better-sqlite3';
import { DEFAULT_EVENT_LIMIT, toEvent, type EventQuery, type EventRow, type EventStore, type RawEvent, type StoredEvent } from '../events.js';
import { busy } from './busy.js';
import { Statements } from './statements.js';

const INSERT = 'INSERT INTO events (at, kind, upstream, repository, tag, digest, message, details, count) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)';
// Absent bounds are the widest ones, so one statement serves every query.
const LIST = 'SELECT * FROM events WHERE at >= ? AND at < ? AND (? IS NULL OR kind IN (SELECT value FROM json_each(?))) ORDER BY at DESC, id DESC LIMIT ?';
const COUNT = 'SELECT kind, sum(count) AS n FROM events WHERE at >= ? GROUP BY kind ORDER BY kind';
const PRUNE = 'DELETE FROM events WHERE at < ?';

export class SqliteEvents implements EventStore {
  readonly #sql: Statements;

  constructor(db: Database.Database) {
    this.#sql = new Statements(db);
  }

  async append(rows: readonly EventRow[]): Promise<void> {
    if (rows.length === 0) return;
    const insert = this.#sql.get(INSERT);
    const all = () => {
      for (const r of rows) insert.run(r.at, r.kind, r.upstream ?? null, r.repository ?? null, r.tag ?? null, r.digest ?? null, r.message, r.details ? JSON.stringify(r.details) : null, r.count ?? 1);
    };
    this.#sql.tx(all);
  }

  async list(q: EventQuery = {}): Promise<StoredEvent[]> {
    const kinds = q.kinds?.length ? JSON.stringify(q.kinds) : null;
    const rows = busy(() => this.#sql.get(LIST).all(q.since ?? 0, q.until ?? Number.MAX_SAFE_INTEGER, kinds, kinds, q.limit ?? DEFAULT_EVENT_LIMIT) as RawEvent[]);
    return rows.map(toEvent);
  }

  async countByKind(since: number): Promise<Record<string, number>> {
    const rows = busy(() => this.#sql.get(COUNT).all(since) as Array<{ kind: string; n: number }>);
    return Object.fromEntries(rows.map((r) => [r.kind, r.n]));
  }

  async prune(before: number): Promise<number> {
    return busy(() => this.#sql.get(PRUNE).run(before).changes);
  }

}
