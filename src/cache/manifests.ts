// ManifestCache: manifests by digest (immutable, cached until evicted) and tags (a digest
// with a time-to-live per upstream). A fresh tag costs no upstream request; a stale one
// is revalidated with a HEAD and fetched with GET only when its digest changed.
// Concurrent revalidations of one tag share one upstream request.
import { LRUCache } from 'lru-cache';
import { BlobGone, ManifestNotFound, RepositoryNotFound, UpstreamInvalid, UpstreamRateLimited, UpstreamUnavailable } from '../errors.js';
import type { EventSink } from '../events/event.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { digestHex, digestOf, isDigest, parseDigest, type Digest } from '../oci/digest.js';
import { accepts, ALL_TYPES, DOCKER_LIST, isIndexType, OCI_INDEX, parseManifest, type Descriptor } from '../oci/manifest.js';
import type { ManifestRef } from '../oci/reference.js';
import type { ContentStore } from '../store/content-store.js';
import type { Metadata, TagEntry, TagKey, TagRow } from '../store/metadata.js';
import type { PassThroughBody } from '../upstream/client.js';
import type { Target } from './blobs.js';
import { isStoreFull } from './download.js';
import { SingleFlight } from './single-flight.js';
import type { SharedWork } from '../cluster/shared-work.js';
import type { TagGuard } from './tag-guard.js';

/** A revalidation is a HEAD (or a GET of a changed manifest): seconds at worst. */
const TAG_WORK = { ttlMs: 15_000, waitMs: 3_000 };

/** A manifest as the API answers it. `bytes` is absent for HEAD answers. */
export interface ManifestReply {
  digest: string;
  mediaType: string;
  size: number;
  bytes?: Buffer;
  /** hit: from the cache with no upstream request; revalidated: HEAD confirmed it; miss: fetched; stale: see `stale`. */
  source: 'hit' | 'revalidated' | 'miss' | 'stale';
  /** Why a cached tag was served without a successful revalidation. */
  stale?: string;
  /** Fetched but not stored (the store refused the write). */
  uncached?: boolean;
}

export interface ManifestCacheDeps {
  store: ContentStore;
  metadata: Metadata;
  log: Logger;
  now?: () => number;
  /** Bytes of manifest bodies kept in memory. */
  memoryBytes: number;
  metrics?: Metrics;
  /** Offline: tags never expire (nothing could revalidate them). */
  offline?: boolean;
  /** In a cluster: a stale tag is revalidated by one replica for all. */
  shared?: SharedWork;
  /** Told of the blobs a manifest names when it comes from the upstream through `t` (BlobCache.vouch). */
  onFetched?: (t: Target, blobs: readonly Descriptor[]) => Promise<void>;
  /** With tag policies: what an immutable tag may resolve to (consulted only when the upstream is asked). */
  guard?: TagGuard;
  /** Told of stale tags served and of manifests that do not match their digest. */
  events?: EventSink;
}

/** Memory for remembered upstream 404s (about 2,000 of them with their errors). */
const NOT_FOUND_BYTES = 4 * 1024 * 1024;

/** Manifest and tag cache. */
export class ManifestCache {
  readonly #deps: ManifestCacheDeps;
  readonly #now: () => number;
  readonly #bodies: LRUCache<string, Buffer>;
  readonly #revalidations = new SingleFlight<string, ManifestReply>();
  /**
   * Upstream 404s, remembered for the upstream's negativeTtl. Bounded by bytes: each keeps
   * its error, whose stack and message dwarf the key, and clients choose the names.
   */
  readonly #notFound = new LRUCache<string, { until: number; err: Error }>({ maxSize: NOT_FOUND_BYTES, sizeCalculation: (v, k) => 64 + 2 * (k.length + v.err.message.length + (v.err.stack?.length ?? 0)) });

  constructor(deps: ManifestCacheDeps) {
    this.#deps = deps;
    this.#now = deps.now ?? Date.now;
    this.#bodies = new LRUCache<string, Buffer>({ maxSize: Math.max(1, deps.memoryBytes), sizeCalculation: (b) => Math.max(1, b.length) });
  }

