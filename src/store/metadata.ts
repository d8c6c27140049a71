// Metadata: what cache/ and the commands use, on any MetadataStore backend. It keeps the
// warm path free of queries and of waits on the database:
//   - hot rows (a tag, a manifest, a link, a blob) are remembered for a second
//     (HotRows), and answer from memory when the database cannot be reached;
//   - access times, hit counts, roll-ups and budgets are gathered in memory and written
//     in one batch every few seconds (PendingWrites);
//   - writes of the serving path that the database cannot take now wait in order and are
//     retried (WriteQueue), so a client is served through a database restart.
import type { GuardedTagStore } from './guarded-tags.js';
import type { EventStore } from './events.js';
import type { LeaseStore } from './leases.js';
import type { MetadataUnavailable } from '../errors.js';
import { HotRows, linkKey, tagKey, tagRowsKey } from './hot-rows.js';
import type { BlobRow, CountedTable, EvictionCandidate, ImportRecord, Link, LruPosition, ManifestRow, MetadataStore, ReconcileCounts, RowBatch } from './metadata-store.js';
import { PendingWrites, type PendingBatch } from './pending-writes.js';
import type { HourRow, RateLimitRow, RepositoryKey, RollupMetric, SubjectMetric, TagEntry, TagKey, TagRow, UpstreamRequestMetric } from './rows.js';
import { WriteQueue } from './write-queue.js';

export type { BlobRow, EvictionCandidate, ImportRecord, Link, LruPosition, ManifestRow, MetadataStore } from './metadata-store.js';
export type { HourRow, RateLimitRow, RollupMetric, SubjectMetric, TagEntry, TagKey, TagRow, UpstreamRequestMetric } from './rows.js';

const HOUR = 3_600_000;
const MAX_QUEUED_WRITES = 10_000;
/** How often a server writes its batched counters, unless told otherwise. */
export const FLUSH_EVERY_MS = 5000;

export interface MetadataOptions {
  now?: () => number;
  /** How often batched access times are written (ms). */
  flushEveryMs?: number;
  /** A batched write failed (the database locked or down, disk full); the batch is kept for the next one. */
  onFlushError?: (err: Error, pending: { touches: number; rollups: number }) => void;
  /** The database could not be reached: a read answered from memory (or as a miss), or a write waits (or was dropped). */
  onUnavailable?: (err: MetadataUnavailable, what: 'read' | 'write' | 'dropped') => void;
  /** A queued write failed for another reason when retried, and was dropped. */
  onWriteFailed?: (err: Error) => void;
}

/** The metadata of one process: a backend wrapped in the memo, the batches and the write queue. */
export class Metadata {
  readonly #store: MetadataStore;
  readonly #now: () => number;
  readonly #timer: NodeJS.Timeout;
  readonly #opts: MetadataOptions;
  readonly #pending = new PendingWrites();
  readonly #hot: HotRows;
  readonly #queue: WriteQueue;
  #flushing: Promise<void> | undefined;
  /**
   * The backend's own, unmemoised: claims shared with the other processes (each answer is
   * news), the digests immutable tags are held to (an accept by a command beside a server
   * shows at once), and events (written in batches by their recorder).
   */
  readonly leases: LeaseStore;
  readonly guardedTags: GuardedTagStore;
  readonly events: EventStore;

