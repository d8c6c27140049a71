// Guarded tags in the SQLite file (see ../guarded-tags.ts). Each call is one statement or
// one transaction: a `tags accept` beside a running server writes the same file.
import type Database from 'better-sqlite3';
import { toGuardedTag, type GuardAction, type GuardedTag, type GuardedTagStore, type GuardKey, type RawGuardedTag } from '../guarded-tags.js';
import { busy } from './busy.js';
import { Statements } from './statements.js';

const COLUMNS =
  'upstream, repository, tag, class, digest, guarded_at AS guardedAt, change_digest AS changeDigest, change_since AS changeSince, change_action AS changeAction';
const KEY = 'upstream = ? AND repository = ? AND tag = ? AND class = ?';

export class SqliteGuardedTags implements GuardedTagStore {
  readonly #now: () => number;
  readonly #sql: Statements;

  constructor(db: Database.Database, now: () => number) {
    this.#sql = new Statements(db);
    this.#now = now;
  }

  async get(k: GuardKey): Promise<GuardedTag | undefined> {
    return busy(() => this.#get(k));
  }

  async guard(k: GuardKey, digest: string): Promise<GuardedTag> {
    const sql = 'INSERT INTO guarded_tags (upstream, repository, tag, class, digest, guarded_at) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT DO NOTHING';
    return this.#sql.tx(() => {
      this.#sql.get(sql).run(k.upstream, k.repository, k.tag, k.class, digest, this.#now());
      return this.#get(k)!;
    });
  }

  async recordChange(k: GuardKey, digest: string, action: GuardAction): Promise<boolean> {
    const sql = `UPDATE guarded_tags SET change_digest = ?, change_since = ?, change_action = ? WHERE ${KEY} AND digest <> ? AND change_digest IS NOT ?`;
    return busy(() => this.#sql.get(sql).run(digest, this.#now(), action, ...keyOf(k), digest, digest).changes > 0);
  }

  async clearChange(k: GuardKey): Promise<void> {
    const sql = `UPDATE guarded_tags SET change_digest = NULL, change_since = NULL, change_action = NULL WHERE ${KEY} AND change_digest IS NOT NULL`;
    busy(() => this.#sql.get(sql).run(...keyOf(k)));
  }

  async accept(upstream: string, repository: string, tag: string): Promise<GuardedTag[]> {
    const select = `SELECT ${COLUMNS} FROM guarded_tags WHERE upstream = ? AND repository = ? AND tag = ? AND change_digest IS NOT NULL ORDER BY class`;
    const update =
      'UPDATE guarded_tags SET digest = change_digest, guarded_at = ?, change_digest = NULL, change_since = NULL, change_action = NULL WHERE upstream = ? AND repository = ? AND tag = ? AND change_digest IS NOT NULL';
    return this.#sql.tx(() => {
      const rows = (this.#sql.get(select).all(upstream, repository, tag) as RawGuardedTag[]).map(toGuardedTag);
      this.#sql.get(update).run(this.#now(), upstream, repository, tag);
      return rows;
    });
  }

  async changes(): Promise<GuardedTag[]> {
    const sql = `SELECT ${COLUMNS} FROM guarded_tags WHERE change_digest IS NOT NULL ORDER BY upstream, repository, tag, class`;
    return busy(() => (this.#sql.get(sql).all() as RawGuardedTag[]).map(toGuardedTag));
  }

  #get(k: GuardKey): GuardedTag | undefined {
    const row = this.#sql.get(`SELECT ${COLUMNS} FROM guarded_tags WHERE ${KEY}`).get(...keyOf(k)) as RawGuardedTag | undefined;
    return row && toGuardedTag(row);
  }


}

function keyOf(k: GuardKey): [string, string, string, string] {
  return [k.upstream, k.repository, k.tag, k.class];
}
