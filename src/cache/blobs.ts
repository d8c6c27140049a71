// BlobCache: answers blob HEAD and GET for a repository of an upstream. A cached blob is
// served only for repositories it is linked to; an unlinked one is first checked with an
// upstream HEAD. A miss joins the download in flight for the digest or starts one. With
// `redirect`, a linked hit the store can locate is handed out as the store's own URL.
import { countBoundedLru } from '../lru.js';
import { DigestMismatch, SizeMismatch, UpstreamInvalid } from '../errors.js';
import type { EventSink } from '../events/event.js';
import type { Logger } from '../log.js';
import { isDigest, type Digest } from '../oci/digest.js';
import { isNonDistributableType, type Descriptor } from '../oci/manifest.js';
import type { Metrics } from '../metrics.js';
import type { BodySource } from '../store/body-source.js';
import type { ByteRange, ContentStore } from '../store/content-store.js';
import type { Spool } from '../store/spool.js';
import type { Metadata } from '../store/metadata.js';
import type { UpstreamClient } from '../upstream/client.js';
import type { PeerLocation } from '../cluster/peer-client.js';
import { Download } from './download.js';
import { StoredBlobs } from './stored-blobs.js';
import { drain, peerBody, peerSize, type ClusterPeers } from './peer-blobs.js';

export type { ByteRange } from '../store/content-store.js';
export { REDIRECT_EXPIRY_SECONDS } from './stored-blobs.js';
export { READ_CHUNK, sourceToReadable, type BodySource } from '../store/body-source.js';
export type { UpstreamClient } from '../upstream/client.js';

/** Where a request points: an upstream and a repository in it (already normalised). */
export interface Target {
  upstream: UpstreamClient;
  repository: string;
}

/** A blob ready to be streamed: its size (when known) and a way to read it or a range of it. */
export interface BlobHandle {
  size?: number;
  /** `hit` when served from the store, `miss` when it streams from a download. */
  source: 'hit' | 'miss';
  open(range?: ByteRange): BodySource;
  /**
   * Present on a hit the client may fetch from the store itself (storage.redirect): the
   * URL to send it to, counted as the hit served (of `range`, or the whole blob) instead
   * of open().
   */
  redirect?(range?: ByteRange): string;
}

export interface BlobCacheDeps {
  store: ContentStore;
  /** Where downloads are written while they are verified. */
  spool: Spool;
  metadata: Metadata;
  log: Logger;
  metrics?: Metrics;
  /** Told of every blob published by a download (the evictor watches the store grow). */
  onPublished?: (bytes: number) => void;
  /** The store refused a write (disk full, read-only). */
  onStoreFull?: (err: Error) => void;
  /** In a cluster: download under leases, follow the other replicas' downloads. */
  cluster?: ClusterPeers;
  /** Hand out linked hits as the store's URL where it has one (storage.redirect). */
  redirect?: boolean;
  now?: () => number;
  /** Told of downloads whose content did not match their digest. */
  events?: EventSink;
}

/**
 * How long a blob the upstream served with the wrong content is refused without asking
 * again: long enough that retrying clients do not each download a corrupt blob in full,
 * short enough that a fixed upstream is soon used again.
 */
export const MISMATCH_MEMORY_MS = 60_000;
/** Blob lookups and single-flight downloads. */
export class BlobCache {
  readonly #deps: BlobCacheDeps;
  readonly #downloads = new Map<Digest, Download>();
  readonly #shutdown = new AbortController();
  /** Open readers of stored blobs: eviction leaves these alone. */
  readonly #readers = new Map<Digest, number>();
  /** Digests whose last download did not match: when it was seen. */
  readonly #mismatched = countBoundedLru<Digest, number>(10_000);
  readonly #stored: StoredBlobs;
  /** Downloads committed so far: a lookup that saw none running looks again if one was committed meanwhile. */
  #committed = 0;

  constructor(deps: BlobCacheDeps) {
    this.#deps = deps;
    this.#stored = new StoredBlobs({ ...deps, inUse: (d) => this.inUse(d) });
  }

  /** Downloads in flight, for status and tests. */
  get inFlight(): number {
    return this.#downloads.size;
  }

