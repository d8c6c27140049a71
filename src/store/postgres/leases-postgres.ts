// Leases on PostgreSQL, where replicas on different hosts meet. Every call is one
// statement (an upsert that only takes an expired lease or one of its own holder), so two
// replicas asking at once cannot both win.
import type { Lease, LeaseStore } from '../leases.js';
import type { Queries, Statement } from './connection.js';

const q = (name: string, text: string): Statement => ({ name: `regmirror.lease.${name}`, text });
const COLUMNS = 'key, holder, data, expires_at AS "expiresAt"';

/** Inserts, or takes over an expired lease or one `holder` has; then reads what is in force, in one round trip. */
const ACQUIRE = q(
  'acquire',
  `WITH taken AS (
     INSERT INTO leases AS l (key, holder, data, expires_at) VALUES ($1, $2, $3, $4)
     ON CONFLICT (key) DO UPDATE SET holder = EXCLUDED.holder, data = EXCLUDED.data, expires_at = EXCLUDED.expires_at
     WHERE l.expires_at <= $5 OR l.holder = EXCLUDED.holder
     RETURNING ${COLUMNS})
   SELECT * FROM taken UNION ALL SELECT ${COLUMNS} FROM leases WHERE key = $1 AND NOT EXISTS (SELECT 1 FROM taken)`,
);
const TAKE_OVER = q(
  'take-over',
  `WITH moved AS (
     UPDATE leases SET holder = $3, data = $4, expires_at = $5 WHERE key = $1 AND holder = $2 RETURNING ${COLUMNS})
   SELECT * FROM moved`,
);
const RENEW = q('renew', 'UPDATE leases SET expires_at = $3 WHERE holder = $1 AND key = ANY($2::text[]) RETURNING key');
const RELEASE = q('release', 'DELETE FROM leases WHERE key = $1 AND holder = $2');
const LIST = q('list', `SELECT ${COLUMNS} FROM leases WHERE left(key, length($1)) = $1 AND expires_at > $2 ORDER BY key`);
const PRUNE = q('prune', 'DELETE FROM leases WHERE expires_at < $1');

interface RawLease {
  key: string;
  holder: string;
  data: string | null;
  expiresAt: number;
}

export class PostgresLeases implements LeaseStore {
  readonly #db: Queries;
  readonly #now: () => number;

  constructor(db: Queries, now: () => number) {
    this.#db = db;
    this.#now = now;
  }

  async acquire(key: string, holder: string, ttlMs: number, data?: string): Promise<Lease> {
    const now = this.#now();
    for (;;) {
      const [row] = await this.#db.rows<RawLease>(ACQUIRE, [key, holder, data ?? null, now + ttlMs, now]);
      // Released between the upsert's conflict and the read: ask again.
      if (row) return toLease(row);
    }
  }

  async takeOver(key: string, from: string, holder: string, ttlMs: number, data?: string): Promise<Lease> {
    const [row] = await this.#db.rows<RawLease>(TAKE_OVER, [key, from, holder, data ?? null, this.#now() + ttlMs]);
    return row ? toLease(row) : this.acquire(key, holder, ttlMs, data);
  }

  async renew(holder: string, keys: readonly string[], ttlMs: number): Promise<string[]> {
    if (keys.length === 0) return [];
    const rows = await this.#db.rows<{ key: string }>(RENEW, [holder, [...keys], this.#now() + ttlMs]);
    return rows.map((r) => r.key);
  }

  async release(key: string, holder: string): Promise<void> {
    await this.#db.changes(RELEASE, [key, holder]);
  }

  async list(prefix: string): Promise<Lease[]> {
    return (await this.#db.rows<RawLease>(LIST, [prefix, this.#now()])).map(toLease);
  }

  prune(olderThanMs: number): Promise<number> {
    return this.#db.changes(PRUNE, [this.#now() - olderThanMs]);
  }
}

function toLease(r: RawLease): Lease {
  return { key: r.key, holder: r.holder, expiresAt: Number(r.expiresAt), ...(r.data === null ? {} : { data: r.data }) };
}
