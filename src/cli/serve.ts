// The composition root: opens the store and database, builds one client per upstream,
// the caches and the app, and listens. startServer() is what `regmirror serve` and the
// tests run.
import { mkdir } from 'node:fs/promises';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { serve } from '@hono/node-server';
import { BlobCache } from '../cache/blobs.js';
import { ManifestCache } from '../cache/manifests.js';
import type { Config } from '../config.js';
import { createApp } from '../http/app.js';
import { UpstreamTable } from '../http/target.js';
import { createLogger, type Logger } from '../log.js';
import { FsBlobStore } from '../store/blob-store.js';
import { MetadataDb } from '../store/metadata.js';
import { UpstreamClient } from '../upstream/client.js';

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
  close(): Promise<void>;
}

export async function startServer(config: Config, opts: ServerOptions = {}): Promise<RunningServer> {
  const log = opts.log ?? createLogger(config.log.level);
  await mkdir(config.dataDir, { recursive: true });
  const store = new FsBlobStore(config.dataDir);
  await store.init();
  const swept = await store.sweepTmp();
  if (swept > 0) log.info('removed unfinished downloads left by a previous run', { files: swept });
  const metadata = new MetadataDb(join(config.dataDir, 'mirror.db'), { now: opts.now });
  const clients = config.upstreams.map((u) => new UpstreamClient(u, { log, now: opts.now }));
  const upstreams = new UpstreamTable(clients, config.defaultUpstream);
  const blobs = new BlobCache({ store, metadata, log: log.child({ component: 'blobs' }) });
  const manifests = new ManifestCache({ store, metadata, log: log.child({ component: 'manifests' }), now: opts.now, memoryBytes: config.manifestMemoryBytes });
  const app = createApp({ upstreams, blobs, manifests, log });

  const server = await new Promise<ReturnType<typeof serve>>((resolve, reject) => {
    const s = serve({ fetch: app.fetch, hostname: config.listen.host, port: config.listen.port }, () => resolve(s));
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
        (server as import('node:http').Server).closeAllConnections?.();
      });
      await blobs.close();
      await Promise.all(clients.map((c) => c.close()));
      metadata.close();
    })());
  return { url: `http://${host === '0.0.0.0' ? '127.0.0.1' : host}:${port}`, port, metadata, blobs, close };
}
