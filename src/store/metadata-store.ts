// The metadata seam: what regmirror keeps about its cache (tags, manifests, blobs,
// repository links, pins, counters, upstream budgets), as named atomic operations on a
// backend. Two implementations: SQLite (one process, or several on one disk) and
// PostgreSQL (replicas sharing one database). Nothing above src/store/ sees SQL, a
// connection or a backend's error codes: a backend that cannot be reached throws
// MetadataUnavailable, and `Metadata` (metadata.ts) wraps every backend with the memo
// and the batching that keep a warm hit free of queries.
import type { GuardedTagStore } from './guarded-tags.js';
import type { EventStore } from './events.js';
import type { LeaseStore } from './leases.js';
import type { HourRow, RateLimitRow, RepositoryKey, RollupMetric, SubjectMetric, TagEntry, TagKey, TagRow } from './rows.js';

export interface PendingBatch {
  touches: Map<string, { at: number; hits: number }>;
  /** `hour\nupstream\nmetric` → count */
  rollups: Map<string, number>;
  /** latest per `upstream\ncredential` */
  rateLimits: Map<string, RateLimitRow>;
  /** `hour\nupstream\nsubject\nmetric` → count, or for budget_low the lowest; absent: none */
  subjectRollups?: Map<string, number>;
}

export interface Link {
  upstream: string;
  repository: string;
}

/** A published blob as the cache checks it. `version` is the blob store's opaque version at publish. */
export interface BlobRow {
  size: number;
  version?: string;
  pinned: boolean;
}

/** A place in the least-recently-used order: a blob's last access, its digest breaking ties. */
export interface LruPosition {
  lastAccess: number;
  digest: string;
}

export interface EvictionCandidate extends LruPosition {
  size: number;
}

export interface ManifestRow {
  mediaType: string;
  size: number;
}

/** One blob (or manifest body, with its media type) of an imported bundle. */
export interface ImportedBlob {
  digest: string;
  size: number;
  /** Set for a manifest body. */
  mediaType?: string;
  link?: Link;
  version?: string;
}

/** What importing a bundle records, all at once: its blobs recorded and pinned, its tags pinned. */
export interface ImportRecord {
  blobs: ImportedBlob[];
  tags: Array<{ key: TagKey; digest: string; mediaType: string }>;
}

export type ReconcileCounts = Record<'links' | 'manifests' | 'tags' | 'rollups', number>;

/** Every column of every table, as `regmirror migrate` copies them between backends. */
export interface StoredRows {
  blobs: { digest: string; size: number; createdAt: number; lastAccess: number; hits: number; pinned: boolean; version?: string };
  manifests: { digest: string; mediaType: string };
  links: { upstream: string; repository: string; digest: string };
  tags: TagEntry;
  rateLimits: RateLimitRow;
  rollups: { hour: number; upstream: string; metric: string; value: number };
  subjectRollups: { hour: number; upstream: string; subject: string; metric: string; value: number };
}
export type RowBatch = { [T in keyof StoredRows]: { table: T; rows: Array<StoredRows[T]> } }[keyof StoredRows];

export type CountedTable = 'blobs' | 'manifests' | 'links' | 'tags';

/**
 * A metadata backend. Every method is one atomic operation: all of its writes land or
 * none do. Times are the backend's `now()` (an option of each implementation).
 */
export interface MetadataStore {
  readonly backend: 'sqlite' | 'postgres';
  /** The number of migrations the database has run. */
  schemaVersion(): Promise<number>;
  /**
   * A value that changes whenever a write is committed to the database, by this process or
   * another; undefined when the backend cannot tell cheaply (or not now). Synchronous and
   * cheap: the hot rows ask it once a second to keep rows nothing has changed.
   */
  writeMark?(): string | undefined;
  /** Claims on work shared between the processes of one database (see leases.ts). */
  readonly leases: LeaseStore;
  /** The digests immutable tags are held to (see guarded-tags.ts). */
  readonly guardedTags: GuardedTagStore;
  /** What the mirror told its operators (see events.ts). */
  readonly events: EventStore;

  // ---- tags ----
  getTag(k: TagKey): Promise<TagRow | undefined>;
  /** Every Accept class's row for one tag, the most recently fetched first. */
  tagRows(upstream: string, repository: string, tag: string): Promise<TagEntry[]>;
  /** Every tag row (or one repository's), ordered by upstream, repository, tag and Accept class. */
  listTags(of?: RepositoryKey): Promise<TagEntry[]>;
  /** Sets a tag's digest for `ttlMs`; an existing row, pinned or not, is replaced by an unpinned one. */
  putTag(k: TagKey, digest: string, mediaType: string, ttlMs: number): Promise<void>;
  /** The upstream confirmed the tag still names the same digest. */
  refreshTag(k: TagKey, ttlMs: number): Promise<void>;
  /** Pins or unpins every row of a tag (all Accept classes); the number of rows changed. */
  setTagPinned(upstream: string, repository: string, tag: string, pinned: boolean): Promise<number>;

