// The SQLite metadata backend: better-sqlite3 in WAL mode, every statement prepared once.
// Calls are synchronous underneath (a query here costs microseconds, less than a hop to a
// thread); they answer through the async MetadataStore interface so that code above runs
// unchanged on PostgreSQL. Several processes may share the file (prewarm, import and gc
// beside a server): each multi-statement operation is one transaction.
import type Database from 'better-sqlite3';
import { StoreNotEmpty } from '../../errors.js';
import type { BlobRow, CountedTable, EvictionCandidate, ImportRecord, Link, LruPosition, ManifestRow, MetadataStore, PendingBatch, ReconcileCounts, RowBatch, StoreOptions, StoredRows } from '../metadata-store.js';
import type { GuardedTagStore } from '../guarded-tags.js';
import type { EventStore } from '../events.js';
import type { LeaseStore } from '../leases.js';
import { toTagEntry, type HourRow, type RateLimitRow, type RawTag, type RawTagEntry, type RepositoryKey, type RollupMetric, type SubjectMetric, type TagEntry, type TagKey, type TagRow } from '../rows.js';
import { busy } from './busy.js';
import { SqliteEvents } from './events-sqlite.js';
import { SqliteLeases } from './leases-sqlite.js';
import { SqliteGuardedTags } from './guarded-tags-sqlite.js';
import { BUSY_TIMEOUT_MS, checkpointingLess, FLUSH_BUSY_TIMEOUT_MS, openDatabase } from './migrations.js';

const HOUR = 3_600_000;
const EXPORT_BATCH = 1000;
const TAG_COLUMNS = 'upstream, repository, tag, accept, digest, media_type AS mediaType, fetched_at AS fetchedAt, expires_at AS expiresAt, pinned';
const PUT_BLOB =
  'INSERT INTO blobs (digest, size, created_at, last_access, version) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET size = excluded.size, version = coalesce(excluded.version, version)';
const PUT_TAG = 'INSERT OR REPLACE INTO tags (upstream, repository, tag, accept, digest, media_type, fetched_at, expires_at, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)';
const LINK = 'INSERT OR IGNORE INTO links (upstream, repository, digest) VALUES (?, ?, ?)';
const PUT_MANIFEST = 'INSERT OR REPLACE INTO manifests (digest, media_type) VALUES (?, ?)';
const ADD_SUBJECT =
  'INSERT INTO subject_rollups (hour, upstream, subject, metric, value) VALUES (?, ?, ?, ?, ?) ON CONFLICT (hour, upstream, subject, metric) ' +
  "DO UPDATE SET value = CASE WHEN metric = 'budget_low' THEN min(value, excluded.value) ELSE value + excluded.value END";
const NO_COUNTERS = (): PendingBatch => ({ touches: new Map(), rollups: new Map(), rateLimits: new Map() });
const hourOf = (ms: number) => Math.floor(ms / HOUR) * HOUR;


export class SqliteMetadataStore implements MetadataStore {
  readonly backend = 'sqlite' as const;
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #statements = new Map<string, Database.Statement>();
  readonly leases: LeaseStore;
  readonly guardedTags: GuardedTagStore;
  readonly events: EventStore;