  /** Answers a manifest GET (`withBody`) or HEAD by tag or digest. */
  async get(t: Target, ref: ManifestRef, accept: number, withBody: boolean): Promise<ManifestReply> {
    const reply = await this.#get(t, ref, accept, withBody);
    const { metadata, metrics } = this.#deps;
    metrics?.cache.inc({ kind: 'manifest', result: reply.source });
    // A manifest GET is what Docker Hub counts as a pull; one served from cache is one saved.
    if (withBody) {
      metadata.bump(t.upstream.name, 'pulls_served');
      metadata.bumpImage(t.upstream.name, t.repository, 'image_pulls');
    }
    if (reply.source !== 'miss') metadata.bump(t.upstream.name, 'cache_hits');
    return reply;
  }

  /**
   * A manifest the mirror reads for itself (a signature artifact, an index whose children
   * a signature covers): cached and linked like any other, but no client's pull.
   */
  artifact(t: Target, ref: ManifestRef, accept: number = ALL_TYPES): Promise<ManifestReply> {
    return this.#get(t, ref, accept, true);
  }

  /**
   * Keeps a subject's referrers as the index the referrers API answered, under the tag of
   * the referrers tag schema (`sha256-<hex>`), so that an offline mirror can answer them
   * and an export carries them like any tagged index.
   */
  async keepReferrers(t: Target, subject: Digest, index: Buffer): Promise<void> {
    const { store, metadata } = this.#deps;
    const key: TagKey = { upstream: t.upstream.name, repository: t.repository, tag: referrersTag(subject), accept: ALL_TYPES };
    const digest = digestOf(index);
    if ((await metadata.getTag(key))?.digest === digest && (await metadata.getManifest(digest))) return;
    try {
      const { version } = await store.put(digest, index);
      await metadata.recordManifest(digest, OCI_INDEX, index.length, { upstream: t.upstream.name, repository: t.repository }, version);
      await metadata.putTag(key, digest, OCI_INDEX, t.upstream.config.tagTtlMs);
    } catch (err) {
      if (!isStoreFull(err)) throw err;
    }
  }

  /** The referrers index kept for `subject` (see keepReferrers), or undefined. */
  async keptReferrers(t: Target, subject: Digest): Promise<Buffer | undefined> {
    const row = await this.#deps.metadata.getTag({ upstream: t.upstream.name, repository: t.repository, tag: referrersTag(subject), accept: ALL_TYPES });
    return row ? (await this.#cached(row.digest, true))?.bytes : undefined;
  }

  async #get(t: Target, ref: ManifestRef, accept: number, withBody: boolean): Promise<ManifestReply> {
    const negativeKey = `${t.upstream.name}\n${t.repository}\n${ref.tag ?? ref.digest}\n${accept}`;
    const remembered = this.#notFound.get(negativeKey);
    if (remembered && remembered.until > this.#now()) throw remembered.err;
    try {
      if (ref.digest !== undefined) return await this.#byDigest(t, ref.digest, accept, withBody);
      return await this.#byTag(t, ref.tag, accept, withBody);
    } catch (err) {
      if (err instanceof ManifestNotFound || err instanceof RepositoryNotFound) {
        this.#notFound.set(negativeKey, { until: this.#now() + t.upstream.config.negativeTtlMs, err });
      }
      throw err;
    }
  }

  async #byTag(t: Target, tag: string, accept: number, withBody: boolean): Promise<ManifestReply> {
    const key: TagKey = { upstream: t.upstream.name, repository: t.repository, tag, accept };
    const own = await this.#deps.metadata.getTag(key);
    if (own && this.#fresh(own)) {
      const cached = await this.#cached(own.digest, withBody);
      if (cached) return cached;
    }
    // Another client's Accept list may have cached an answer this one takes.
    const shared = (await this.#otherRows(key)).find((r) => this.#fresh(r) && answersToo(r, key.accept));
    if (shared) {
      const cached = await this.#cached(shared.digest, withBody);
      if (cached) return cached;
    }
    // What to serve as stale when the upstream cannot be asked.
    const row = own ?? (await this.#otherRows(key)).find((r) => answersToo(r, key.accept));
    if (row && !t.upstream.state.canRevalidate()) {
      const cached = await this.#cached(row.digest, withBody);
      if (cached) return this.#staleReply(t, key, cached, 'upstream pull budget at its floor');
    }
    const flightKey = `${key.upstream}\n${key.repository}\n${key.tag}\n${accept}`;
    let reply: ManifestReply;
    try {
      reply = await this.#revalidations.run(flightKey, () => this.#revalidateOnce(t, key, flightKey));
    } catch (err) {
      // Stale-if-error: an upstream that is down or rate-limited does not fail a pull we can serve.
      const cached = row && (err instanceof UpstreamUnavailable || err instanceof UpstreamRateLimited) ? await this.#cached(row.digest, withBody) : undefined;
      if (!cached) throw err;
      return this.#staleReply(t, key, cached, (err as Error).message);
    }
    if (withBody && !reply.bytes) return this.#withBody(t, reply, accept);
    return reply;
  }

  /**
   * A revalidation started by a HEAD answers without bytes; a GET sharing it reads them
   * from the cache, or fetches them by digest when the stored copy is gone or damaged.
   */
  async #withBody(t: Target, reply: ManifestReply, accept: number): Promise<ManifestReply> {
    const cached = await this.#cached(reply.digest, true);
    if (cached) return { ...cached, source: reply.source, stale: reply.stale };
    const fetched = await this.#fetch(t, parseDigest(reply.digest), accept);
    return { ...fetched, source: reply.source === 'hit' ? 'miss' : reply.source };
  }

  /** The tag's rows for other Accept classes whose manifest type this class takes. */
  async #otherRows(key: TagKey): Promise<TagEntry[]> {
    return (await this.#deps.metadata.tagRows(key.upstream, key.repository, key.tag)).filter((r) => r.accept !== key.accept && accepts(key.accept, r.mediaType));
  }

  /** A tag is answered from the cache without asking the upstream. */
  #fresh(row: TagRow): boolean {
    return this.#deps.offline === true || row.pinned || row.expiresAt > this.#now();
  }

