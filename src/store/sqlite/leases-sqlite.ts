// Leases in the SQLite file. One host only, but several processes may share the file
// (a server beside prewarm or import), so each call is one statement or one transaction.
import type Database from 'better-sqlite3';
import type { Lease, LeaseStore } from '../leases.js';
import { busy } from './busy.js';

interface RawLease {
  key: string;
  holder: string;
  data: string | null;
  expiresAt: number;
}

const COLUMNS = 'key, holder, data, expires_at AS expiresAt';
const UPSERT = `INSERT INTO leases (key, holder, data, expires_at) VALUES (?, ?, ?, ?)
  ON CONFLICT (key) DO UPDATE SET holder = excluded.holder, data = excluded.data, expires_at = excluded.expires_at
  WHERE leases.expires_at <= ? OR leases.holder = excluded.holder`;

export class SqliteLeases implements LeaseStore {
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #statements = new Map<string, Database.Statement>();

  constructor(db: Database.Database, now: () => number) {
    this.#db = db;
    this.#now = now;
  }

  async acquire(key: string, holder: string, ttlMs: number, data?: string): Promise<Lease> {
    const now = this.#now();
    return this.#tx(() => {
      this.#stmt(UPSERT).run(key, holder, data ?? null, now + ttlMs, now);
      return this.#get(key)!;
    });
  }

  async takeOver(key: string, from: string, holder: string, ttlMs: number, data?: string): Promise<Lease> {
    const now = this.#now();
    return this.#tx(() => {
      this.#stmt('UPDATE leases SET holder = ?, data = ?, expires_at = ? WHERE key = ? AND holder = ?').run(holder, data ?? null, now + ttlMs, key, from);
      this.#stmt(UPSERT).run(key, holder, data ?? null, now + ttlMs, now);
      return this.#get(key)!;
    });
  }

  async renew(holder: string, keys: readonly string[], ttlMs: number): Promise<string[]> {
    const until = this.#now() + ttlMs;
    const stmt = this.#stmt('UPDATE leases SET expires_at = ? WHERE key = ? AND holder = ?');
    return this.#tx(() => keys.filter((k) => stmt.run(until, k, holder).changes > 0));
  }

  async release(key: string, holder: string): Promise<void> {
    busy(() => this.#stmt('DELETE FROM leases WHERE key = ? AND holder = ?').run(key, holder));
  }

  async list(prefix: string): Promise<Lease[]> {
    const sql = `SELECT ${COLUMNS} FROM leases WHERE substr(key, 1, ?) = ? AND expires_at > ? ORDER BY key`;
    const rows = busy(() => this.#stmt(sql).all(prefix.length, prefix, this.#now()) as RawLease[]);
    return rows.map(toLease);
  }

  async prune(olderThanMs: number): Promise<number> {
    return busy(() => this.#stmt('DELETE FROM leases WHERE expires_at < ?').run(this.#now() - olderThanMs).changes);
  }

  #get(key: string): Lease | undefined {
    const row = this.#stmt(`SELECT ${COLUMNS} FROM leases WHERE key = ?`).get(key) as RawLease | undefined;
    return row && toLease(row);
  }

  #stmt(sql: string): Database.Statement {
    let st = this.#statements.get(sql);
    if (!st) {
      st = this.#db.prepare(sql);
      this.#statements.set(sql, st);
    }
    return st;
  }

  /** Takes the write lock at the start, as every writing transaction of this file does. */
  #tx<T>(fn: () => T): T {
    return busy(() => this.#db.transaction(fn).immediate());
  }
}

function toLease(r: RawLease): Lease {
  return { key: r.key, holder: r.holder, expiresAt: r.expiresAt, ...(r.data === null ? {} : { data: r.data }) };
}
