// The composition root: opens the store and database, builds one client per upstream,
// the caches and the app, and listens. startServer() is what `regmirror serve` and the
// tests run.
import { readFile } from 'node:fs/promises';
import pLimit from 'p-limit';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { ClientAuth, parseHtpasswd } from '../http/access.js';
import { createApp, createPeerApp } from '../http/app.js';
import { joinMembers } from '../cluster/membership.js';
import { createLogger, resolveLogFormat, type Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { MetadataUnavailable, StoreFull } from '../errors.js';
import { configPath, type Values } from './args.js';
import { verify } from './cache-admin.js';
import { serverCacheAdmin } from './cache-remote.js';
import { serverTagsAdmin } from './tags.js';
import { openCache, type CacheContext } from './context.js';
import { listen, type Listener } from './listener.js';
import { prewarm, prewarmRequest } from './prewarm.js';
import { gatherDashboard } from './dashboard.js';
import { eventView } from '../events/view.js';
import type { EventsQuery } from '../http/admin.js';
import { gatherStatus } from './status.js';
import { applyHeapGrowing } from './heap-growth.js';

/** Images a server's prewarms resolve at once (manifests fetched, blobs listed), across all requests. */
const PREWARM_IMAGES_AT_ONCE = 8;

export interface ServerOptions {
  log?: Logger;
  now?: () => number;
}

export interface RunningServer extends Pick<CacheContext, 'metadata' | 'blobs' | 'upstreams' | 'metrics' | 'manifests' | 'store' | 'evictor' | 'events'> {
  /** `http(s)://host:port` as bound (port 0 in the config picks a free one). */
  url: string;
  port: number;
  reloadTls(): Promise<void>;
  /** Stops at once: open connections are cut and downloads in flight abandoned. */
  close(): Promise<void>;
  /** SIGTERM: stop accepting, let responses in flight finish within limits.shutdownGrace. */
  shutdown(): Promise<void>;
}

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<RunningServer> {
  const ctx = await openCache(config, { ...opts, sweepSpool: true, joinCluster: true });
  let members: { stop(): Promise<void> } | undefined;
  try {
    if (ctx.metadata.backend === 'postgres') members = await joinMembers(ctx.metadata.leases, ctx.replica, ctx.log.child({ component: 'cluster' }));
  } catch (err) {
    await ctx.close();
    throw err;
  }
  const { log, metadata, metrics, clients, upstreams, blobs, manifests } = ctx;
  const now = ctx.now;
  metrics.gauge('regmirror_downloads_in_flight', 'Blob downloads from upstreams in progress', () => blobs.inFlight);
  metrics.gauge('regmirror_store_bytes', 'Bytes of published blobs and manifests', async () => (await metadata.storeSize()).bytes);
  metrics.gauge('regmirror_store_pinned_bytes', 'Bytes of pinned blobs and manifests (never evicted)', async () => (await metadata.storeSize()).pinnedBytes);
  exportLimits(ctx);
  ctx.evictor?.start();
  const verifier = scheduleVerify(ctx, config.storage.verifyEveryMs);
  // The readers of events write the recorder's buffer first, so they show what just happened.
  const status = async () => {
    await ctx.flushEvents();
    return gatherStatus({ metadata, upstreams: clients, now: now(), inFlight: blobs.inFlight });
  };
  const readiness = () => checkReadiness(ctx);
  // One bound for every prewarm the server runs, however many requests ask at once.
  const imageLimit = pLimit(PREWARM_IMAGES_AT_ONCE);
  const prewarmJob = (body: unknown) => {
    const { images, options } = prewarmRequest(body);
    return { run: (emit: (e: object) => void) => prewarm(ctx, images, { ...options, imageLimit, onEvent: emit }) };
  };
  const clientAuth = await loadClientAuth(config);
  const dashboard = async () => {
    await ctx.flushEvents();
    return gatherDashboard({ metadata, upstreams: clients, now: now(), downloads: () => blobs.downloads(), maxBytes: ctx.evictor?.limitBytes });
  };
  const events = async (q: EventsQuery) => {
    await ctx.flushEvents();
    return (await metadata.events.list(q)).map(eventView);
  };
  const admin = { metrics, readiness, status, dashboard, events, prewarm: prewarmJob, cacheAdmin: serverCacheAdmin(ctx), tagsAdmin: serverTagsAdmin(ctx.metadata, config), adminToken: config.adminToken, clientAuth };
  const peer = config.cluster ? { blobs, secret: config.cluster.secret } : undefined;
  const app = createApp({ upstreams, blobs, manifests, metrics, log, admin, clientAuth, ...(ctx.signatures ? { signatures: ctx.signatures } : {}), ...(peer && !config.cluster?.listen ? { peer } : {}) });
  let listener: Listener | undefined;
  let peerListener: Listener | undefined;
  try {
    listener = await listen(config, app.fetch, log);
    if (peer && config.cluster?.listen) peerListener = await listen({ ...config, listen: config.cluster.listen }, createPeerApp(peer, log).fetch, log);
  } catch (err) {
    await listener?.close(0);
    await clientAuth?.close();
    await members?.stop();
    await ctx.close();
    throw err;
  }
  log.info('listening', { url: listener.url, dataDir: config.dataDir, upstreams: clients.map((c) => c.name), offline: config.offline });
  if (!clientAuth && !isLoopback(config.listen.host)) {
    log.warn('no client authentication: anyone who can reach this address can pull through the mirror and its upstream credentials (set auth.tokens or auth.htpasswd)', { listen: config.listen.host });
  }

  let closing: Promise<void> | undefined;
  const stop = (graceMs: number) => {
    // Already closing (a second signal): only cut the grace short.
    if (closing) void listener.close(graceMs);
    return (closing ??= (async () => {
      const started = Date.now();
      log.info('shutting down', { graceMs, inFlight: blobs.inFlight });
      clearInterval(verifier);
      const [main, peers] = await Promise.all([listener.close(graceMs), peerListener?.close(graceMs)]);
      await members?.stop();
      await clientAuth?.close();
      await ctx.close();
      // Cut: responses still running when the grace ran out (or at once, for close()).
      log.info('shut down', { cut: main.cut + (peers?.cut ?? 0), ms: Date.now() - started });
    })());
  };
  return {
    url: listener.url,
    port: listener.port,
    metadata,
    blobs,
    upstreams,
    metrics,
    events: ctx.events,
    manifests,
    store: ctx.store,
    evictor: ctx.evictor,
    reloadTls: () => listener.reloadTls(),
    close: () => stop(0),
    shutdown: () => stop(config.limits.shutdownGraceMs),
  };
}

/** What the alerts compare the store and the upstreams against: the size limit, its watermarks, and which upstreams are held back. */
function exportLimits({ metrics, clients, evictor }: CacheContext): void {
  // While an upstream fails, a miss is answered UNAVAILABLE at once and one probe at a time goes out.
  metrics.upstreamGauge('regmirror_upstream_up', '0 while the upstream itself is held back after a failure (refused, timed out, 502/503/504) for its failureBackoff, else 1', () =>
    clients.map((c) => [c.name, c.state.holdBack.downUntil > 0 ? 0 : 1]),
  );
  // Without storage.maxSize there is no limit: the gauges stay absent rather than read 0.
  if (!evictor) return;
  metrics.gauge('regmirror_store_limit_bytes', 'storage.maxSize in bytes (a share of the file system resolved at start-up)', () => evictor.limitBytes);
  metrics.gauge('regmirror_store_high_watermark_bytes', 'Store bytes above which eviction starts (storage.highWatermark of the limit)', () => evictor.highBytes);
  metrics.gauge('regmirror_store_low_watermark_bytes', 'Store bytes eviction brings the store down to (storage.lowWatermark of the limit)', () => evictor.lowBytes);
}

/** storage.verifyEvery: re-hash the store in the background, removing what fails. */
function scheduleVerify(ctx: CacheContext, everyMs: number): NodeJS.Timeout | undefined {
  if (everyMs <= 0) return undefined;
  let running = false;
  const timer = setInterval(() => {
    if (running) return;
    running = true;
    verify(ctx, { repair: true, concurrency: 1 })
      .then((r) => {
        ctx.metrics.verifyFailures.inc(r.bad.length);
        ctx.metadata.bump('(store)', 'verify_failed', r.bad.length);
        if (r.bad.length) ctx.log.warn('verify removed blobs that no longer match their digest', { bad: r.bad });
      })
      .catch((err: Error) => ctx.log.error('background verify failed', { err }))
      .finally(() => (running = false));
  }, everyMs);
  timer.unref();
  return timer;
}

async function loadClientAuth(config: Config): Promise<ClientAuth | undefined> {
  const { tokens, htpasswd } = config.auth;
  if (tokens.length === 0 && !htpasswd) return undefined;
  let users = new Map<string, string>();
  if (htpasswd) {
    const text = await readFile(htpasswd, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new ConfigError('auth.htpasswd', `cannot read ${htpasswd}: ${err.code ?? err.message}`);
    });
    users = parseHtpasswd(text, htpasswd);
  }
  return new ClientAuth({ tokens, users });
}