  constructor(path: string, opts: StoreOptions = {}) {
    this.#now = opts.now ?? Date.now;
    this.#db = openDatabase(path, BUSY_TIMEOUT_MS);
    this.events = new SqliteEvents(this.#db);
    this.leases = new SqliteLeases(this.#db, this.#now);
    this.guardedTags = new SqliteGuardedTags(this.#db, this.#now);
  }

  async schemaVersion(): Promise<number> {
    return this.#db.pragma('user_version', { simple: true }) as number;
  }

  writeMark(): string | undefined {
    try {
      const m = this.#get<{ own: number; others: number }>('SELECT total_changes() AS own, data_version AS others FROM pragma_data_version');
      return m && `${m.own}:${m.others}`;
    } catch {
      return undefined;
    }
  }

  async getTag(k: TagKey): Promise<TagRow | undefined> {
    const row = this.#get<RawTag>(
      'SELECT digest, media_type AS mediaType, fetched_at AS fetchedAt, expires_at AS expiresAt, pinned FROM tags WHERE upstream = ? AND repository = ? AND tag = ? AND accept = ?',
      k.upstream, k.repository, k.tag, k.accept,
    );
    return row && { ...row, pinned: row.pinned !== 0 };
  }

  async tagRows(upstream: string, repository: string, tag: string): Promise<TagEntry[]> {
    return this.#all<RawTagEntry>(`SELECT ${TAG_COLUMNS} FROM tags WHERE upstream = ? AND repository = ? AND tag = ? ORDER BY fetched_at DESC, accept DESC`, upstream, repository, tag).map(toTagEntry);
  }

  async listTags(of?: RepositoryKey): Promise<TagEntry[]> {
    if (of) return this.#all<RawTagEntry>(`SELECT ${TAG_COLUMNS} FROM tags WHERE upstream = ? AND repository = ? ORDER BY tag, accept`, of.upstream, of.repository).map(toTagEntry);
    return this.#all<RawTagEntry>(`SELECT ${TAG_COLUMNS} FROM tags ORDER BY upstream, repository, tag, accept`).map(toTagEntry);
  }

  async putTag(k: TagKey, digest: string, mediaType: string, ttlMs: number): Promise<void> {
    const now = this.#now();
    this.#run(PUT_TAG, k.upstream, k.repository, k.tag, k.accept, digest, mediaType, now, now + ttlMs, 0);
  }

  async refreshTag(k: TagKey, ttlMs: number): Promise<void> {
    const now = this.#now();
    this.#run('UPDATE tags SET fetched_at = ?, expires_at = ? WHERE upstream = ? AND repository = ? AND tag = ? AND accept = ?', now, now + ttlMs, k.upstream, k.repository, k.tag, k.accept);
  }

  async setTagPinned(upstream: string, repository: string, tag: string, pinned: boolean): Promise<number> {
    return this.#run('UPDATE tags SET pinned = ? WHERE upstream = ? AND repository = ? AND tag = ?', pinned ? 1 : 0, upstream, repository, tag).changes;
  }

  async getBlob(digest: string): Promise<BlobRow | undefined> {
    const r = this.#get<{ size: number; version: string | null; mtimeMs: number | null; pinned: number }>(
      'SELECT size, version, mtime_ms AS mtimeMs, pinned FROM blobs WHERE digest = ?',
      digest,
    );
    if (!r) return undefined;
    // Rows from before migration 5 carry the file's mtime, which is what the file store's version is.
    const version = r.version ?? (r.mtimeMs === null ? undefined : String(r.mtimeMs));
    return { size: r.size, ...(version === undefined ? {} : { version }), pinned: r.pinned === 1 };
  }

  async getManifest(digest: string): Promise<ManifestRow | undefined> {
    return this.#get<ManifestRow>('SELECT m.media_type AS mediaType, b.size AS size FROM manifests m JOIN blobs b USING (digest) WHERE m.digest = ?', digest);
  }

  async isLinked(upstream: string, repository: string, digest: string): Promise<boolean> {
    return this.#get('SELECT 1 AS one FROM links WHERE upstream = ? AND repository = ? AND digest = ?', upstream, repository, digest) !== undefined;
  }

  async recordBlob(digest: string, size: number, link?: Link, version?: string): Promise<void> {
    const now = this.#now();
    this.#tx(() => {
      this.#run(PUT_BLOB, digest, size, now, now, version ?? null);
      if (link) this.#run(LINK, link.upstream, link.repository, digest);
    });
  }

  async recordManifest(digest: string, mediaType: string, size: number, link: Link, version?: string): Promise<void> {
    const now = this.#now();
    this.#tx(() => {
      this.#run(PUT_BLOB, digest, size, now, now, version ?? null);
      this.#run(PUT_MANIFEST, digest, mediaType);
      this.#run(LINK, link.upstream, link.repository, digest);
    });
  }

  async link(upstream: string, repository: string, digest: string): Promise<void> {
    this.#run(LINK, upstream, repository, digest);
  }

  async forgetBlobs(digests: string[]): Promise<void> {
    this.#tx(() => {
      for (const d of digests) this.#forget(d, '');
    });
  }

  async setBlobPins(pin: string[], unpin: string[]): Promise<void> {
    this.#tx(() => {
      for (const d of pin) this.#run('UPDATE blobs SET pinned = 1 WHERE digest = ?', d);
      for (const d of unpin) this.#run('UPDATE blobs SET pinned = 0 WHERE digest = ?', d);
    });
  }

  async evictBlobs(digests: string[], usedBefore?: number): Promise<string[]> {
    const where = usedBefore === undefined ? ' AND pinned = 0' : ' AND pinned = 0 AND last_access <= ?';
    const args = usedBefore === undefined ? [] : [usedBefore];
    return checkpointingLess(this.#db, () => this.#tx(() => digests.filter((d) => this.#forget(d, where, ...args))));
  }

  /** Deletes a blob row (when `where` allows) and, if it went, its manifest row and links. */
  #forget(digest: string, where: string, ...args: unknown[]): boolean {
    if (this.#run(`DELETE FROM blobs WHERE digest = ?${where}`, digest, ...args).changes === 0 && where) return false;
    this.#run('DELETE FROM manifests WHERE digest = ?', digest);
    this.#run('DELETE FROM links WHERE digest = ?', digest);
    return true;
  }

  async evictionCandidates(limit: number, after?: LruPosition): Promise<EvictionCandidate[]> {
    // Both walk blobs_lru in order (its entries carry the digest: the table has no rowid), with no sort.
    const columns = 'SELECT digest, size, last_access AS lastAccess FROM blobs WHERE pinned = 0';
    if (!after) return this.#all(`${columns} ORDER BY last_access, digest LIMIT ?`, limit);
    return this.#all(`${columns} AND (last_access, digest) > (?, ?) ORDER BY last_access, digest LIMIT ?`, after.lastAccess, after.digest, limit);
  }

  async allBlobs(): Promise<Array<{ digest: string; size: number }>> {
    return this.#all('SELECT digest, size FROM blobs ORDER BY digest');
  }

  async blobPage(after: string, limit: number): Promise<Array<{ digest: string; size: number; pinned: boolean }>> {
    return this.#all<{ digest: string; size: number; pinned: number }>('SELECT digest, size, pinned FROM blobs WHERE digest > ? ORDER BY digest LIMIT ?', after, limit).map((r) => ({ ...r, pinned: r.pinned === 1 }));
  }

  async knownBlobs(digests: string[]): Promise<string[]> {
    // json_each: one statement for the whole batch, whatever its length (no limit on bound parameters).
    return this.#all<{ digest: string }>('SELECT digest FROM blobs WHERE digest IN (SELECT value FROM json_each(?))', JSON.stringify(digests)).map((r) => r.digest);
  }

  async blobStats(digest: string): Promise<{ lastAccess: number; hits: number } | undefined> {
    return this.#get('SELECT last_access AS lastAccess, hits FROM blobs WHERE digest = ?', digest);
  }

  async storeSize(): Promise<{ blobs: number; bytes: number; pinnedBytes: number }> {
    return this.#get<{ blobs: number; bytes: number; pinnedBytes: number }>('SELECT blobs, bytes, pinned_bytes AS pinnedBytes FROM store_totals')!;
  }

  async count(table: CountedTable): Promise<number> {
    return this.#get<{ n: number }>(`SELECT count(*) AS n FROM ${table}`)!.n;
  }

  async recordImport(r: ImportRecord): Promise<void> {
    const now = this.#now();
    this.#tx(() => {
      for (const b of r.blobs) {
        this.#run(PUT_BLOB, b.digest, b.size, now, now, b.version ?? null);
        if (b.mediaType !== undefined) this.#run(PUT_MANIFEST, b.digest, b.mediaType);
        if (b.link) this.#run(LINK, b.link.upstream, b.link.repository, b.digest);
        this.#run('UPDATE blobs SET pinned = 1 WHERE digest = ?', b.digest);
      }
      for (const t of r.tags) this.#run(PUT_TAG, t.key.upstream, t.key.repository, t.key.tag, t.key.accept, t.digest, t.mediaType, now, now, 1);
    });
  }

  async removeImages(tags: Array<{ upstream: string; repository: string; tag: string }>, blobs: string[]): Promise<void> {
    this.#tx(() => {
      for (const t of tags) this.#run('DELETE FROM tags WHERE upstream = ? AND repository = ? AND tag = ?', t.upstream, t.repository, t.tag);
      for (const d of blobs) this.#forget(d, '');
    });
  }

  async reconcile(rollupsBefore: number, dryRun: boolean): Promise<ReconcileCounts> {
    const queries = {
      links: 'FROM links WHERE digest NOT IN (SELECT digest FROM blobs)',
      manifests: 'FROM manifests WHERE digest NOT IN (SELECT digest FROM blobs)',
      tags: 'FROM tags WHERE digest NOT IN (SELECT digest FROM manifests)',
      rollups: 'FROM rollups WHERE hour < ?',
    } as const;
    const counts = { links: 0, manifests: 0, tags: 0, rollups: 0 };
    this.#tx(() => {
      for (const [kind, where] of Object.entries(queries) as Array<[keyof typeof queries, string]>) {
        const args = kind === 'rollups' ? [rollupsBefore] : [];
        counts[kind] = dryRun ? this.#get<{ n: number }>(`SELECT count(*) AS n ${where}`, ...args)!.n : this.#run(`DELETE ${where}`, ...args).changes;
      }
      const subjects = 'FROM subject_rollups WHERE hour < ?';
      counts.rollups += dryRun ? this.#get<{ n: number }>(`SELECT count(*) AS n ${subjects}`, rollupsBefore)!.n : this.#run(`DELETE ${subjects}`, rollupsBefore).changes;
    });
    return counts;
  }

  /**
   * The timed flush asks for `brief`: it only moves counters, so it gives up almost at once
   * and tries again at the next tick rather than holding the event loop in SQLite's busy
   * handler while `cache pin` or `gc` holds the lock.
   */
  async writeBatch(batch: PendingBatch, opts: { brief?: boolean } = {}): Promise<void> {
    if (opts.brief) this.#db.pragma(`busy_timeout = ${FLUSH_BUSY_TIMEOUT_MS}`);
    try {
      this.#tx(() => this.#writeBatch(batch));
    } finally {
      if (opts.brief && this.#db.open) this.#db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
    }
  }

  #writeBatch(batch: PendingBatch): void {
    for (const [digest, { at, hits }] of batch.touches) this.#run('UPDATE blobs SET last_access = max(last_access, ?), hits = hits + ? WHERE digest = ?', at, hits, digest);
    for (const [key, n] of batch.rollups) {
      const [hour, upstream, metric] = key.split('\n');
      this.#run('INSERT INTO rollups (hour, upstream, metric, value) VALUES (?, ?, ?, ?) ON CONFLICT (hour, upstream, metric) DO UPDATE SET value = value + excluded.value', Number(hour), upstream, metric, n);
    }
    for (const r of batch.rateLimits.values()) {
      this.#run(
        // An older observation (a late flush of another process) never replaces a newer one.
        'INSERT INTO rate_limits (upstream, credential, limit_n, remaining, window_s, source, observed_at) VALUES (?, ?, ?, ?, ?, ?, ?) ' +
          'ON CONFLICT (upstream, credential) DO UPDATE SET limit_n = excluded.limit_n, remaining = excluded.remaining, window_s = excluded.window_s, ' +
          'source = excluded.source, observed_at = excluded.observed_at WHERE excluded.observed_at >= rate_limits.observed_at',
        r.upstream, r.credential, r.limit ?? null, r.remaining ?? null, r.windowSeconds ?? null, r.source ?? null, r.observedAt,
      );
    }
    for (const [key, n] of batch.subjectRollups ?? []) {
      const [hour, upstream, subject, metric] = key.split('\n');
      this.#run(ADD_SUBJECT, Number(hour), upstream, subject, metric, n);
    }
  }

  async rateLimits(): Promise<RateLimitRow[]> {
    const rows = this.#all<Record<string, unknown>>(
      'SELECT upstream, credential, limit_n AS "limit", remaining, window_s AS windowSeconds, source, observed_at AS observedAt FROM rate_limits ORDER BY upstream, credential',
    );
    return rows.map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null)) as unknown as RateLimitRow);
  }

  async rollupsSince(sinceMs: number): Promise<Array<{ upstream: string; metric: RollupMetric; value: number }>> {
    return this.#all('SELECT upstream, metric, sum(value) AS value FROM rollups WHERE hour >= ? GROUP BY upstream, metric ORDER BY upstream, metric', hourOf(sinceMs));
  }

  async rollupHours(sinceMs: number): Promise<HourRow[]> {
    return this.#all('SELECT hour, upstream, metric AS key, value FROM rollups WHERE hour >= ? ORDER BY hour, upstream, metric', hourOf(sinceMs));
  }

  async subjectHours(metric: SubjectMetric, sinceMs: number): Promise<HourRow[]> {
    return this.#all('SELECT hour, upstream, subject AS key, value FROM subject_rollups WHERE metric = ? AND hour >= ? ORDER BY hour, upstream, subject', metric, hourOf(sinceMs));
  }

  async topSubjects(metric: SubjectMetric, sinceMs: number, limit: number): Promise<Array<{ upstream: string; subject: string; value: number }>> {
    return this.#all(
      'SELECT upstream, subject, sum(value) AS value FROM subject_rollups WHERE metric = ? AND hour >= ? GROUP BY upstream, subject ORDER BY value DESC, upstream, subject LIMIT ?',
      metric, hourOf(sinceMs), limit,
    );
  }

  /**
   * One read transaction around the whole export: in WAL mode it reads one snapshot, so
   * a write landing between two tables (a server still running) cannot give tags whose
   * blobs were never copied. Ended however the reader stops, early or by throwing.
   */
  async *exportRows(): AsyncIterable<RowBatch> {
    busy(() => this.#db.exec('BEGIN'));
    try {
      yield* this.#exportTables();
    } finally {
      if (this.#db.inTransaction) this.#db.exec('COMMIT');
    }
  }

  async *#exportTables(): AsyncIterable<RowBatch> {
    yield* this.#export('blobs', 'SELECT digest, size, created_at AS createdAt, last_access AS lastAccess, hits, pinned, version, mtime_ms AS mtimeMs FROM blobs ORDER BY digest', (r) => {
      const x = r as { digest: string; size: number; createdAt: number; lastAccess: number; hits: number; pinned: number; version: string | null; mtimeMs: number | null };
      const v = x.version ?? (x.mtimeMs === null ? undefined : String(x.mtimeMs));
      return { digest: x.digest, size: x.size, createdAt: x.createdAt, lastAccess: x.lastAccess, hits: x.hits, pinned: x.pinned === 1, ...(v === undefined ? {} : { version: v }) };
    });
    yield* this.#export('manifests', 'SELECT digest, media_type AS mediaType FROM manifests ORDER BY digest', (r) => r as StoredRows['manifests']);
    yield* this.#export('links', 'SELECT upstream, repository, digest FROM links ORDER BY upstream, repository, digest', (r) => r as StoredRows['links']);
    yield* this.#export('tags', `SELECT ${TAG_COLUMNS} FROM tags ORDER BY upstream, repository, tag, accept`, (r) => toTagEntry(r as RawTagEntry));
    const budgets = await this.rateLimits();
    if (budgets.length > 0) yield { table: 'rateLimits', rows: budgets };
    yield* this.#export('rollups', 'SELECT hour, upstream, metric, value FROM rollups ORDER BY hour, upstream, metric', (r) => r as StoredRows['rollups']);
    yield* this.#export('subjectRollups', 'SELECT hour, upstream, subject, metric, value FROM subject_rollups ORDER BY hour, upstream, subject, metric', (r) => r as StoredRows['subjectRollups']);
  }

  *#export<T extends keyof StoredRows>(table: T, sql: string, map: (r: unknown) => StoredRows[T]): Iterable<RowBatch> {
    let rows: Array<StoredRows[T]> = [];
    for (const r of this.#statement(sql).iterate()) {
      rows.push(map(r));
      if (rows.length === EXPORT_BATCH) {
        yield { table, rows } as RowBatch;
        rows = [];
      }
    }
    if (rows.length > 0) yield { table, rows } as RowBatch;
  }

  async importRows(batches: AsyncIterable<RowBatch>): Promise<number> {
    const all: RowBatch[] = [];
    for await (const b of batches) all.push(b);
    return this.#tx(() => {
      const existing = this.#get<{ n: number }>('SELECT (SELECT count(*) FROM blobs) + (SELECT count(*) FROM tags) AS n')!.n;
      if (existing > 0) throw new StoreNotEmpty(existing);
      let n = 0;
      for (const b of all) n += this.#load(b);
      return n;
    });
  }

  #load(b: RowBatch): number {
    for (const r of b.rows) {
      if (b.table === 'blobs') {
        const x = r as StoredRows['blobs'];
        this.#run('INSERT INTO blobs (digest, size, created_at, last_access, hits, pinned, version) VALUES (?, ?, ?, ?, ?, ?, ?)', x.digest, x.size, x.createdAt, x.lastAccess, x.hits, x.pinned ? 1 : 0, x.version ?? null);
      } else if (b.table === 'manifests') this.#run(PUT_MANIFEST, (r as StoredRows['manifests']).digest, (r as StoredRows['manifests']).mediaType);
      else if (b.table === 'links') this.#run(LINK, (r as StoredRows['links']).upstream, (r as StoredRows['links']).repository, (r as StoredRows['links']).digest);
      else if (b.table === 'tags') {
        const t = r as TagEntry;
        this.#run(PUT_TAG, t.upstream, t.repository, t.tag, t.accept, t.digest, t.mediaType, t.fetchedAt, t.expiresAt, t.pinned ? 1 : 0);
      } else if (b.table === 'rateLimits') this.#writeBatch({ ...NO_COUNTERS(), rateLimits: new Map([['', r as RateLimitRow]]) });
      else if (b.table === 'rollups') {
        const x = r as StoredRows['rollups'];
        this.#writeBatch({ ...NO_COUNTERS(), rollups: new Map([[`${x.hour}\n${x.upstream}\n${x.metric}`, x.value]]) });
      } else {
        const x = r as StoredRows['subjectRollups'];
        this.#run(ADD_SUBJECT, x.hour, x.upstream, x.subject, x.metric, x.value);
      }
    }
    return b.rows.length;
  }

  async close(): Promise<void> {
    this.#db.close();
  }

  // ---- statements ----

  #statement(sql: string): Database.Statement {
    let st = this.#statements.get(sql);
    if (!st) {
      st = this.#db.prepare(sql);
      this.#statements.set(sql, st);
    }
    return st;
  }

  #get<T>(sql: string, ...args: unknown[]): T | undefined {
    return busy(() => this.#statement(sql).get(...args) as T | undefined);
  }

  #all<T>(sql: string, ...args: unknown[]): T[] {
    return busy(() => this.#statement(sql).all(...args) as T[]);
  }

  #run(sql: string, ...args: unknown[]): Database.RunResult {
    return busy(() => this.#statement(sql).run(...args));
  }

  /** One transaction, taking the write lock at its start: one that read first could not wait for a lock taken meanwhile. */
  #tx<T>(fn: () => T): T {
    return busy(() => this.#db.transaction(fn).immediate());
  }
}
