// Guarded tags on PostgreSQL, where replicas meet (see ../guarded-tags.ts). Every call is
// one statement, so two replicas seeing a tag at once guard it once and record its
// change once.
import { toGuardedTag, type GuardAction, type GuardedTag, type GuardedTagStore, type GuardKey, type RawGuardedTag } from '../guarded-tags.js';
import type { Queries, Statement } from './connection.js';

const q = (name: string, text: string): Statement => ({ name: `regmirror.guard.${name}`, text });
const COLUMNS =
  'upstream, repository, tag, class, digest, guarded_at AS "guardedAt", change_digest AS "changeDigest", change_since AS "changeSince", change_action AS "changeAction"';
const KEY = 'upstream = $1 AND repository = $2 AND tag = $3 AND class = $4';

const GET = q('get', `SELECT ${COLUMNS} FROM guarded_tags WHERE ${KEY}`);
/** Inserts unless guarded already, then reads the row in force, in one round trip. */
const GUARD = q(
  'guard',
  `WITH added AS (
     INSERT INTO guarded_tags (upstream, repository, tag, class, digest, guarded_at) VALUES ($1, $2, $3, $4, $5, $6)
     ON CONFLICT DO NOTHING RETURNING ${COLUMNS})
   SELECT * FROM added UNION ALL SELECT ${COLUMNS} FROM guarded_tags WHERE ${KEY} AND NOT EXISTS (SELECT 1 FROM added)`,
);
const RECORD = q(
  'record',
  `UPDATE guarded_tags SET change_digest = $5, change_since = $6, change_action = $7
   WHERE ${KEY} AND digest <> $5 AND change_digest IS DISTINCT FROM $5`,
);
const CLEAR = q('clear', `UPDATE guarded_tags SET change_digest = NULL, change_since = NULL, change_action = NULL WHERE ${KEY} AND change_digest IS NOT NULL`);
/** The rows before the update: a CTE's SELECT sees the snapshot the UPDATE started from. */
const ACCEPT = q(
  'accept',
  `WITH before AS (SELECT ${COLUMNS} FROM guarded_tags WHERE upstream = $1 AND repository = $2 AND tag = $3 AND change_digest IS NOT NULL FOR UPDATE),
   done AS (
     UPDATE guarded_tags g SET digest = g.change_digest, guarded_at = $4, change_digest = NULL, change_since = NULL, change_action = NULL
     FROM before b WHERE g.upstream = b.upstream AND g.repository = b.repository AND g.tag = b.tag AND g.class = b.class)
   SELECT * FROM before ORDER BY class`,
);
const CHANGES = q('changes', `SELECT ${COLUMNS} FROM guarded_tags WHERE change_digest IS NOT NULL ORDER BY upstream, repository, tag, class`);

export class PostgresGuardedTags implements GuardedTagStore {
  readonly #db: Queries;
  readonly #now: () => number;

  constructor(db: Queries, now: () => number) {
    this.#db = db;
    this.#now = now;
  }

  async get(k: GuardKey): Promise<GuardedTag | undefined> {
    const [row] = await this.#db.rows<RawGuardedTag>(GET, keyOf(k));
    return row && toGuardedTag(row);
  }

  async guard(k: GuardKey, digest: string): Promise<GuardedTag> {
    // A row another replica inserted after this statement's snapshot conflicts but is not
    // read: the next statement sees it.
    for (let attempt = 0; ; attempt++) {
      const [row] = await this.#db.rows<RawGuardedTag>(GUARD, [...keyOf(k), digest, this.#now()]);
      if (row) return toGuardedTag(row);
      if (attempt === 2) throw new Error(`guarded tag ${k.repository}:${k.tag} neither inserted nor found`);
    }
  }

  async recordChange(k: GuardKey, digest: string, action: GuardAction): Promise<boolean> {
    return (await this.#db.changes(RECORD, [...keyOf(k), digest, this.#now(), action])) > 0;
  }

  async clearChange(k: GuardKey): Promise<void> {
    await this.#db.changes(CLEAR, keyOf(k));
  }

  async accept(upstream: string, repository: string, tag: string): Promise<GuardedTag[]> {
    return (await this.#db.rows<RawGuardedTag>(ACCEPT, [upstream, repository, tag, this.#now()])).map(toGuardedTag);
  }

  async changes(): Promise<GuardedTag[]> {
    return (await this.#db.rows<RawGuardedTag>(CHANGES)).map(toGuardedTag);
  }
}

function keyOf(k: GuardKey): string[] {
  return [k.upstream, k.repository, k.tag, k.class];
}