  #staleReply(t: Target, key: TagKey, cached: ManifestReply, reason: string): ManifestReply {
    this.#deps.log.warn('serving a cached tag without revalidation', { upstream: key.upstream, repo: key.repository, tag: key.tag, reason });
    this.#deps.metrics?.stale.inc({ upstream: t.upstream.name, reason: reason.includes('budget') ? 'budget' : 'upstream_error' });
    this.#deps.metadata.bump(t.upstream.name, 'stale_served');
    this.#deps.events?.record({ kind: 'stale_served', upstream: key.upstream, repository: key.repository, tag: key.tag, digest: cached.digest, message: `served ${key.repository}:${key.tag} as cached without revalidation: ${reason}`, details: { reason } });
    return { ...cached, source: 'stale', stale: reason };
  }

  /** The error for a manifest the upstream sent under a digest it does not have, recorded as an event. */
  #mismatch(t: Target, expected: string, got: string, message: string, tag?: string): UpstreamInvalid {
    this.#deps.events?.record({ kind: 'digest_mismatch', upstream: t.upstream.name, repository: t.repository, ...(tag ? { tag } : {}), digest: expected, message, details: { got, what: 'manifest' } });
    return new UpstreamInvalid(message);
  }

  /** Tag list, passed through. */
  tags(t: Target, query: string): Promise<PassThroughBody> {
    return t.upstream.tags(t.repository, query);
  }

  /** Offline, the tag list is what the cache holds: no upstream could say more. */
  get offline(): boolean {
    return this.#deps.offline === true;
  }

  /** The repository's cached tags, sorted (every Accept class's row folded into one). */
  async cachedTags(t: Target): Promise<string[]> {
    const rows = await this.#deps.metadata.listTags({ upstream: t.upstream.name, repository: t.repository });
    const tags = new Set(rows.filter((r) => r.upstream === t.upstream.name && r.repository === t.repository).map((r) => r.tag));
    return [...tags].sort();
  }

  /** Referrers index, passed through. */
  referrers(t: Target, digest: Digest, query: string): Promise<PassThroughBody> {
    return t.upstream.referrers(t.repository, digest, query);
  }

  async #byDigest(t: Target, digest: Digest, accept: number, withBody: boolean): Promise<ManifestReply> {
    const { metadata, log } = this.#deps;
    if (await metadata.isLinked(t.upstream.name, t.repository, digest)) {
      const cached = await this.#cached(digest, withBody);
      if (cached) return cached;
    }
    if (!withBody) {
      // A HEAD needs no body: ask the upstream with a HEAD, which Docker Hub does not count.
      const head = await t.upstream.headManifest(t.repository, digest, accept);
      if (head.digest !== undefined && head.digest !== digest) throw this.#mismatch(t, digest, head.digest, `upstream answered digest ${head.digest} for ${digest}`);
      if (await metadata.getManifest(digest)) {
        await metadata.link(t.upstream.name, t.repository, digest);
        const cached = await this.#cached(digest, false);
        if (cached) return cached;
      }
      if (head.mediaType && head.size !== undefined) return { digest, mediaType: head.mediaType, size: head.size, source: 'miss' };
    }
    const fetched = await this.#fetch(t, digest, accept);
    if (fetched.digest !== digest) throw new UpstreamInvalid(`manifest fetched for ${digest} hashes to ${fetched.digest}`);
    log.debug('manifest fetched by digest', { repo: t.repository, digest });
    return withBody ? fetched : { ...fetched, bytes: undefined };
  }

  /**
   * One replica of a cluster revalidates a tag for all: the others wait (a few seconds at
   * most) for the row it writes, which they read afresh.
   */
  #revalidateOnce(t: Target, key: TagKey, flightKey: string): Promise<ManifestReply> {
    const shared = this.#deps.shared;
    if (!shared) return this.#revalidate(t, key);
    const written = async (): Promise<ManifestReply | undefined> => {
      this.#deps.metadata.rereadTag(key);
      const row = await this.#deps.metadata.getTag(key);
      return row && this.#fresh(row) ? this.#cached(row.digest, false) : undefined;
    };
    return shared.run(`tag:${flightKey}`, TAG_WORK, () => this.#revalidate(t, key), written);
  }

  async #revalidate(t: Target, key: TagKey): Promise<ManifestReply> {
    const { metadata, log } = this.#deps;
    const ttl = t.upstream.config.tagTtlMs;
    const row = await metadata.getTag(key);
    // A HEAD (free on Docker Hub) first whenever some Accept class has this tag cached:
    // a GET is needed only when the upstream names a digest the cache does not hold.
    const cachedForSomeone = row ? (await metadata.getManifest(row.digest)) !== undefined : (await metadata.tagRows(key.upstream, key.repository, key.tag)).length > 0;
    if (cachedForSomeone) {
      const head = await t.upstream.headManifest(t.repository, key.tag, key.accept);
      // Asked before any GET: a change that is refused or kept costs no pull.
      const held = head.digest !== undefined && isDigest(head.digest) ? await this.#heldTo(key, head.digest, row) : undefined;
      if (held !== undefined) return this.#held(t, key, held, ttl);
      const known = head.digest !== undefined && isDigest(head.digest) ? await metadata.getManifest(head.digest) : undefined;
      if (head.digest !== undefined && known && (head.digest === row?.digest || (await metadata.isLinked(key.upstream, key.repository, head.digest)))) {
        const cached = await this.#cached(head.digest, false);
        if (cached) {
          if (head.digest === row?.digest) await metadata.refreshTag(key, ttl);
          else await metadata.putTag(key, head.digest, cached.mediaType, ttl);
          log.debug('tag revalidated', { repo: key.repository, tag: key.tag, changed: head.digest !== row?.digest });
          return { ...cached, source: 'revalidated' };
        }
      }
    }
    const fetched = await this.#fetch(t, undefined, key.accept, key.tag);
    const held = await this.#heldTo(key, fetched.digest, row);
    if (held !== undefined) return this.#held(t, key, held, ttl);
    if (!fetched.uncached) await metadata.putTag(key, fetched.digest, fetched.mediaType, ttl);
    return fetched;
  }

  /** The digest a guarded tag is held to when it is not the one the upstream names (TagGuard). */
  async #heldTo(key: TagKey, upstreamDigest: string, row: TagRow | undefined): Promise<string | undefined> {
    const guard = this.#deps.guard;
    if (!guard) return undefined;
    const serve = await guard.resolve(key, upstreamDigest, row?.digest);
    return serve === upstreamDigest ? undefined : serve;
  }

  /** Serves a tag as held by its policy, its TTL renewed: the upstream is asked again at the next TTL, not at every pull. */
  async #held(t: Target, key: TagKey, digest: string, ttl: number): Promise<ManifestReply> {
    const reply = (await this.#cached(digest, false)) ?? (await this.#fetch(t, parseDigest(digest), key.accept));
    if (!reply.uncached) await this.#deps.metadata.putTag(key, digest, reply.mediaType, ttl);
    return { ...reply, source: 'revalidated' };
  }

  /** GETs a manifest from the upstream, checks it, stores and links it. */
  async #fetch(t: Target, digest: Digest | undefined, accept: number, tag?: string): Promise<ManifestReply> {
    const { store, metadata } = this.#deps;
    const ref = tag ?? digest!;
    const body = await t.upstream.getManifest(t.repository, ref, accept);
    const actual = digestOf(body.bytes);
    if (body.digest !== undefined && body.digest !== actual) {
      throw this.#mismatch(t, body.digest, actual, `upstream sent Docker-Content-Digest ${body.digest} for a body that hashes to ${actual}`, tag);
    }
    if (digest !== undefined && actual !== digest) throw this.#mismatch(t, digest, actual, `manifest fetched for ${digest} hashes to ${actual}`);
    const { mediaType, blobs } = parseManifest(body.bytes, body.mediaType);
    const reply: ManifestReply = { digest: actual, mediaType, size: body.bytes.length, bytes: body.bytes, source: 'miss' };
    try {
      const { version } = await store.put(actual, body.bytes);
      await metadata.recordManifest(actual, mediaType, body.bytes.length, { upstream: t.upstream.name, repository: t.repository }, version);
      await this.#deps.onFetched?.(t, blobs);
    } catch (err) {
      // A full or read-only store does not fail the pull: the manifest is served uncached.
      if (!isStoreFull(err)) throw err;
      this.#deps.log.warn('store write failed; serving the manifest without caching it', { digest: actual, code: err.reason });
      return { ...reply, uncached: true };
    }
    this.#bodies.set(actual, body.bytes);
    return reply;
  }

  /** A manifest from memory or the store, or undefined when its row or file is gone. */
  async #cached(digestText: string, withBody: boolean): Promise<ManifestReply | undefined> {
    const { metadata, store } = this.#deps;
    const row = await metadata.getManifest(digestText);
    if (!row) return undefined;
    const digest = parseDigest(digestText);
    let bytes = this.#bodies.get(digest);
    if (!bytes && withBody) {
      try {
        bytes = await store.read(digest);
      } catch (err) {
        // A store out of reach: fetched again and served uncached, the row kept for when it is back.
        if (isStoreFull(err)) return undefined;
        if (!(err instanceof BlobGone)) throw err;
        await metadata.forgetBlobs([digest]);
        return undefined;
      }
      // Manifests are small: re-hash on every read from disk, and fetch again if damaged.
      if (digestOf(bytes) !== digest) {
        this.#deps.log.warn('stored manifest does not match its digest; fetching it again', { digest });
        await metadata.forgetBlobs([digest]);
        await store.remove(digest);
        return undefined;
      }
      this.#bodies.set(digest, bytes);
    }
    metadata.touch(digest);
    return { digest, mediaType: row.mediaType, size: row.size, bytes: withBody ? bytes : undefined, source: 'hit' };
  }
}

/**
 * Whether a row cached for another Accept class is what the upstream would answer this
 * one. Its type must be one this class takes; and since one tag can answer an index to
 * one list and a single manifest to another, a single manifest is reused only for a
 * class that takes no index or that the row's own class covers.
 */
function answersToo(row: TagEntry, accept: number): boolean {
  if (!accepts(accept, row.mediaType)) return false;
  if (isIndexType(row.mediaType)) return true;
  const takesIndex = accepts(accept, OCI_INDEX) || accepts(accept, DOCKER_LIST);
  return !takesIndex || (row.accept & accept) === accept;
}

/** The referrers tag schema's tag for a subject: `sha256:ab…` → `sha256-ab…`. */
export function referrersTag(subject: Digest): string {
  return `sha256-${digestHex(subject)}`;
}