  /** For HEAD: the blob's size, from the store or from the upstream; never starts a download. */
  async stat(t: Target, digest: Digest): Promise<{ size?: number }> {
    const { metadata } = this.#deps;
    const linked = await metadata.isLinked(t.upstream.name, t.repository, digest);
    if (linked) {
      const st = await this.#stored.stat(digest);
      if (st) return st;
      const dl = this.#downloads.get(digest);
      if (dl?.size !== undefined) return { size: dl.size };
    }
    const head = await t.upstream.headBlob(t.repository, digest);
    return head;
  }

  /** For GET: a handle on the blob, starting or joining a download (here or on the replica holding it) on a miss. */
  async get(t: Target, digest: Digest): Promise<BlobHandle> {
    for (let attempt = 1; ; attempt++) {
      const found = await this.#find(t, digest);
      if ('size' in found) {
        const location = await this.#stored.locate(digest, found.size);
        return this.#handle(t, 'hit', found.size, (range) => this.#track(digest, this.#deps.store.source(digest, found.size, range)), location);
      }
      if ('download' in found) {
        const dl = found.download;
        await dl.ready;
        return this.#handle(t, 'miss', dl.size, (range) => this.#track(digest, dl.follow(range)));
      }
      const size = await this.#peerSize(t, digest, found.peer, attempt);
      if (size === 'again') continue;
      if (typeof size === 'number') {
        const stored = (range?: ByteRange) => () => this.#deps.store.source(digest, size, range);
        return this.#handle(t, 'miss', size, (range) => this.#track(digest, peerBody(this.#deps.cluster!, found.peer, digest, size, range, stored(range))));
      }
    }
  }

