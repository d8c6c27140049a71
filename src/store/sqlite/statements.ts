// The prepared statements of one SQLite sub-store (leases, events, guarded tags), each
// prepared once, and its writing transactions, which take the write lock at the start as
// every writing transaction of this file does.
import type Database from 'better-sqlite3';
import { busy } from './busy.js';

export class Statements {
  readonly #db: Database.Database;
  readonly #prepared = new Map<string, Database.Statement>();

  constructor(db: Database.Database) {
    this.#db = db;
  }

  get(sql: string): Database.Statement {
    let st = this.#prepared.get(sql);
    if (!st) {
      st = this.#db.prepare(sql);
      this.#prepared.set(sql, st);
    }
    return st;
  }

  tx<T>(fn: () => T): T {
    return busy(() => this.#db.transaction(fn).immediate());
  }
}
