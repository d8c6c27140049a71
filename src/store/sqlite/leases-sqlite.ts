// Leases in the SQLite file. One host only, but several processes may share the file
// (a server beside prewarm or import), so each call is one statement or one transaction.
import type Database from 'better-sqlite3';
import type { Lease, LeaseStore } from '../leases.js';
import { busy } from './busy.js';
import { Statements } from './statements.js';

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
  readonly #now: () => number;
  readonly #sql: Statements;

  constructor(db: Database.Database, now: () => number) {
    this.#sql = new Statements(db);
    this.#now = now;
  }

  async acquire(key: string, holder: string, ttlMs: number, data?: string): Promise<Lease> {
    const now = this.#now();
    return this.#sql.tx(() => {
      this.#sql.get(UPSERT).run(key, holder, data ?? null, now + ttlMs, now);
      return this.#get(key)!;
    });
  }

  async takeOver(key: string, from: string, holder: string, ttlMs: number, data?: string): Promise<Lease> {
    const now = this.#now();
    return this.#sql.tx(() => {
      this.#sql.get('UPDATE leases SET holder = ?, data = ?, expires_at = ? WHERE key = ? AND holder = ?').run(holder, data ?? null, now + ttlMs, key, from);
      this.#sql.get(UPSERT).run(key, holder, data ?? null, now + ttlMs, now);
      return this.#get(key)!;
    });
  }

  async renew(holder: string, keys: readonly string[], ttlMs: number): Promise<string[]> {
    const until = this.#now() + ttlMs;
    const stmt = this.#sql.get('UPDATE leases SET expires_at = ? WHERE key = ? AND holder = ?');
    return this.#sql.tx(() => keys.filter((k) => stmt.run(until, k, holder).changes > 0));
  }

  async release(key: string, holder: string): Promise<void> {
    busy(() => this.#sql.get('DELETE FROM leases WHERE key = ? AND holder = ?').run(key, holder));
  }

  async list(prefix: string): Promise<Lease[]> {
    const sql = `SELECT ${COLUMNS} FROM leases WHERE substr(key, 1, ?) = ? AND expires_at > ? ORDER BY key`;
    const rows = busy(() => this.#sql.get(sql).all(prefix.length, prefix, this.#now()) as RawLease[]);
    return rows.map(toLease);
  }

  async prune(olderThanMs: number): Promise<number> {
    return busy(() => this.#sql.get('DELETE FROM leases WHERE expires_at < ?').run(this.#now() - olderThanMs).changes);
  }

  #get(key: string): Lease | undefined {
    const row = this.#sql.get(`SELECT ${COLUMNS} FROM leases WHERE key = ?`).get(key) as RawLease | undefined;
    return row && toLease(row);
  }


}

function toLease(r: RawLease): Lease {
  return { key: r.key, holder: r.holder, expiresAt: r.expiresAt, ...(r.data === null ? {} : { data: r.data }) };
}
