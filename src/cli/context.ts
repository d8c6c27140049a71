// The cache without the HTTP server: store, database, upstream clients and the two
// caches over one data dir. `serve` builds its app on it; prewarm, export and import use
// it directly, so they fill and read the cache through exactly the server's code path
// and can run beside a running server (SQLite WAL + busy_timeout, atomic commits).
import { BlobCache } from '../cache/blobs.js';
import { DownloadLeases } from '../cluster/download-leases.js';
import { PeerClient } from '../cluster/peer-client.js';
import { SharedWork } from '../cluster/shared-work.js';
import { SharedUpstreamState } from '../cluster/shared-upstream-state.js';
import { newReplica, type Replica } from '../cluster/replica.js';
import type { ClusterPeers } from '../cache/peer-blobs.js';
import { DeferredRemovals } from '../cache/deferred-removal.js';
import { Evictor } from '../cache/evict.js';
import { ManifestCache } from '../cache/manifests.js';
import { TagGuard } from '../cache/tag-guard.js';
import { ConfigError, deleteGraceOf, type Config } from '../config.js';
import { UpstreamTable } from '../http/target.js';
import { createLogger, resolveLogFormat, type Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import type { EventSink } from '../events/event.js';
import { EventRecorder } from '../events/recorder.js';
import { EVENTS_DEFAULTS } from '../config-policies.js';
import { PolicySet } from '../policy/policies.js';
import { SignatureFinder } from '../policy/signature-finder.js';
import type { SignatureGuard } from '../policy/signature-guard.js';
import { openBlobStorage } from '../store/blob-storage.js';
import { SmallBlobMemo } from '../store/small-blob-memo.js';
import type { ContentStore } from '../store/content-store.js';
import { databaseFile, hasDatabase } from '../store/data-dir.js';
import { Metadata, type MetadataOptions } from '../store/metadata.js';
import { openMetadataStore, type MetadataBackend } from '../store/open-metadata.js';
import type { Spool } from '../store/spool.js';
import { UpstreamClient } from '../upstream/client.js';
import type { UpstreamObserver } from '../upstream/rate-limit.js';

export interface CacheContext {
  config: Config;
  log: Logger;
  now: () => number;
  /** Published blobs. */
  store: ContentStore;
  /** Local files for blobs being written and verified (downloads, imports). */
  spool: Spool;
  metadata: Metadata;
  metrics: Metrics;
  /** This process as the holder of leases, and its address for the other replicas. */
  replica: Replica;
  clients: UpstreamClient[];
  upstreams: UpstreamTable;
  blobs: BlobCache;
  manifests: ManifestCache;
  /** Present when storage.maxSize sets a limit. */
  evictor?: Evictor;
  /** Where whatever notices an event records it. */
  events: EventSink;
  /** Writes the events still buffered (at most a second's), for a reader that must see them all. */
  flushEvents(): Promise<void>;
  /** The config's signature and tag policies, compiled. */
  policies: PolicySet;
  /** Checks manifests against the signature policies; absent when no policy says anything about signatures. */
  signatures?: SignatureGuard;
  close(): Promise<void>;
}

export interface ContextOptions {
  log?: Logger;
  now?: () => number;
  /** Remove spool files of a previous run: only the server does, a CLI beside it must not. */
  sweepSpool?: boolean;
  /**
   * Download under the cluster's leases and follow the other replicas' downloads (with a
   * `cluster` section): only the server, which answers its peers, may take a lease.
   */
  joinCluster?: boolean;
}

/** Opens the data dir and builds everything below the HTTP layer. */
export async function openCache(config: Config, opts: ContextOptions = {}): Promise<CacheContext> {
  const log = opts.log ?? createLogger(config.log.level, undefined, { format: resolveLogFormat(config.log.format) });
  const now = opts.now ?? Date.now;
  const storage = await openBlobStorage({ dataDir: config.dataDir, ...(config.storage.backend === 's3' ? { s3: config.storage.s3 } : {}) });
  const { spool } = storage;
  if (opts.sweepSpool) {
    const swept = await spool.sweep();
    if (swept > 0) log.info('removed unfinished downloads left by a previous run', { files: swept });
  }
  const metrics = new Metrics({ defaultMetrics: opts.sweepSpool === true });
  const replica = newReplica(config.cluster?.advertise);
  const metadata = await openMetadata(config, { now, log, ...reportInto(log, metrics) });
  // Only the server prunes: a command beside it leaves the retention to it.
  const recorder = new EventRecorder({ store: metadata.events, config: config.events ?? EVENTS_DEFAULTS, log: log.child({ component: 'events' }), metrics, now, prune: opts.sweepSpool === true });
  const events: EventSink = recorder;
  // Only the server serves small blobs from memory; a command reads the store as it is.
  const content = opts.sweepSpool ? new SmallBlobMemo(storage.content) : storage.content;
  const removals = new DeferredRemovals({ store: content, metadata, log: log.child({ component: 'evict' }), holder: replica.id, graceMs: deleteGraceOf(config.storage) });
  const store = removals.store;
  const observer = observeInto(metadata, metrics);
  const clients = config.upstreams.map((u) => new UpstreamClient(u, { log, now, observer, offline: config.offline, parent: config.parent }));
  for (const u of config.upstreams) metrics.rateLimitFloor.set({ upstream: u.name }, u.budgetFloor);
  const upstreams = new UpstreamTable(clients, config.defaultUpstream);
  const sharedState = opts.joinCluster && config.cluster ? new SharedUpstreamState(metadata.leases, replica.id, clients, () => metadata.rateLimits(), log.child({ component: 'cluster' })) : undefined;
  let evictor: Evictor | undefined;
  const cluster = opts.joinCluster ? clusterPeers(config, metadata, replica, log) : undefined;
  const blobs = new BlobCache({ store, spool, metadata, metrics, now, events, ...(cluster ? { cluster } : {}), redirect: config.storage.redirect, log: log.child({ component: 'blobs' }), onPublished: () => evictor?.poke(), onStoreFull: () => {
    metrics.passThrough.inc();
    metadata.bump('(store)', 'passthrough');
    evictor?.poke();
  } });
  const limitBytes = await storeLimit(config, store);
  if (limitBytes > 0) {
    const { highWatermark, lowWatermark } = config.storage;
    evictor = new Evictor({ metadata, metrics, events, log: log.child({ component: 'evict' }), inUse: (d) => blobs.inUse(d), remove: (d) => removals.remove(d), holder: replica.id, limitBytes, highWatermark, lowWatermark });
  }
  const policies = new PolicySet(config.policies ?? []);
  const guard = policies.empty ? undefined : new TagGuard({ store: metadata.guardedTags, policies, events, log: log.child({ component: 'tags' }) });
  const manifests = new ManifestCache({ store, metadata, metrics, events, ...(cluster ? { shared: cluster.work } : {}), log: log.child({ component: 'manifests' }), now, memoryBytes: config.manifestMemoryBytes, offline: config.offline, ...(guard ? { guard } : {}), onFetched: (t, referenced) => blobs.vouch(t, referenced) });
  const signatures = await signatureGuard(config, { policies, manifests, blobs, store, events, metrics, log });
  const close = async () => {
    await evictor?.close();
    removals.close();
    await blobs.close();
    cluster?.leases.close();
    sharedState?.close();
    await cluster?.peers.close();
    await Promise.all(clients.map((c) => c.close()));
    await recorder.close();
    await metadata.close();
    await storage.close();
  };
  const flushEvents = () => recorder.flush();
  return { config, log, now, store, spool, metadata, metrics, replica, clients, upstreams, blobs, manifests, evictor, events, flushEvents, policies, ...(signatures ? { signatures } : {}), close };
}

/**
 * The log of a one-shot command (prewarm, export, import, cache): warnings and errors
 * only, since its own output says what it did, in the format the config asks for.
 */
export function commandLogger(config: Config): Logger {
  return createLogger('warn', undefined, { format: resolveLogFormat(config.log.format) });
}

/**
 * A data dir no mirror has used yet (its SQLite metadata was never created): the commands
 * that only read the cache say so rather than create an empty one. A shared PostgreSQL
 * cannot tell, and is opened as it is.
 */
export function noCacheYet(config: Config): boolean {
  return config.metadata.kind === 'sqlite' && !hasDatabase(config.dataDir);
}

/** The metadata backend the config names, wrapped for use. */
export async function openMetadata(config: Config, opts: MetadataOptions & { log?: Logger } = {}): Promise<Metadata> {
  const m = config.metadata;
  const backend: MetadataBackend =
    m.kind === 'sqlite'
      ? { kind: 'sqlite', path: databaseFile(config.dataDir) }
      : { ...m, onIdleError: (err) => opts.log?.warn('metadata: an idle database connection failed', { err: err.message }) };
  const store = await openMetadataStore(backend, { now: opts.now });
  return new Metadata(store, opts);
}

/** What the metadata reports of a database that fails or cannot be reached goes to the log and the metrics. */
function reportInto(log: Logger, metrics: Metrics): MetadataOptions {
  // An outage is met by every request: one line per kind every ten seconds says it, the counter counts it.
  const lastLogged = new Map<string, number>();
  const quiet = (what: string) => {
    const now = Date.now();
    if (now - (lastLogged.get(what) ?? 0) < 10_000) return true;
    lastLogged.set(what, now);
    return false;
  };
  return {
    onFlushError(err, pending) {
      metrics.metadataFlushFailures.inc();
      log.warn('metadata flush failed; the counts are kept for the next one', { err, ...pending });
    },
    onUnavailable(err, what) {
      metrics.metadataUnavailable.inc({ what });
      if (!quiet(what)) log.warn(what === 'read' ? 'metadata unavailable; answered from memory or as a miss' : what === 'write' ? 'metadata unavailable; the write waits' : 'metadata unavailable and its write queue full; a write was dropped', { reason: err.reason });
    },
    onWriteFailed(err) {
      log.error('a queued metadata write failed and was dropped', { err });
    },
  };
}

/** storage.maxSize in bytes: as given, or a share of the store's capacity. */
async function storeLimit(config: Config, store: ContentStore): Promise<number> {
  const max = config.storage.maxSize;
  if (typeof max === 'number') return max;
  const capacity = await store.capacity();
  if (!capacity) throw new ConfigError('storage.maxSize', 'a share of a store that has no size (a bucket) means nothing; give bytes');
  return Math.floor((capacity.totalBytes * max.percent) / 100);
}

/** Upstream observations go to the metadata (batched) and to the metrics. */
function observeInto(metadata: Metadata, metrics: Metrics): UpstreamObserver {
  return {
    rateLimit(upstream, credential, obs, at) {
      metadata.rateLimit(upstream, credential, obs, at);
      if (obs.remaining !== undefined) metrics.rateLimitRemaining.set({ upstream }, obs.remaining);
      if (obs.limit !== undefined) metrics.rateLimitLimit.set({ upstream }, obs.limit);
    },
    request(upstream, kind, status) {
      metadata.request(upstream, kind);
      metrics.upstreamRequests.inc({ upstream, kind, status });
    },
    failed(upstream) {
      metadata.bump(upstream, 'upstream_failed');
    },
    egressRefused(upstream, kind) {
      metrics.egressRefused.inc({ upstream, address: kind });
    },
    parentFallback(upstream) {
      metrics.parentFallbacks.inc({ upstream });
    },
  };
}

/** The leases and the peer client of a replica; none outside a cluster. */
function clusterPeers(config: Config, metadata: Metadata, replica: Replica, log: Logger): (ClusterPeers & { work: SharedWork }) | undefined {
  const c = config.cluster;
  if (!c) return undefined;
  const peerLog = log.child({ component: 'cluster' });
  return {
    leases: new DownloadLeases(metadata.leases, { ...replica, advertise: c.advertise }, peerLog),
    peers: new PeerClient({ secret: c.secret }),
    work: new SharedWork(metadata.leases, replica.id),
  };
}

/**
 * The guard of the signature policies, when any policy has a `signatures` section that is not
 * `off`. Loaded only then: the guard brings the @sigstore libraries (several MiB of heap).
 */
async function signatureGuard(
  config: Config,
  d: { policies: PolicySet; manifests: ManifestCache; blobs: BlobCache; store: ContentStore; events: EventSink; metrics: Metrics; log: Logger },
): Promise<SignatureGuard | undefined> {
  if (!(config.policies ?? []).some((p) => p.signatures && p.signatures.mode !== 'off')) return undefined;
  const { SignatureGuard } = await import('../policy/signature-guard.js');
  const log = d.log.child({ component: 'signatures' });
  (config.policies ?? []).forEach((p, i) => {
    if (p.signatures?.trustedRoot) log.warn('keyless signatures are not verified yet: a bundle with a certificate counts as signed by a key not trusted', { policy: `policies[${i}]`, trustedRoot: p.signatures.trustedRoot.ref });
  });
  const finder = new SignatureFinder({ manifests: d.manifests, blobs: d.blobs, store: d.store, log });
  return new SignatureGuard({ policies: d.policies, finder, manifests: d.manifests, events: d.events, metrics: d.metrics, log });
}