  // ---- blobs, manifests, links ----
  getBlob(digest: string): Promise<BlobRow | undefined>;
  getManifest(digest: string): Promise<ManifestRow | undefined>;
  isLinked(upstream: string, repository: string, digest: string): Promise<boolean>;
  /** Records a blob just published to the blob store, linked to the repository it came through. */
  recordBlob(digest: string, size: number, link?: Link, version?: string): Promise<void>;
  /** Records a published manifest body: a blob with a media type, linked. */
  recordManifest(digest: string, mediaType: string, size: number, link: Link, version?: string): Promise<void>;
  link(upstream: string, repository: string, digest: string): Promise<void>;
  /** Forgets a blob (and its manifest row and links) whose content is gone. */
  forgetBlobs(digests: string[]): Promise<void>;
  /** Sets blob pins: `pin` pinned, `unpin` unpinned, together. */
  setBlobPins(pin: string[], unpin: string[]): Promise<void>;
  /**
   * Forgets the blobs of `digests` that are still unpinned (an import elsewhere may have
   * pinned some since the evictor chose them) and, given `usedBefore`, not used since: last
   * accessed at or before it. Returns those forgotten, whose content may go.
   */
  evictBlobs(digests: string[], usedBefore?: number): Promise<string[]>;
  /**
   * Up to `limit` of the least recently used unpinned blobs, oldest first (ties by digest),
   * after `after` in that order when given: the evictor's walk, a page at a time.
   */
  evictionCandidates(limit: number, after?: LruPosition): Promise<EvictionCandidate[]>;
  /** Every blob row (gc, verify), by digest. */
  allBlobs(): Promise<Array<{ digest: string; size: number }>>;
  /** Up to `limit` blob rows by digest, after `after` (exclusive): a walk of every row, a page at a time. */
  blobPage(after: string, limit: number): Promise<Array<{ digest: string; size: number; pinned: boolean }>>;
  /** Those of `digests` that have a blob row. */
  knownBlobs(digests: string[]): Promise<string[]>;
  /** Access statistics of a blob (cache ls). */
  blobStats(digest: string): Promise<{ lastAccess: number; hits: number } | undefined>;
  /** Published blobs (manifest bodies included) and their total size. */
  storeSize(): Promise<{ blobs: number; bytes: number; pinnedBytes: number }>;
  count(table: CountedTable): Promise<number>;

  // ---- named operations of the commands ----
  /** import: records and pins a bundle's blobs and pins its tags. */
  recordImport(r: ImportRecord): Promise<void>;
  /** cache rm: forgets the tags and the blobs no remaining image holds. */
  removeImages(tags: Array<{ upstream: string; repository: string; tag: string }>, blobs: string[]): Promise<void>;
  /**
   * gc: rows that point at nothing (links and manifest rows of blobs that are gone, tags
   * whose manifest is gone) and roll-ups (of both kinds) older than `rollupsBefore`. Counts per kind.
   */
  reconcile(rollupsBefore: number, dryRun: boolean): Promise<ReconcileCounts>;

  // ---- counters (batched by Metadata) ----
  /**
   * Access times, hit counts, roll-ups and budgets gathered in memory, in one transaction.
   * `brief`: the timed flush, which would rather give up at once on a busy database and
   * retry at its next tick than wait.
   */
  writeBatch(batch: PendingBatch, opts?: { brief?: boolean }): Promise<void>;
  rateLimits(): Promise<RateLimitRow[]>;
  /** Roll-ups summed per upstream and metric since `sinceMs` (whole hours). */
  rollupsSince(sinceMs: number): Promise<Array<{ upstream: string; metric: RollupMetric; value: number }>>;
  /** Roll-ups hour by hour since `sinceMs` (whole hours), by hour, upstream and metric; `key` is the metric. */
  rollupHours(sinceMs: number): Promise<HourRow[]>;
  /** One subject metric hour by hour since `sinceMs`, by hour, upstream and subject; `key` is the subject. */
  subjectHours(metric: SubjectMetric, sinceMs: number): Promise<HourRow[]>;
  /** The `limit` subjects with the largest sum of a metric since `sinceMs`, largest first (ties by upstream, subject). */
  topSubjects(metric: SubjectMetric, sinceMs: number, limit: number): Promise<Array<{ upstream: string; subject: string; value: number }>>;

  // ---- moving a store between backends ----
  /** Every row, table by table, in batches. */
  exportRows(): AsyncIterable<RowBatch>;
  /** Loads what another store's exportRows gave into this empty one, all or nothing; the rows loaded. */
  importRows(batches: AsyncIterable<RowBatch>): Promise<number>;

  close(): Promise<void>;
}

export interface StoreOptions {
  now?: () => number;
}
