// MetadataDb: the only module that prepares SQL. better-sqlite3 in WAL mode with every
// statement prepared once; access times and hit counts are gathered in memory and
// flushed in one transaction every few seconds, so a cache hit writes nothing.
import type Database from 'better-sqlite3';
import { HotRows } from './hot-rows.js';
import { PendingWrites, type PendingBatch } from './pending-writes.js';
import { BUSY_TIMEOUT_MS, FLUSH_BUSY_TIMEOUT_MS, openDatabase } from './migrations.js';
import { toTagEntry, type RateLimitRow, type RawTag, type RawTagEntry, type RollupMetric, type TagEntry, type TagKey, type TagRow, type UpstreamRequestMetric } from './rows.js';

export type { RateLimitRow, RollupMetric, TagEntry, TagKey, TagRow, UpstreamRequestMetric } from './rows.js';

const HOUR = 3_600_000;

export interface MetadataOptions {
  now?: () => number;
  /** How often batched access times are written (ms). */
  flushEveryMs?: number;
  /** A batched write failed (the database locked by another process, disk full); the batch is kept for the next one. */
  onFlushError?: (err: Error, pending: { touches: number; rollups: number }) => void;
}

/** SQLite-backed metadata: tags, manifests, blobs, repository links. */
export class MetadataDb {
  readonly #db: Database.Database;
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;
  readonly #onFlushError: NonNullable<MetadataOptions['onFlushError']>;
  readonly #pending = new PendingWrites();
  readonly #maintenanceStatements = new Map<string, Database.Statement>();
  /** Hot rows for warm hits; every write below forgets them. */
  readonly #hot = new HotRows();

  readonly #getTag: Database.Statement<[string, string, string, number], RawTag>;
  readonly #putTag: Database.Statement<[string, string, string, number, string, string, number, number, number]>;
  readonly #tagRows: Database.Statement<[string, string, string], RawTagEntry>;
  readonly #listTags: Database.Statement<[], RawTagEntry>;
  readonly #pinBlob: Database.Statement<[string]>;
  readonly #refreshTag: Database.Statement<[number, number, string, string, string, number]>;
  readonly #getBlob: Database.Statement<[string], { size: number; version: string | null; mtimeMs: number | null; pinned: number }>;
  readonly #lru: Database.Statement<[number], { digest: string; size: number }>;
  readonly #unpinBlob: Database.Statement<[string]>;
  readonly #storeSize: Database.Statement<[], { blobs: number; bytes: number; pinnedBytes: number }>;
  readonly #deleteLinks: Database.Statement<[string]>;
  readonly #deleteManifest: Database.Statement<[string]>;
  readonly #putBlob: Database.Statement<[string, number, number, number, string | null]>;
  readonly #getManifest: Database.Statement<[string], { mediaType: string; size: number }>;
  readonly #putManifest: Database.Statement<[string, string]>;
  readonly #isLinked: Database.Statement<[string, string, string], { one: number }>;
  readonly #link: Database.Statement<[string, string, string]>;
  readonly #touch: Database.Statement<[number, number, string]>;
  readonly #deleteBlob: Database.Statement<[string]>;
  readonly #addRollup: Database.Statement<[number, string, string, number]>;
  readonly #putRateLimit: Database.Statement<[string, string, number | null, number | null, number | null, string | null, number]>;

