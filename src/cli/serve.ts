// The composition root: opens the store and database, builds one client per upstream,
// the caches and the app, and listens. startServer() is what `regmirror serve` and the
// tests run.
import { mkdir, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { BlobCache } from '../cache/blobs.js';
import { ManifestCache } from '../cache/manifests.js';
import type { Config } from '../config.js';
import { createApp } from '../http/app.js';
import { UpstreamTable } from '../http/target.js';
import { createLogger, type Logger } from '../log.js';
import { Metrics } from '../metrics.js';
import { FsBlobStore } from '../store/blob-store.js';
import { MetadataDb } from '../store/metadata.js';
import { UpstreamClient } from '../upstream/client.js';
import type { UpstreamObserver } from '../upstream/rate-limit.js';
import { gatherStatus } from './status.js';

export interface ServerOptions {
  log?: Logger;
  now?: () => number;
}

export interface RunningServer {
  /** `http://host:port` as bound (port 0 in the config picks a free one). */
  url: string;
  port: number;
  metadata: MetadataDb;
  blobs: BlobCache;
  upstreams: UpstreamTable;
  metrics: Metrics;
  close(): Promise<void>;
}

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.log.level);
  const now = opts.now ?? Date.now;
  await mkdir(config.dataDir, { recursive: true });
  const store = new FsBlobStore(config.dataDir);
  await store.init();
  const swept = await store.sweepTmp();
  if (swept > 0) log.info('removed unfinished downloads left by a previous run', { files: swept });
  const metadata = new MetadataDb(join(config.dataDir, 'mirror.db'), { now });
  const metrics = new Metrics({ defaultMetrics: true });
  const observer = observeInto(metadata, metrics);
  const clients = config.upstreams.map((u) => new UpstreamClient(u, { log, now, observer }));
  const upstreams = new UpstreamTable(clients, config.defaultUpstream);
  const blobs = new BlobCache({ store, metadata, metrics, log: log.child({ component: 'blobs' }) });
  const manifests = new ManifestCache({ store, metadata, metrics, log: log.child({ component: 'manifests' }), now, memoryBytes: config.manifestMemoryBytes });
  metrics.gauge('regmirror_downloads_in_flight', 'Blob downloads from upstreams in progress', () => blobs.inFlight);
  metrics.gauge('regmirror_store_bytes', 'Bytes of published blobs and manifests', () => metadata.storeSize().bytes);
  const status = () => gatherStatus({ metadata, upstreams: clients, now: now(), inFlight: blobs.inFlight });
  const readiness = () => checkReadiness(metadata, config.dataDir);
  const app = createApp({ upstreams, blobs, manifests, metrics, log, admin: { metrics, readiness, status } });

  const server = await new Promise<Server>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: config.listen.host, port: config.listen.port }, () => resolve(s as Server));
    s.once('error', reject);
  });
  const { port, address } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  log.info('listening', { address: `${host}:${port}`, dataDir: config.dataDir, upstreams: clients.map((c) => c.name) });

  let closing: Promise<void> | undefined;
  const close = () =>
    (closing ??= (async () => {
      await new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Idle keep-alive sockets would hold close() open; in-flight responses are cut.
        server.closeAllConnections();
      });
      await blobs.close();
      await Promise.all(clients.map((c) => c.close()));
      metadata.close();
    })());
  return { url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`, port, metadata, blobs, upstreams, metrics, close };
}

/** Upstream observations go to SQLite (batched) and to the metrics. */
function observeInto(metadata: MetadataDb, metrics: Metrics): UpstreamObserver {
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
  };
}

/** Ready when the database answers and the data dir takes a write. */
async function checkReadiness(metadata: MetadataDb, dataDir: string): Promise<{ ok: boolean; checks: Record<string, string> }> {
  const checks: Record<string, string> = {};
  try {
    metadata.storeSize();
    checks.database = 'ok';
  } catch (err) {
    checks.database = (err as Error).message;
  }
  const probe = join(dataDir, 'tmp', `.ready-${process.pid}`);
  try {
    await writeFile(probe, 'ok');
    await rm(probe, { force: true });
    checks.store = 'ok';
  } catch (err) {
    checks.store = `not writable: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`;
  }
  return { ok: Object.values(checks).every((v) => v === 'ok'), checks };
}