  /** For prewarm: makes sure the blob is in the store; resolves `cached` or `fetched` once it is published. */
  async ensure(t: Target, digest: Digest): Promise<{ size: number; result: 'cached' | 'fetched' }> {
    for (let attempt = 1; ; attempt++) {
      const found = await this.#find(t, digest);
      if ('size' in found) return { size: found.size, result: 'cached' };
      if ('download' in found) {
        await found.download.done;
        return { size: found.download.received, result: 'fetched' };
      }
      const size = await this.#peerSize(t, digest, found.peer, attempt);
      if (size === 'again') continue;
      // The holder publishes it; following its download to the end is waiting for that.
      if (typeof size === 'number') await drain(this.#deps.cluster!.peers.open(found.peer, digest, size));
      return { size: typeof size === 'number' ? size : 0, result: 'fetched' };
    }
  }

  /** The holder's download size, or `again`; `alone` starts a download here, without the lease the holder keeps. */
  async #peerSize(t: Target, digest: Digest, holder: PeerLocation, attempt: number): Promise<number | 'again'> {
    const via = { upstream: t.upstream.name, repository: t.repository };
    const size = await peerSize(this.#deps.cluster!, holder, digest, via, attempt);
    if (size !== 'alone') {
      if (size === 'again') this.#deps.metadata.reread(digest, via);
      return size;
    }
    const dl = this.#downloads.get(digest) ?? this.#start(t, digest, false);
    await dl.ready;
    return 'again';
  }

  /**
   * A download of `digest` running here, for a peer to follow: undefined when there is
   * none (finished, failed or never here), `unshareable` when its early bytes are gone
   * (streaming without caching).
   */
  async running(digest: Digest): Promise<Download | 'unshareable' | undefined> {
    const dl = this.#downloads.get(digest);
    if (!dl || dl.failed) return undefined;
    await dl.ready;
    return dl.passthrough ? 'unshareable' : dl;
  }

  /**
   * A manifest fetched from the upstream through `t` names these blobs. A registry takes a
   * manifest only when its repository holds every blob it names, so the ones the store
   * has or is fetching are linked to `t` now, sparing the HEAD a cached blob otherwise
   * needs before it is served to a new repository (a base layer shared by many images).
   * Layers that live elsewhere (non-distributable, with `urls`) vouch for nothing.
   */
  async vouch(t: Target, blobs: readonly Descriptor[]): Promise<void> {
    const { metadata } = this.#deps;
    const vouched = blobs.filter((b) => isDigest(b.digest) && !isNonDistributableType(b.mediaType ?? '') && !('urls' in b));
    // Looked up and linked together: on a shared database each is a round trip.
    await Promise.all(
      vouched.map(async (b) => {
        // A blob the database cannot tell about now is not linked: that only costs a HEAD later.
        const stored = this.#downloads.has(b.digest as Digest) || ((await this.#stored.row(b.digest as Digest)) ?? 'unknown') !== 'unknown';
        if (stored) await metadata.link(t.upstream.name, t.repository, b.digest);
      }),
    );
  }


  /** Being downloaded or read by a client right now: not to be evicted. */
  inUse(digest: string): boolean {
    return this.#downloads.has(digest as Digest) || this.#readers.has(digest as Digest);
  }

  /** The downloads running now, with their progress (the status page). */
  downloads(): Array<{ digest: string; upstream: string; repository: string; received: number; size?: number }> {
    return [...this.#downloads.values()].map((d) => ({ digest: d.digest, upstream: d.upstream.name, repository: d.repository, received: d.received, ...(d.size === undefined ? {} : { size: d.size }) }));
  }

  /** Bytes received so far by the download of `digest`, if one is running. */
  progress(digest: Digest): number | undefined {
    return this.#downloads.get(digest)?.received;
  }

  /** A linked hit in the store, or the download (joined or started) that will bring it. */
  async #find(t: Target, digest: Digest, again = true): Promise<{ size: number } | { download: Download } | { peer: PeerLocation }> {
    const { metadata } = this.#deps;
    // The lookups below wait on the database (a round trip on PostgreSQL): a download
    // running now may be committed, recorded and gone from the map before they answer,
    // after the stat that would have found its blob. It is joined all the same.
    const running = this.#downloads.get(digest);
    const committedBefore = this.#committed;
    const st = await this.#stored.intact(digest);
    // Read after the await: a download may have published and linked the blob meanwhile.
    let linked = await metadata.isLinked(t.upstream.name, t.repository, digest);
    if (st && linked) {
      metadata.touch(digest);
      return st;
    }
    if (st) {
      // The bytes are here, but this repository may not hold them: ask before serving,
      // keeping the blob from eviction meanwhile, and look again after (another process,
      // gc or cache rm, may still have removed it).
      await this.#holding(digest, () => t.upstream.headBlob(t.repository, digest));
      await metadata.link(t.upstream.name, t.repository, digest);
      linked = true;
      const still = await this.#stored.intact(digest);
      if (still) {
        metadata.touch(digest);
        return still;
      }
    }
    let dl = this.#downloads.get(digest) ?? running;
    // A failed download is not joined; nor is one streaming without caching, whose early
    // bytes are gone from memory: this client gets a download of its own.
    if (dl?.failed || dl?.passthrough) dl = undefined;
    // One that started and was committed while we looked: its blob is a hit now.
    if (!dl && again && this.#committed !== committedBefore) return this.#find(t, digest, false);
    if (!dl) this.#refuseMismatched(digest);
    if (dl && !linked && (dl.upstream !== t.upstream || dl.repository !== t.repository)) await this.#vouchFor(t, digest);
    return dl ? { download: dl } : this.#claim(t, digest, linked);
  }

  /** Joining a download started through another repository is no way around the link rule. */
  async #vouchFor(t: Target, digest: Digest): Promise<void> {
    await t.upstream.headBlob(t.repository, digest);
    await this.#deps.metadata.link(t.upstream.name, t.repository, digest);
  }

  /** In a cluster, the replica that takes the digest's lease downloads it; the others follow. */
  async #claim(t: Target, digest: Digest, linked: boolean): Promise<{ size: number } | { download: Download } | { peer: PeerLocation }> {
    const cluster = this.#deps.cluster;
    if (!cluster) return { download: this.#start(t, digest, false) };
    const claim = await cluster.leases.claim(digest, { upstream: t.upstream.name, repository: t.repository });
    // Started here by another request while the lease was asked for: one download per replica too.
    const local = this.#downloads.get(digest);
    if (local && !local.failed && !local.passthrough) return { download: local };
    if (claim.mine) {
      // A holder that finished records the blob before it lets go of the lease: taken
      // after that, the lease comes with the blob already there. Asked afresh, not memoised.
      cluster.leases.hold(digest);
      this.#deps.metadata.reread(digest, { upstream: t.upstream.name, repository: t.repository });
      if (await this.#stored.intact(digest)) {
        cluster.leases.release(digest);
        return this.#find(t, digest, false);
      }
      const dl = this.#downloads.get(digest) ?? this.#start(t, digest, true);
      cluster.leases.release(digest);
      return { download: dl };
    }
    if (!linked && (claim.via?.upstream !== t.upstream.name || claim.via.repository !== t.repository)) await this.#vouchFor(t, digest);
    return { peer: claim.holder };
  }

  /** Counts what is about to be sent (roll-ups, metrics) as the body is opened, or the client redirected. */
  #handle(t: Target, source: 'hit' | 'miss', size: number | undefined, open: (range?: ByteRange) => BodySource, location?: string): BlobHandle {
    const { metadata, metrics } = this.#deps;
    const count = (range: ByteRange | undefined, redirected: boolean) => {
      const bytes = range ? range.end - range.start + 1 : (size ?? 0);
      metadata.bump(t.upstream.name, source === 'hit' ? 'bytes_cache' : 'bytes_upstream', bytes);
      metadata.bumpImage(t.upstream.name, t.repository, 'image_bytes', bytes);
      if (source === 'hit') metadata.bump(t.upstream.name, 'cache_hits');
      metrics?.cache.inc({ kind: 'blob', result: source });
      metrics?.bytes.inc({ source: redirected ? 'redirect' : source === 'hit' ? 'cache' : 'upstream' }, bytes);
      if (redirected) metrics?.blobRedirects.inc();
    };
    const handle: BlobHandle = {
      size,
      source,
      open: (range) => {
        count(range, false);
        return open(range);
      },
    };
    if (location !== undefined) {
      handle.redirect = (range) => {
        count(range, true);
        return location;
      };
    }
    return handle;
  }