  constructor(path: string, opts: MetadataOptions = {}) {
    this.#now = opts.now ?? Date.now;
    this.#onFlushError = opts.onFlushError ?? (() => {});
    this.#db = openDatabase(path, BUSY_TIMEOUT_MS);
    const db = this.#db;
    this.#getTag = db.prepare(
      'SELECT digest, media_type AS mediaType, fetched_at AS fetchedAt, expires_at AS expiresAt, pinned FROM tags WHERE upstream = ? AND repository = ? AND tag = ? AND accept = ?',
    );
    this.#putTag = db.prepare(
      'INSERT OR REPLACE INTO tags (upstream, repository, tag, accept, digest, media_type, fetched_at, expires_at, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)',
    );
    const tagColumns = 'upstream, repository, tag, accept, digest, media_type AS mediaType, fetched_at AS fetchedAt, expires_at AS expiresAt, pinned';
    this.#tagRows = db.prepare(`SELECT ${tagColumns} FROM tags WHERE upstream = ? AND repository = ? AND tag = ? ORDER BY fetched_at DESC, accept DESC`);
    this.#listTags = db.prepare(`SELECT ${tagColumns} FROM tags ORDER BY upstream, repository, tag, accept`);
    this.#pinBlob = db.prepare('UPDATE blobs SET pinned = 1 WHERE digest = ?');
    this.#refreshTag = db.prepare('UPDATE tags SET fetched_at = ?, expires_at = ? WHERE upstream = ? AND repository = ? AND tag = ? AND accept = ?');
    this.#getBlob = db.prepare('SELECT size, version, mtime_ms AS mtimeMs, pinned FROM blobs WHERE digest = ?');
    this.#lru = db.prepare('SELECT digest, size FROM blobs WHERE pinned = 0 ORDER BY last_access, digest LIMIT ?');
    this.#unpinBlob = db.prepare('UPDATE blobs SET pinned = 0 WHERE digest = ?');
    this.#storeSize = db.prepare(
      'SELECT count(*) AS blobs, coalesce(sum(size), 0) AS bytes, coalesce(sum(CASE WHEN pinned = 1 THEN size ELSE 0 END), 0) AS pinnedBytes FROM blobs',
    );
    this.#deleteLinks = db.prepare('DELETE FROM links WHERE digest = ?');
    this.#deleteManifest = db.prepare('DELETE FROM manifests WHERE digest = ?');
    this.#putBlob = db.prepare(
      'INSERT INTO blobs (digest, size, created_at, last_access, version) VALUES (?, ?, ?, ?, ?) ON CONFLICT (digest) DO UPDATE SET size = excluded.size, version = coalesce(excluded.version, version)',
    );
    this.#getManifest = db.prepare('SELECT m.media_type AS mediaType, b.size AS size FROM manifests m JOIN blobs b USING (digest) WHERE m.digest = ?');
    this.#putManifest = db.prepare('INSERT OR REPLACE INTO manifests (digest, media_type) VALUES (?, ?)');
    this.#isLinked = db.prepare('SELECT 1 AS one FROM links WHERE upstream = ? AND repository = ? AND digest = ?');
    this.#link = db.prepare('INSERT OR IGNORE INTO links (upstream, repository, digest) VALUES (?, ?, ?)');
    this.#touch = db.prepare('UPDATE blobs SET last_access = max(last_access, ?), hits = hits + ? WHERE digest = ?');
    this.#deleteBlob = db.prepare('DELETE FROM blobs WHERE digest = ?');
    this.#addRollup = db.prepare(
      'INSERT INTO rollups (hour, upstream, metric, value) VALUES (?, ?, ?, ?) ON CONFLICT (hour, upstream, metric) DO UPDATE SET value = value + excluded.value',
    );
    this.#putRateLimit = db.prepare(
      'INSERT OR REPLACE INTO rate_limits (upstream, credential, limit_n, remaining, window_s, source, observed_at) VALUES (?, ?, ?, ?, ?, ?, ?)',
    );
    this.#timer = setInterval(() => this.#flushSoon(), opts.flushEveryMs ?? 5000);
    this.#timer.unref();
  }

  /** The schema version of the open database. */
  get schemaVersion(): number {
    return this.#db.pragma('user_version', { simple: true }) as number;
  }

  getTag(k: TagKey): TagRow | undefined {
    return this.#hot.read(`T${k.upstream}\n${k.repository}\n${k.tag}\n${k.accept}`, () => {
      const row = this.#getTag.get(k.upstream, k.repository, k.tag, k.accept);
      return row && { ...row, pinned: row.pinned !== 0 };
    });
  }

  /** Sets a tag's digest for `ttlMs`; an existing row, pinned or not, is replaced by an unpinned one. */
  putTag(k: TagKey, digest: string, mediaType: string, ttlMs: number): void {
    this.#hot.forget();
    const now = this.#now();
    this.#putTag.run(k.upstream, k.repository, k.tag, k.accept, digest, mediaType, now, now + ttlMs, 0);
  }

  /** Sets a tag's digest for good: a pinned row is fresh whatever its expiry (imported bundles). */
  putPinnedTag(k: TagKey, digest: string, mediaType: string): void {
    this.#hot.forget();
    const now = this.#now();
    this.#putTag.run(k.upstream, k.repository, k.tag, k.accept, digest, mediaType, now, now, 1);
  }

  /** Every Accept class's row for one tag, the most recently fetched first. */
  tagRows(upstream: string, repository: string, tag: string): TagEntry[] {
    return this.#hot.read(`R${upstream}\n${repository}\n${tag}`, () => this.#tagRows.all(upstream, repository, tag).map(toTagEntry));
  }

  /** Every tag row in the database, ordered by upstream, repository, tag and Accept class. */
  listTags(): TagEntry[] {
    return this.#listTags.all().map(toTagEntry);
  }

  /** The upstream confirmed the tag still names the same digest. */
  refreshTag(k: TagKey, ttlMs: number): void {
    this.#hot.forget();
    const now = this.#now();
    this.#refreshTag.run(now, now + ttlMs, k.upstream, k.repository, k.tag, k.accept);
  }

  /** Size, the store's version at publish (an older row's mtime_ms, as the file store's version) and pin of a blob. */
  getBlob(digest: string): { size: number; version?: string; pinned: boolean } | undefined {
    const r = this.#getBlob.get(digest);
    if (!r) return undefined;
    const version = r.version ?? (r.mtimeMs === null ? undefined : String(r.mtimeMs));
    return { size: r.size, ...(version === undefined ? {} : { version }), pinned: r.pinned === 1 };
  }

  /** The least recently used unpinned blobs, oldest first (access times flushed first). */
  evictionCandidates(limit: number): Array<{ digest: string; size: number }> {
    this.#flushSoon();
    return this.#lru.all(limit);
  }

  /** Access statistics of a blob (cache ls). */
  blobStats(digest: string): { lastAccess: number; hits: number } | undefined {
    return this.#maintenance('SELECT last_access AS lastAccess, hits FROM blobs WHERE digest = ?').get(digest) as { lastAccess: number; hits: number } | undefined;
  }

  /** Every blob row (gc, verify). */
  allBlobs(): Array<{ digest: string; size: number }> {
    this.#flushSoon();
    return this.#maintenance('SELECT digest, size FROM blobs ORDER BY digest').all() as Array<{ digest: string; size: number }>;
  }

  /** Pins or unpins every row of a tag (all Accept classes). */
  setTagPinned(upstream: string, repository: string, tag: string, pinned: boolean): number {
    this.#hot.forget();
    return this.#maintenance('UPDATE tags SET pinned = ? WHERE upstream = ? AND repository = ? AND tag = ?').run(pinned ? 1 : 0, upstream, repository, tag).changes;
  }

  /** Forgets every row of a tag. */
  deleteTag(upstream: string, repository: string, tag: string): void {
    this.#hot.forget();
    this.#maintenance('DELETE FROM tags WHERE upstream = ? AND repository = ? AND tag = ?').run(upstream, repository, tag);
  }

  /**
   * gc: rows that point at nothing — links and manifest rows of blobs that are gone, tags
   * whose manifest is gone — and roll-ups older than `rollupsBefore`. Counts per kind.
   */
  reconcile(rollupsBefore: number, dryRun: boolean): Record<'links' | 'manifests' | 'tags' | 'rollups', number> {
    this.#hot.forget();
    const queries = {
      links: 'FROM links WHERE digest NOT IN (SELECT digest FROM blobs)',
      manifests: 'FROM manifests WHERE digest NOT IN (SELECT digest FROM blobs)',
      tags: 'FROM tags WHERE digest NOT IN (SELECT digest FROM manifests)',
      rollups: 'FROM rollups WHERE hour < ?',
    } as const;
    const counts = { links: 0, manifests: 0, tags: 0, rollups: 0 };
    this.#db.transaction(() => {
      for (const [kind, where] of Object.entries(queries) as Array<[keyof typeof queries, string]>) {
        const args = kind === 'rollups' ? [rollupsBefore] : [];
        counts[kind] = dryRun
          ? (this.#maintenance(`SELECT count(*) AS n ${where}`).get(...args) as { n: number }).n
          : this.#maintenance(`DELETE ${where}`).run(...args).changes;
      }
    })();
    return counts;
  }

  /** Maintenance statements (CLI commands, rare): prepared on first use, then kept. */
  #maintenance(sql: string): Database.Statement {
    let st = this.#maintenanceStatements.get(sql);
    if (!st) {
      st = this.#db.prepare(sql);
      this.#maintenanceStatements.set(sql, st);
    }
    return st;
  }

  /** Forgets blobs (and their manifest rows and links) in one transaction, before their files go. */
  removeBlobs(digests: string[]): void {
    this.#hot.forget();
    this.#db.transaction(() => {
      for (const d of digests) {
        this.#deleteBlob.run(d);
        this.#deleteManifest.run(d);
        this.#deleteLinks.run(d);
      }
    })();
  }

  /**
   * Forgets the blobs that are still unpinned (the evictor chose them a moment ago; an
   * import in another process may have pinned some since). Returns the ones forgotten,
   * whose files may go.
   */
  evictBlobs(digests: string[]): string[] {
    this.#hot.forget();
    const gone: string[] = [];
    this.#db.transaction(() => {
      for (const d of digests) {
        if (this.#maintenance('DELETE FROM blobs WHERE digest = ? AND pinned = 0').run(d).changes === 0) continue;
        this.#deleteManifest.run(d);
        this.#deleteLinks.run(d);
        gone.push(d);
      }
    })();
    return gone;
  }

  unpinBlob(digest: string): void {
    this.#hot.forget();
    this.#unpinBlob.run(digest);
  }

  getManifest(digest: string): { mediaType: string; size: number } | undefined {
    return this.#hot.read(`M${digest}`, () => this.#getManifest.get(digest));
  }

  /** Records a blob that was just published to the store, linked to the repository it came through. */
  recordBlob(digest: string, size: number, link?: { upstream: string; repository: string }, version?: string): void {
    this.#hot.forget();
    const now = this.#now();
    this.#db.transaction(() => {
      this.#putBlob.run(digest, size, now, now, version ?? null);
      if (link) this.#link.run(link.upstream, link.repository, digest);
    })();
  }

  /** Records a published manifest body: a blob with a media type. */
  recordManifest(digest: string, mediaType: string, size: number, link: { upstream: string; repository: string }, version?: string): void {
    this.#hot.forget();
    const now = this.#now();
    this.#db.transaction(() => {
      this.#putBlob.run(digest, size, now, now, version ?? null);
      this.#putManifest.run(digest, mediaType);
      this.#link.run(link.upstream, link.repository, digest);
    })();
  }

  /** Marks a recorded blob (or manifest body) as never to be evicted. */
  pinBlob(digest: string): void {
    this.#hot.forget();
    this.#pinBlob.run(digest);
  }

  /**
   * Runs `fn` in one transaction (a savepoint when nested): all of its writes or none. It
   * takes the write lock at its start (waiting for it as any write does): a transaction
   * that read first could not wait for a lock a running server took meanwhile. Callers
   * beside a running server keep `fn` short (no reads of the whole store in it).
   */
  transaction<T>(fn: () => T): T {
    return this.#db.transaction(fn).immediate();
  }

  /** Forgets a blob whose file is gone (removed, or found missing). */
  forgetBlob(digest: string): void {
    this.#hot.forget();
    this.#deleteBlob.run(digest);
  }

  isLinked(upstream: string, repository: string, digest: string): boolean {
    return this.#hot.read(`L${upstream}\n${repository}\n${digest}`, () => this.#isLinked.get(upstream, repository, digest) !== undefined);
  }

  link(upstream: string, repository: string, digest: string): void {
    this.#hot.forget();
    this.#link.run(upstream, repository, digest);
  }

  /** Notes a cache hit; written by the next flush, not now. */
  touch(digest: string): void {
    this.#pending.touch(digest, this.#now());
  }

  /** Adds to an hourly roll-up; written by the next flush. */
  bump(upstream: string, metric: RollupMetric, n = 1): void {
    this.#pending.addRollup(Math.floor(this.#now() / HOUR) * HOUR, upstream, metric, n);
  }

  /** UpstreamObserver: the budget an upstream response reported; the latest per credential is written by the next flush. */
  rateLimit(upstream: string, credential: string, obs: { limit?: number; remaining?: number; windowSeconds?: number; source?: string }, at: number): void {
    this.#pending.rateLimit({ upstream, credential, ...obs, observedAt: at });
  }

  /** UpstreamObserver: one upstream request of a kind. */
  request(upstream: string, kind: UpstreamRequestMetric): void {
    this.bump(upstream, kind);
  }

  /**
   * Writes the batched access times, roll-ups and budgets in one transaction, waiting for
   * another process's lock as long as any write does. Throws if it cannot; the batch is
   * kept for the next flush.
   */
  flush(): void {
    this.#pending.writeWith((batch) => this.#writeBatch(batch));
  }

  /** The timed flush (and reads that want recent counts): never waits on a lock, never throws. */
  #flushSoon(): void {
    this.#pending.tryWriteWith(
      (batch) => {
        this.#db.pragma(`busy_timeout = ${FLUSH_BUSY_TIMEOUT_MS}`);
        try {
          this.#writeBatch(batch);
        } finally {
          if (this.#db.open) this.#db.pragma(`busy_timeout = ${BUSY_TIMEOUT_MS}`);
        }
      },
      (err, batch) => this.#reportFlushError(err, batch),
    );
  }

  #reportFlushError(err: Error, batch: PendingBatch): void {
    this.#onFlushError(err, { touches: batch.touches.size, rollups: batch.rollups.size });
  }

  #writeBatch(batch: PendingBatch): void {
    this.#db.transaction(() => {
      for (const [digest, { at, hits }] of batch.touches) this.#touch.run(at, hits, digest);
      for (const [key, n] of batch.rollups) {
        const [hour, upstream, metric] = key.split('\n');
        this.#addRollup.run(Number(hour), upstream, metric, n);
      }
      for (const r of batch.rateLimits.values()) {
        this.#putRateLimit.run(r.upstream, r.credential, r.limit ?? null, r.remaining ?? null, r.windowSeconds ?? null, r.source ?? null, r.observedAt);
      }
    })();
  }

  /** Every upstream budget on record (status, metrics). */
  rateLimits(): RateLimitRow[] {
    this.#flushSoon();
    const rows = this.#maintenance(
      'SELECT upstream, credential, limit_n AS "limit", remaining, window_s AS windowSeconds, source, observed_at AS observedAt FROM rate_limits ORDER BY upstream, credential',
    ).all() as Array<Record<string, unknown>>;
    return rows.map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null)) as unknown as RateLimitRow);
  }

  /** Roll-ups summed per upstream and metric since `sinceMs` (whole hours). */
  rollupsSince(sinceMs: number): Array<{ upstream: string; metric: RollupMetric; value: number }> {
    this.#flushSoon();
    return this.#maintenance('SELECT upstream, metric, sum(value) AS value FROM rollups WHERE hour >= ? GROUP BY upstream, metric ORDER BY upstream, metric').all(
      Math.floor(sinceMs / HOUR) * HOUR,
    ) as Array<{ upstream: string; metric: RollupMetric; value: number }>;
  }

  /** Published blobs (manifest bodies included) and their total size. */
  storeSize(): { blobs: number; bytes: number; pinnedBytes: number } {
    return this.#storeSize.get()!;
  }

  /** Rows in a table (tests, status). */
  count(table: 'blobs' | 'manifests' | 'links' | 'tags'): number {
    return (this.#maintenance(`SELECT count(*) AS n FROM ${table}`).get() as { n: number }).n;
  }

  /** Writes what is pending (waiting for a lock as any write does) and closes; a failed last write is reported, not thrown. */
  close(): void {
    clearInterval(this.#timer);
    this.#pending.tryWriteWith(
      (batch) => this.#writeBatch(batch),
      (err, batch) => this.#reportFlushError(err, batch),
    );
    this.#db.close();
  }
}