function isLoopback(host: string): boolean {
  return host === 'localhost' || host === '::1' || host.startsWith('127.');
}

/** Ready when the database answers and the spool and the store take a write. */
async function checkReadiness({ metadata, spool, store }: Pick<CacheContext, 'metadata' | 'spool' | 'store'>): Promise<{ ok: boolean; checks: Record<string, string> }> {
  const checks: Record<string, string> = {};
  const degraded = new Set<string>();
  try {
    await metadata.storeSize();
    checks.database = 'ok';
  } catch (err) {
    // Still ready: warm content is served from memory and writes wait (a replica set whose
    // every member turned unready with the database would stop serving altogether).
    if (err instanceof MetadataUnavailable) degraded.add('database');
    // A code, not the message: messages name files, and /readyz is open to anyone.
    checks.database = `failed: ${(err as NodeJS.ErrnoException).code ?? (err as Error).name}`;
  }
  try {
    await spool.checkWritable();
    await store.checkWritable();
    checks.store = 'ok';
  } catch (err) {
    checks.store = `not writable: ${err instanceof StoreFull ? err.reason : ((err as NodeJS.ErrnoException).code ?? (err as Error).name)}`;
  }
  return { ok: Object.entries(checks).every(([k, v]) => v === 'ok' || degraded.has(k)), checks };
}

