// The composition root: opens the store and database, builds one client per upstream,
// the caches and the app, and listens. startServer() is what `regmirror serve` and the
// tests run.
import { rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import type { Config } from '../config.js';
import { createApp } from '../http/app.js';
import type { Logger } from '../log.js';
import type { MetadataDb } from '../store/metadata.js';
import { openCache, type CacheContext } from './context.js';
import { prewarm, prewarmRequest } from './prewarm.js';
import { gatherStatus } from './status.js';

export interface ServerOptions {
  log?: Logger;
  now?: () => number;
}

export interface RunningServer extends Pick<CacheContext, 'metadata' | 'blobs' | 'upstreams' | 'metrics' | 'manifests' | 'store'> {
  /** `http://host:port` as bound (port 0 in the config picks a free one). */
  url: string;
  port: number;
  close(): Promise<void>;
}

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<RunningServer> {
  const ctx = await openCache(config, { ...opts, sweepTmp: true });
  const { log, metadata, metrics, clients, upstreams, blobs, manifests } = ctx;
  const now = ctx.now;
  metrics.gauge('regmirror_downloads_in_flight', 'Blob downloads from upstreams in progress', () => blobs.inFlight);
  metrics.gauge('regmirror_store_bytes', 'Bytes of published blobs and manifests', () => metadata.storeSize().bytes);
  const status = () => gatherStatus({ metadata, upstreams: clients, now: now(), inFlight: blobs.inFlight });
  const readiness = () => checkReadiness(metadata, config.dataDir);
  const prewarmJob = (body: unknown) => {
    const { images, options } = prewarmRequest(body);
    return { run: (emit: (e: object) => void) => prewarm(ctx, images, { ...options, onEvent: emit }) };
  };
  const admin = { metrics, readiness, status, prewarm: prewarmJob, adminToken: config.adminToken };
  const app = createApp({ upstreams, blobs, manifests, metrics, log, admin });

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
      await ctx.close();
    })());
  return { url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`, port, metadata, blobs, upstreams, metrics, manifests, store: ctx.store, close };
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
