// PostgresMetadataStore: the MetadataStore of replicas that share one database. Same
// tables and meaning as the SQLite backend; every operation that writes more than one
// statement is one transaction on one client. A server that is down, restarting or out
// of connections makes a call throw MetadataUnavailable within the connect or statement
// timeout, and the same store works again once the server is back.
import { MetadataUnavailable } from '../../errors.js';
import type {
  BlobRow,
  CountedTable,
  EvictionCandidate,
  ImportRecord,
  Link,
  LruPosition,
  ManifestRow,
  MetadataStore,
  PendingBatch,
  ReconcileCounts,
  RowBatch,
  StoreOptions,
} from '../metadata-store.js';
import type { GuardedTagStore } from '../guarded-tags.js';
import type { EventStore } from '../events.js';
import type { LeaseStore } from '../leases.js';
import type { HourRow, RateLimitRow, RepositoryKey, RollupMetric, SubjectMetric, TagEntry, TagKey, TagRow } from '../rows.js';
import { Session, type PostgresOptions, type Queries } from './connection.js';
import { describeTarget } from './describe-target.js';
import { unavailableReason } from './errors.js';
import { PostgresEvents } from './events-postgres.js';
import { PostgresLeases } from './leases-postgres.js';
import { PostgresGuardedTags } from './guarded-tags-postgres.js';
import { migrate } from './migrations.js';
import { BLOBS, COUNTERS, COUNTS, LINKS, MANIFESTS, RECONCILE, reconcileStatement, reconcileSubjects, SCHEMA, TAGS } from './queries.js';
import { exportRows, importRows } from './rows-copy.js';

export type { PostgresOptions } from './connection.js';

const HOUR = 3_600_000;

type Key = Pick<TagKey, 'upstream' | 'repository' | 'tag'>;

/** MetadataStore on PostgreSQL (pg's Pool). */
export class PostgresMetadataStore implements MetadataStore {
  readonly backend = 'postgres';
  readonly #db: Session;
  readonly #now: () => number;
  readonly leases: LeaseStore;
  readonly guardedTags: GuardedTagStore;
  readonly events: EventStore;

  private constructor(db: Session, now: () => number) {
    this.#db = db;
    this.#now = now;
    this.events = new PostgresEvents(db);
    this.leases = new PostgresLeases(db, now);
    this.guardedTags = new PostgresGuardedTags(db, now);
  }

  /**
   * Connects once (so a wrong address or password fails at start-up, in one line naming
   * the server) and migrates the schema.
   */
  static async connect(opts: PostgresOptions & StoreOptions): Promise<PostgresMetadataStore> {
    const db = new Session(opts);
    try {
      await db.withClient((client) => migrate(client));
    } catch (err) {
      await db.end().catch(() => {});
      throw connectError(err, opts.url);
    }
    return new PostgresMetadataStore(db, opts.now ?? Date.now);
  }

  async schemaVersion(): Promise<number> {
    const [row] = await this.#db.rows<{ version: number }>(SCHEMA.version);
    return row?.version ?? 0;
  }

  // ---- tags ----

  async getTag(k: TagKey): Promise<TagRow | undefined> {
    const [row] = await this.#db.rows<TagRow>(TAGS.get, [k.upstream, k.repository, k.tag, k.accept]);
    return row;
  }

  tagRows(upstream: string, repository: string, tag: string): Promise<TagEntry[]> {
    return this.#db.rows<TagEntry>(TAGS.rows, [upstream, repository, tag]);
  }

  listTags(of?: RepositoryKey): Promise<TagEntry[]> {
    return of ? this.#db.rows<TagEntry>(TAGS.listRepository, [of.upstream, of.repository]) : this.#db.rows<TagEntry>(TAGS.list);
  }

  async putTag(k: TagKey, digest: string, mediaType: string, ttlMs: number): Promise<void> {
    const now = this.#now();
    await this.#db.changes(TAGS.put, [k.upstream, k.repository, k.tag, k.accept, digest, mediaType, now, now + ttlMs, false]);
  }

