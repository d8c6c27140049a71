// The shapes of the rows MetadataDb reads and writes, as its callers see them.

export interface TagRow {
  digest: string;
  mediaType: string;
  fetchedAt: number;
  expiresAt: number;
  /** Imported from a bundle: fresh whatever expiresAt says. */
  pinned: boolean;
}

/** A tag row with its whole key, as listTags() and tagRows() return it. */
export interface TagEntry extends TagKey, TagRow {}

export interface TagKey {
  upstream: string;
  repository: string;
  tag: string;
  accept: number;
}

/** One repository of one upstream. */
export type RepositoryKey = Pick<TagKey, 'upstream' | 'repository'>;

/** A rate-limit budget as an upstream last reported it. */
export interface RateLimitRow {
  upstream: string;
  credential: string;
  limit?: number;
  remaining?: number;
  windowSeconds?: number;
  source?: string;
  observedAt: number;
}

/** Upstream requests by kind (manifest_get is what Docker Hub counts as a pull). */
export type UpstreamRequestMetric = 'manifest_get' | 'manifest_head' | 'blob_get' | 'blob_head' | 'other';
/** Roll-up metrics kept per upstream and hour: upstream requests and what was served. */
export type RollupMetric =
  | UpstreamRequestMetric
  | 'pulls_served'
  | 'cache_hits'
  | 'bytes_cache'
  | 'bytes_upstream'
  | 'evicted'
  | 'verify_failed'
  | 'passthrough'
  | 'stale_served'
  | 'upstream_failed';

/**
 * Roll-ups kept per upstream, hour and subject: a repository's manifest GETs and blob
 * bytes served (the status page's top images), and the lowest budget a credential
 * reported in the hour. The budget is the one metric merged by minimum, not by sum.
 */
export type SubjectMetric = 'image_pulls' | 'image_bytes' | 'budget_low';

export function mergeSubject(metric: string, a: number, b: number): number {
  return metric === 'budget_low' ? Math.min(a, b) : a + b;
}

/** A roll-up of one hour, as the status page plots it. */
export interface HourRow {
  hour: number;
  upstream: string;
  /** The metric, or for a subject roll-up the repository or credential. */
  key: string;
  value: number;
}

export type RawTag = Omit<TagRow, 'pinned'> & { pinned: number };
export type RawTagEntry = TagKey & RawTag;

export function toTagEntry(r: RawTagEntry): TagEntry {
  return { ...r, pinned: r.pinned !== 0 };
}