/**
 * The last line of defence: an error no handler caught (a throw in a timer or stream
 * callback, a rejection nobody awaited) is logged and counted, and the process keeps
 * serving. Exiting would cut every client's pull for one request's fault; staying up is
 * safe because nothing half-done can be read back as good: blobs are verified before
 * they are published, rows are written in transactions, and a request left hanging is
 * closed by the idle timeout. `regmirror_uncaught_errors_total` is the alert to set.
 */
function keepServing(log: Logger, metrics: Metrics): void {
  const report = (kind: 'exception' | 'rejection') => (err: unknown) => {
    metrics.uncaught.inc({ kind });
    const e = err instanceof Error ? err : new Error(String(err));
    log.error(`uncaught ${kind}, kept serving`, { err: e, stack: e.stack });
  };
  process.on('uncaughtException', report('exception'));
  process.on('unhandledRejection', report('rejection'));
}

/** `regmirror serve`: runs until SIGTERM/SIGINT; SIGHUP reloads the TLS certificate. */
export async function serveCommand(values: Values): Promise<number> {
  applyHeapGrowing();
  const config = loadConfig(configPath(values));
  if (values.offline) config.offline = true;
  const log = createLogger(config.log.level, undefined, { format: resolveLogFormat(config.log.format) });
  const server = await startServer(config, { log });
  keepServing(log.child({ component: 'process' }), server.metrics);
  process.on('SIGHUP', () => {
    server.reloadTls().catch((err: Error) => console.error(`regmirror: TLS reload failed, keeping the old certificate: ${err.message}`));
  });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  // Responses in flight finish within limits.shutdownGrace; a second signal cuts them.
  process.once('SIGTERM', () => void server.close());
  process.once('SIGINT', () => void server.close());
  await server.shutdown();
  return 0;
}