  async refreshTag(k: TagKey, ttlMs: number): Promise<void> {
    const now = this.#now();
    await this.#db.changes(TAGS.refresh, [now, now + ttlMs, k.upstream, k.repository, k.tag, k.accept]);
  }

  setTagPinned(upstream: string, repository: string, tag: string, pinned: boolean): Promise<number> {
    return this.#db.changes(TAGS.setPinned, [pinned, upstream, repository, tag]);
  }

  // ---- blobs, manifests, links ----

  async getBlob(digest: string): Promise<BlobRow | undefined> {
    const [row] = await this.#db.rows<{ size: number; version: string | null; pinned: boolean }>(BLOBS.get, [digest]);
    return row && { size: row.size, ...(row.version === null ? {} : { version: row.version }), pinned: row.pinned };
  }

  async getManifest(digest: string): Promise<ManifestRow | undefined> {
    const [row] = await this.#db.rows<ManifestRow>(MANIFESTS.get, [digest]);
    return row;
  }

  async isLinked(upstream: string, repository: string, digest: string): Promise<boolean> {
    return (await this.#db.rows(LINKS.exists, [upstream, repository, digest])).length > 0;
  }

  async recordBlob(digest: string, size: number, link?: Link, version?: string): Promise<void> {
    const now = this.#now();
    if (!link) {
      await this.#db.changes(BLOBS.put, [digest, size, now, version ?? null]);
      return;
    }
    await this.#db.transaction(async (q) => {
      await q.changes(BLOBS.put, [digest, size, now, version ?? null]);
      await q.changes(LINKS.put, [link.upstream, link.repository, digest]);
    });
  }

  async recordManifest(digest: string, mediaType: string, size: number, link: Link, version?: string): Promise<void> {
    const now = this.#now();
    await this.#db.transaction(async (q) => {
      await q.changes(BLOBS.put, [digest, size, now, version ?? null]);
      await q.changes(MANIFESTS.put, [digest, mediaType]);
      await q.changes(LINKS.put, [link.upstream, link.repository, digest]);
    });
  }

  async link(upstream: string, repository: string, digest: string): Promise<void> {
    await this.#db.changes(LINKS.put, [upstream, repository, digest]);
  }

  async forgetBlobs(digests: string[]): Promise<void> {
    if (digests.length === 0) return;
    await this.#db.transaction((q) => forget(q, digests));
  }

  async setBlobPins(pin: string[], unpin: string[]): Promise<void> {
    if (pin.length + unpin.length === 0) return;
    await this.#db.transaction(async (q) => {
      // In this order, as the SQLite commands did: a digest in both lists ends unpinned.
      await q.changes(BLOBS.setPinned, [pin, true]);
      await q.changes(BLOBS.setPinned, [unpin, false]);
    });
  }

  async evictBlobs(digests: string[], usedBefore?: number): Promise<string[]> {
    if (digests.length === 0) return [];
    return this.#db.transaction(async (q) => {
      const gone = new Set((await q.rows<{ digest: string }>(BLOBS.evict, [digests, usedBefore ?? null])).map((r) => r.digest));
      const evicted = digests.filter((d) => gone.has(d));
      await q.changes(MANIFESTS.remove, [evicted]);
      await q.changes(LINKS.remove, [evicted]);
      return evicted;
    });
  }

  evictionCandidates(limit: number, after?: LruPosition): Promise<EvictionCandidate[]> {
    return after ? this.#db.rows(BLOBS.lruAfter, [after.lastAccess, after.digest, limit]) : this.#db.rows(BLOBS.lru, [limit]);
  }

  allBlobs(): Promise<Array<{ digest: string; size: number }>> {
    return this.#db.rows(BLOBS.all);
  }

  blobPage(after: string, limit: number): Promise<Array<{ digest: string; size: number; pinned: boolean }>> {
    return this.#db.rows(BLOBS.page, [after, limit]);
  }

  async knownBlobs(digests: string[]): Promise<string[]> {
    if (digests.length === 0) return [];
    return (await this.#db.rows<{ digest: string }>(BLOBS.known, [digests])).map((r) => r.digest);
  }

  async blobStats(digest: string): Promise<{ lastAccess: number; hits: number } | undefined> {
    const [row] = await this.#db.rows<{ lastAccess: number; hits: number }>(BLOBS.stats, [digest]);
    return row;
  }

  async storeSize(): Promise<{ blobs: number; bytes: number; pinnedBytes: number }> {
    const [row] = await this.#db.rows<{ blobs: number; bytes: number; pinnedBytes: number }>(BLOBS.size);
    return row;
  }

  async count(table: CountedTable): Promise<number> {
    const [row] = await this.#db.rows<{ n: number }>(COUNTS[table]);
    return row.n;
  }

  // ---- named operations of the commands ----

  async recordImport(r: ImportRecord): Promise<void> {
    const now = this.#now();
    await this.#db.transaction(async (q) => {
      for (const b of r.blobs) {
        await q.changes(BLOBS.put, [b.digest, b.size, now, b.version ?? null]);
        if (b.mediaType !== undefined) await q.changes(MANIFESTS.put, [b.digest, b.mediaType]);
        if (b.link) await q.changes(LINKS.put, [b.link.upstream, b.link.repository, b.digest]);
        await q.changes(BLOBS.pin, [b.digest]);
      }
      // A pinned tag is fresh whatever its expiry, so it expires "now".
      for (const t of r.tags) await q.changes(TAGS.put, [t.key.upstream, t.key.repository, t.key.tag, t.key.accept, t.digest, t.mediaType, now, now, true]);
    });
  }

  async removeImages(tags: Key[], blobs: string[]): Promise<void> {
    if (tags.length + blobs.length === 0) return;
    await this.#db.transaction(async (q) => {
      for (const t of tags) await q.changes(TAGS.remove, [t.upstream, t.repository, t.tag]);
      if (blobs.length > 0) await forget(q, blobs);
    });
  }

  reconcile(rollupsBefore: number, dryRun: boolean): Promise<ReconcileCounts> {
    return this.#db.transaction(async (q) => {
      const counts: ReconcileCounts = { links: 0, manifests: 0, tags: 0, rollups: 0 };
      // In this order: tags are judged after the manifest rows of missing blobs are gone.
      for (const kind of Object.keys(RECONCILE) as Array<keyof ReconcileCounts>) {
        const st = reconcileStatement(kind, dryRun);
        const args = kind === 'rollups' ? [rollupsBefore] : [];
        counts[kind] = dryRun ? (await q.rows<{ n: number }>(st, args))[0].n : await q.changes(st, args);
      }
      const subjects = reconcileSubjects(dryRun);
      counts.rollups += dryRun ? Number((await q.rows<{ n: number }>(subjects, [rollupsBefore]))[0].n) : await q.changes(subjects, [rollupsBefore]);
      return counts;
    }, { slow: true });
  }

  // ---- counters ----

  async writeBatch(batch: PendingBatch): Promise<void> {
    // Sorted, so that replicas flushing at once take row locks in the same order.
    const touches = [...batch.touches].sort(byKey);
    const rollups = [...batch.rollups].sort(byKey).map(([key, value]) => {
      const [hour, upstream, metric] = key.split('\n');
      return { hour: Number(hour), upstream, metric, value };
    });
    const limits = [...batch.rateLimits.values()];
    const subjects = [...(batch.subjectRollups ?? [])].sort(byKey).map(([key, value]) => {
      const [hour, upstream, subject, metric] = key.split('\n');
      return { hour: Number(hour), upstream, subject, metric, value };
    });
    if (touches.length + rollups.length + limits.length + subjects.length === 0) return;
    await this.#db.transaction(async (q) => {
      if (touches.length > 0) {
        const digests = touches.map(([d]) => d);
        await q.rows(COUNTERS.lockTouched, [digests]);
        await q.changes(COUNTERS.touch, [digests, touches.map(([, t]) => t.at), touches.map(([, t]) => t.hits)]);
      }
      if (rollups.length > 0) {
        await q.changes(COUNTERS.addRollups, [rollups.map((r) => r.hour), rollups.map((r) => r.upstream), rollups.map((r) => r.metric), rollups.map((r) => r.value)]);
      }
      if (limits.length > 0) await q.changes(COUNTERS.putRateLimits, rateLimitColumns(limits));
      if (subjects.length > 0) await q.changes(COUNTERS.addSubjects, (['hour', 'upstream', 'subject', 'metric', 'value'] as const).map((k) => subjects.map((s) => s[k])));
    });
  }

  async rateLimits(): Promise<RateLimitRow[]> {
    const rows = await this.#db.rows<Record<string, unknown>>(COUNTERS.rateLimits);
    return rows.map((r) => Object.fromEntries(Object.entries(r).filter(([, v]) => v !== null)) as unknown as RateLimitRow);
  }

  rollupsSince(sinceMs: number): Promise<Array<{ upstream: string; metric: RollupMetric; value: number }>> {
    return this.#db.rows(COUNTERS.rollupsSince, [Math.floor(sinceMs / HOUR) * HOUR]);
  }

  rollupHours(sinceMs: number): Promise<HourRow[]> {
    return this.#db.rows(COUNTERS.rollupHours, [Math.floor(sinceMs / HOUR) * HOUR]);
  }

  subjectHours(metric: SubjectMetric, sinceMs: number): Promise<HourRow[]> {
    return this.#db.rows(COUNTERS.subjectHours, [metric, Math.floor(sinceMs / HOUR) * HOUR]);
  }

  topSubjects(metric: SubjectMetric, sinceMs: number, limit: number): Promise<Array<{ upstream: string; subject: string; value: number }>> {
    return this.#db.rows(COUNTERS.topSubjects, [metric, Math.floor(sinceMs / HOUR) * HOUR, limit]);
  }

  // ---- moving a store between backends ----

  exportRows(): AsyncIterable<RowBatch> {
    return exportRows(this.#db);
  }

  importRows(batches: AsyncIterable<RowBatch>): Promise<number> {
    return importRows(this.#db, batches);
  }

  close(): Promise<void> {
    return this.#db.end();
  }
}

const byKey = ([a]: [string, unknown], [b]: [string, unknown]) => (a < b ? -1 : a > b ? 1 : 0);

/** Blob rows, their manifest rows and their links, together. */
async function forget(q: Queries, digests: string[]): Promise<void> {
  await q.changes(BLOBS.remove, [digests]);
  await q.changes(MANIFESTS.remove, [digests]);
  await q.changes(LINKS.remove, [digests]);
}

function rateLimitColumns(rows: RateLimitRow[]): unknown[][] {
  const col = <T>(f: (r: RateLimitRow) => T) => rows.map((r) => f(r) ?? null);
  return [col((r) => r.upstream), col((r) => r.credential), col((r) => r.limit), col((r) => r.remaining), col((r) => r.windowSeconds), col((r) => r.source), col((r) => r.observedAt)];
}

/** A start-up failure as one line naming the server; MetadataUnavailable stays typed. */
function connectError(err: unknown, url: string): Error {
  const where = describeTarget(url);
  const reason = unavailableReason(err);
  if (reason !== undefined) return new MetadataUnavailable(`cannot connect to PostgreSQL at ${where}: ${reason}`);
  const message = err instanceof Error ? err.message.split('\n')[0] : String(err);
  if (message.startsWith('metadata: ')) return err as Error;
  return new Error(`metadata: PostgreSQL at ${where}: ${message}`);
}