  constructor(store: MetadataStore, opts: MetadataOptions = {}) {
    this.#store = store;
    this.#hot = new HotRows(store.writeMark?.bind(store));
    ({ leases: this.leases, guardedTags: this.guardedTags, events: this.events } = store);
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#queue = new WriteQueue({
      max: MAX_QUEUED_WRITES,
      onUnavailable: (err, dropped) => this.#unavailable(err, dropped ? 'dropped' : 'write'),
      onFailed: (err) => opts.onWriteFailed?.(err),
    });
    this.#timer = setInterval(() => void this.#flushSoon(), opts.flushEveryMs ?? FLUSH_EVERY_MS).unref();
  }

  get backend(): MetadataStore['backend'] {
    return this.#store.backend;
  }

  /** Serving-path writes waiting for the database to be back. */
  get queuedWrites(): number {
    return this.#queue.size;
  }

  schemaVersion(): Promise<number> {
    return this.#store.schemaVersion();
  }

  // ---- hot reads: memo, last known row, or a miss when the database is down ----

  getTag(k: TagKey): TagRow | undefined | Promise<TagRow | undefined> {
    return this.#hot.read(tagKey(k), () => this.#store.getTag(k), this.#miss(undefined));
  }

  /** Every Accept class's row for one tag, the most recently fetched first. */
  tagRows(upstream: string, repository: string, tag: string): TagEntry[] | Promise<TagEntry[]> {
    return this.#hot.read(tagRowsKey({ upstream, repository, tag }), () => this.#store.tagRows(upstream, repository, tag), this.#miss([]));
  }

  getManifest(digest: string): ManifestRow | undefined | Promise<ManifestRow | undefined> {
    return this.#hot.read(`M${digest}`, () => this.#store.getManifest(digest), this.#miss(undefined));
  }

  isLinked(upstream: string, repository: string, digest: string): boolean | Promise<boolean> {
    return this.#hot.read(linkKey(upstream, repository, digest), () => this.#store.isLinked(upstream, repository, digest), this.#miss(false));
  }

  /**
   * A published blob's size, version and pin. Unlike the others this throws
   * MetadataUnavailable rather than answer "no row": the cache drops content that has no
   * row, and an outage must not look like that.
   */
  getBlob(digest: string): BlobRow | undefined | Promise<BlobRow | undefined> {
    return this.#hot.read(`B${digest}`, () => this.#store.getBlob(digest), (err) => {
      throw err;
    });
  }

  /**
   * Another process has just written the blob's row and its link to `link` (a replica
   * that finished the download this one followed): the next reads ask the database.
   */
  reread(digest: string, link: Link): void {
    this.#hot.stale(`B${digest}`);
    this.#hot.stale(linkKey(link.upstream, link.repository, digest));
  }

  /** Another replica may have just written this tag's rows: the next reads ask the database. */
  rereadTag(k: TagKey): void {
    this.#hot.stale(tagKey(k));
    this.#hot.stale(tagRowsKey(k));
  }

  #miss<T>(value: T): (err: MetadataUnavailable) => T {
    return (err) => {
      this.#unavailable(err, 'read');
      return value;
    };
  }

  #unavailable(err: MetadataUnavailable, what: 'read' | 'write' | 'dropped'): void {
    try {
      this.#opts.onUnavailable?.(err, what);
    } catch {
      // A reporter's failure must not turn a degraded answer into an error.
    }
  }

  // ---- writes of the serving path: queued while the database is unreachable ----

  /** Sets a tag's digest for `ttlMs`; an existing row, pinned or not, is replaced by an unpinned one. */
  putTag(k: TagKey, digest: string, mediaType: string, ttlMs: number): Promise<void> {
    const now = this.#now();
    return this.#write(
      () => this.#store.putTag(k, digest, mediaType, ttlMs),
      () => {
        this.#hot.set(tagKey(k), { digest, mediaType, fetchedAt: now, expiresAt: now + ttlMs, pinned: false } satisfies TagRow);
        this.#hot.stale(tagRowsKey(k));
      },
    );
  }

  /** The upstream confirmed the tag still names the same digest. */
  refreshTag(k: TagKey, ttlMs: number): Promise<void> {
    const now = this.#now();
    const known = this.#hot.peek<TagRow | undefined>(tagKey(k));
    return this.#write(
      () => this.#store.refreshTag(k, ttlMs),
      () => {
        if (known) this.#hot.set(tagKey(k), { ...known, fetchedAt: now, expiresAt: now + ttlMs });
        this.#hot.stale(tagRowsKey(k));
      },
    );
  }

  /** Records a blob that was just published to the store, linked to the repository it came through. */
  recordBlob(digest: string, size: number, link?: Link, version?: string): Promise<void> {
    return this.#write(
      () => this.#store.recordBlob(digest, size, link, version),
      () => this.#rememberBlob(digest, size, link, version),
    );
  }

  /** Records a published manifest body: a blob with a media type. */
  recordManifest(digest: string, mediaType: string, size: number, link: Link, version?: string): Promise<void> {
    return this.#write(
      () => this.#store.recordManifest(digest, mediaType, size, link, version),
      () => {
        this.#rememberBlob(digest, size, link, version);
        this.#hot.set(`M${digest}`, { mediaType, size } satisfies ManifestRow);
      },
    );
  }

  link(upstream: string, repository: string, digest: string): Promise<void> {
    return this.#write(
      () => this.#store.link(upstream, repository, digest),
      () => this.#hot.set(linkKey(upstream, repository, digest), true),
    );
  }

  /** Forgets blobs (and their manifest rows and links) whose content is gone or damaged. */
  forgetBlobs(digests: string[]): Promise<void> {
    return this.#write(
      () => this.#store.forgetBlobs(digests),
      () => {
        for (const d of digests) {
          this.#hot.set(`B${d}`, undefined);
          this.#hot.set(`M${d}`, undefined);
        }
      },
    );
  }

  #rememberBlob(digest: string, size: number, link: Link | undefined, version: string | undefined): void {
    // As the backends do: the pin stays, and a row recorded without a version keeps the one known.
    const known = this.#hot.peek<BlobRow | undefined>(`B${digest}`);
    const v = version ?? known?.version;
    this.#hot.set(`B${digest}`, { size, ...(v === undefined ? {} : { version: v }), pinned: known?.pinned ?? false } satisfies BlobRow);
    // A manifest row carries its blob's size.
    const manifest = this.#hot.peek<ManifestRow | undefined>(`M${digest}`);
    if (manifest) this.#hot.set(`M${digest}`, { ...manifest, size });
    if (link) this.#hot.set(linkKey(link.upstream, link.repository, digest), true);
  }

  /**
   * What the write sets is remembered as written (`remember` sets those rows and marks the
   * ones derived from them stale), so that reads see it at once, from memory too should
   * the database be down; other rows keep their memo. A write the database refuses (not
   * one that waits for it) leaves nothing remembered.
   */
  async #write(op: () => Promise<void>, remember: () => void): Promise<void> {
    remember();
    try {
      await this.#queue.write(op);
    } catch (err) {
      this.#hot.forget();
      throw err;
    }
  }

  // ---- the commands' operations: they fail rather than wait ----

  listTags(of?: RepositoryKey): Promise<TagEntry[]> {
    return this.#store.listTags(of);
  }

  /** Pins or unpins every row of a tag (all Accept classes). */
  setTagPinned(upstream: string, repository: string, tag: string, pinned: boolean): Promise<number> {
    return this.#changing(this.#store.setTagPinned(upstream, repository, tag, pinned));
  }

  setBlobPins(pin: string[], unpin: string[]): Promise<void> {
    return this.#changing(this.#store.setBlobPins(pin, unpin));
  }

  /**
   * Forgets the blobs still unpinned (and, given `usedBefore`, unused since); returns those
   * forgotten. Access times are flushed first: a hit counted since a blob was chosen keeps it.
   */
  async evictBlobs(digests: string[], usedBefore?: number): Promise<string[]> {
    if (usedBefore !== undefined) await this.#flushSoon();
    return this.#changing(this.#store.evictBlobs(digests, usedBefore));
  }

  recordImport(r: ImportRecord): Promise<void> {
    return this.#changing(this.#store.recordImport(r));
  }

  removeImages(tags: Array<{ upstream: string; repository: string; tag: string }>, blobs: string[]): Promise<void> {
    return this.#changing(this.#store.removeImages(tags, blobs));
  }

  reconcile(rollupsBefore: number, dryRun: boolean): Promise<ReconcileCounts> {
    return this.#changing(this.#store.reconcile(rollupsBefore, dryRun));
  }

  async #changing<T>(p: Promise<T>): Promise<T> {
    this.#hot.forget();
    try {
      return await p;
    } finally {
      this.#hot.forget();
    }
  }

  /** The least recently used unpinned blobs, oldest first, after `after` if given (access times flushed first). */
  async evictionCandidates(limit: number, after?: LruPosition): Promise<EvictionCandidate[]> {
    await this.#flushSoon();
    return this.#store.evictionCandidates(limit, after);
  }

  /** Every blob row by digest, a page at a time (gc, verify): flat memory however big the store, and no memo. */
  async *blobRows(pageSize = 1000): AsyncIterable<Array<{ digest: string; size: number; pinned: boolean }>> {
    await this.#flushSoon();
    for (let page = await this.#store.blobPage('', pageSize); page.length > 0; page = await this.#store.blobPage(page[page.length - 1].digest, pageSize)) yield page;
  }

  /** Those of `digests` that have a blob row: one query per batch of gc's listed files. */
  knownBlobs(digests: string[]): Promise<string[]> {
    return this.#store.knownBlobs(digests);
  }

  blobStats(digest: string): Promise<{ lastAccess: number; hits: number } | undefined> { return this.#store.blobStats(digest); }

  storeSize(): Promise<{ blobs: number; bytes: number; pinnedBytes: number }> { return this.#store.storeSize(); }

  count(table: CountedTable): Promise<number> { return this.#store.count(table); }

  exportRows(): AsyncIterable<RowBatch> { return this.#store.exportRows(); }

  // ---- counters, batched ----

  /** Notes a cache hit; written by the next flush, not now. */
  touch(digest: string): void {
    this.#pending.touch(digest, this.#now());
  }

  /** Adds to an hourly roll-up; written by the next flush. */
  bump(upstream: string, metric: RollupMetric, n = 1): void {
    this.#pending.addRollup(Math.floor(this.#now() / HOUR) * HOUR, upstream, metric, n);
  }

  /** Adds to a repository's hourly roll-up (pulls, bytes served); written by the next flush. */
  bumpImage(upstream: string, repository: string, metric: 'image_pulls' | 'image_bytes', n = 1): void {
    this.#pending.addSubject(Math.floor(this.#now() / HOUR) * HOUR, upstream, repository, metric, n);
  }

  /** UpstreamObserver: the budget an upstream response reported; the latest per credential is written by the next flush. */
  rateLimit(upstream: string, credential: string, obs: { limit?: number; remaining?: number; windowSeconds?: number; source?: string }, at: number): void {
    this.#pending.rateLimit({ upstream, credential, ...obs, observedAt: at });
    // The latest budget alone cannot draw a day: the hour's lowest is kept beside it.
    if (obs.remaining !== undefined) this.#pending.addSubject(Math.floor(at / HOUR) * HOUR, upstream, credential, 'budget_low', obs.remaining);
  }

  /** UpstreamObserver: one upstream request of a kind. */
  request(upstream: string, kind: UpstreamRequestMetric): void {
    this.bump(upstream, kind);
  }

  /** Every upstream budget on record (status, metrics). */
  async rateLimits(): Promise<RateLimitRow[]> {
    await this.#flushSoon();
    return this.#store.rateLimits();
  }

  /** Roll-ups summed per upstream and metric since `sinceMs` (whole hours). */
  async rollupsSince(sinceMs: number): Promise<Array<{ upstream: string; metric: RollupMetric; value: number }>> {
    await this.#flushSoon();
    return this.#store.rollupsSince(sinceMs);
  }

  /** Roll-ups hour by hour since `sinceMs` (the status page's plots). */
  async rollupHours(sinceMs: number): Promise<HourRow[]> {
    await this.#flushSoon();
    return this.#store.rollupHours(sinceMs);
  }

  async subjectHours(metric: SubjectMetric, sinceMs: number): Promise<HourRow[]> {
    await this.#flushSoon();
    return this.#store.subjectHours(metric, sinceMs);
  }

  async topSubjects(metric: SubjectMetric, sinceMs: number, limit: number): Promise<Array<{ upstream: string; subject: string; value: number }>> {
    await this.#flushSoon();
    return this.#store.topSubjects(metric, sinceMs, limit);
  }

  /** Writes the batched counters and the queued writes, waiting for a lock as any write does; throws if it cannot (the batch is kept). */
  async flush(): Promise<void> {
    await this.#queue.drain();
    await this.#pending.writeWith((batch) => this.#store.writeBatch(batch));
  }

  /** The timed flush (and reads that want recent counts): never waits long on a lock, never throws. */
  #flushSoon(): Promise<void> {
    this.#flushing ??= this.#pending
      .tryWriteWith(
        (batch) => this.#store.writeBatch(batch, { brief: true }),
        (err, batch) => this.#reportFlushError(err, batch),
      )
      .finally(() => {
        this.#flushing = undefined;
      });
    return this.#flushing;
  }

  #reportFlushError(err: Error, batch: PendingBatch): void {
    this.#opts.onFlushError?.(err, { touches: batch.touches.size, rollups: batch.rollups.size });
  }

  /** Writes what is pending and closes; a failed last write is reported, not thrown. */
  async close(): Promise<void> {
    clearInterval(this.#timer);
    await this.#flushing;
    await this.#queue.drain();
    this.#queue.close();
    await this.#pending.tryWriteWith(
      (batch) => this.#store.writeBatch(batch),
      (err, batch) => this.#reportFlushError(err, batch),
    );
    await this.#store.close();
  }
}