  /** Runs `fn` with `digest` counted as in use, so the evictor leaves it alone. */
  async #holding<T>(digest: Digest, fn: () => Promise<T>): Promise<T> {
    this.#readers.set(digest, (this.#readers.get(digest) ?? 0) + 1);
    try {
      return await fn();
    } finally {
      this.#release(digest);
    }
  }

  #release(digest: Digest): void {
    const n = (this.#readers.get(digest) ?? 1) - 1;
    if (n > 0) this.#readers.set(digest, n);
    else this.#readers.delete(digest);
  }

  /** Counts an open reader until it is closed. */
  #track(digest: Digest, source: BodySource): BodySource {
    this.#readers.set(digest, (this.#readers.get(digest) ?? 0) + 1);
    let open = true;
    return {
      whole: source.whole,
      readInto: (buf) => source.readInto(buf),
      close: () => {
        if (open) {
          open = false;
          this.#release(digest);
        }
        return source.close();
      },
    };
  }

  /** `leased`: under this replica's lease on the digest, released once the blob is recorded or the download failed. */
  #start(t: Target, digest: Digest, leased: boolean): Download {
    const dl = new Download({ ...this.#deps, signal: this.#shutdown.signal }, t.upstream, t.repository, digest);
    this.#downloads.set(digest, dl);
    const leases = leased ? this.#deps.cluster?.leases : undefined;
    leases?.hold(digest);
    const forget = () => {
      leases?.release(digest);
      if (this.#downloads.get(digest) === dl) this.#downloads.delete(digest);
    };
    dl.done.then(() => {
      this.#committed++;
      forget();
    }, (err: unknown) => {
      forget();
      if (err instanceof DigestMismatch || err instanceof SizeMismatch) this.#rememberMismatch(t, digest, err);
    });
    return dl;
  }

  #rememberMismatch(t: Target, digest: Digest, err: Error): void {
    this.#mismatched.set(digest, this.#now());
    this.#deps.metrics?.digestMismatches.inc();
    this.#deps.events?.record({ kind: 'digest_mismatch', upstream: t.upstream.name, repository: t.repository, digest, message: `blob from the upstream did not match: ${err.message}`, details: { what: 'blob' } });
  }

  /** Throws, without asking the upstream, while a download of `digest` recently brought the wrong content. */
  #refuseMismatched(digest: Digest): void {
    const at = this.#mismatched.get(digest);
    if (at === undefined) return;
    const age = this.#now() - at;
    if (age >= MISMATCH_MEMORY_MS) {
      this.#mismatched.delete(digest);
      return;
    }
    const wait = Math.ceil((MISMATCH_MEMORY_MS - age) / 1000);
    throw new UpstreamInvalid(`blob ${digest} from the upstream did not match its digest ${Math.floor(age / 1000)} s ago; not fetched again for ${wait} s`);
  }

  #now(): number {
    return (this.#deps.now ?? Date.now)();
  }

  /** Aborts downloads in flight (their spool files are removed) and waits for them to settle. */
  async close(): Promise<void> {
    this.#shutdown.abort();
    await Promise.allSettled([...this.#downloads.values()].map((d) => d.done));
  }
}
