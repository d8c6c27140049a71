// The listening socket: plain HTTP/1.1, or TLS with HTTP/2 and HTTP/1.1 by ALPN whose
// certificate is reloaded without dropping connections; per-client connection limits,
// idle and header timeouts against slow or hostile clients, and a graceful close that
// lets responses in flight finish within a grace period.
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, type Server as HttpServer } from 'node:http';
import { createSecureServer, type Http2SecureServer } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import { getRequestListener } from '@hono/node-server';
import type { Config } from '../config.js';
import type { Logger } from '../log.js';

type FetchHandler = (req: Request, env: object) => Response | Promise<Response>;

export interface Listener {
  /** `http(s)://host:port` as bound. */
  url: string;
  port: number;
  /** Re-reads the TLS certificate and key; new connections use them, open ones are left alone. */
  reloadTls(): Promise<void>;
  /** Stops accepting; waits up to `graceMs` for open connections to finish, then cuts them. Called again, the shorter grace wins. */
  close(graceMs: number): Promise<void>;
}

export async function listen(config: Config, fetch: FetchHandler, log: Logger): Promise<Listener> {
  const handler = getRequestListener(fetch);
  const tls = config.tls;
  const server: HttpServer | Http2SecureServer = tls
    ? createSecureServer({ ...(await readTls(tls)), allowHTTP1: true }, handler)
    : createHttpServer({ headersTimeout: config.limits.headersTimeoutMs, requestTimeout: 0 }, handler);
  const sockets = trackConnections(server, config.limits, log);
  const close = gracefulCloser(server, sockets);
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(config.listen.port, config.listen.host, () => {
      server.off('error', reject);
      resolve();
    });
  });
  const { port, address } = server.address() as AddressInfo;
  const host = address.includes(':') ? `[${address}]` : address;
  const url = `${tls ? 'https' : 'http'}://${host === '0.0.0.0' ? '127.0.0.1' : host === '[::]' ? '[::1]' : host}:${port}`;
  return {
    url,
    port,
    reloadTls: async () => {
      if (!tls) return;
      (server as Http2SecureServer).setSecureContext(await readTls(tls));
      log.info('TLS certificate reloaded', { cert: tls.cert });
    },
    close,
  };
}

async function readTls(tls: { cert: string; key: string }): Promise<{ cert: Buffer; key: Buffer }> {
  const [cert, key] = await Promise.all([readFile(tls.cert), readFile(tls.key)]);
  return { cert, key };
}

/** Counts connections per client address, refuses those over the limit, closes idle ones. */
function trackConnections(server: HttpServer | Http2SecureServer, limits: Config['limits'], log: Logger): Set<Socket> {
  const sockets = new Set<Socket>();
  const perClient = new Map<string, number>();
  server.on('connection', (socket: Socket) => {
    const who = socket.remoteAddress ?? '?';
    const n = (perClient.get(who) ?? 0) + 1;
    if (limits.connectionsPerClient > 0 && n > limits.connectionsPerClient) {
      log.warn('connection refused: too many from one client', { client: who, limit: limits.connectionsPerClient });
      socket.destroy();
      return;
    }
    perClient.set(who, n);
    sockets.add(socket);
    // No byte either way for this long: a stalled or hostile client, never a slow transfer.
    socket.setTimeout(limits.clientIdleTimeoutMs, () => socket.destroy());
    socket.once('close', () => {
      sockets.delete(socket);
      const left = (perClient.get(who) ?? 1) - 1;
      if (left > 0) perClient.set(who, left);
      else perClient.delete(who);
    });
  });
  return sockets;
}

/**
 * close(grace): stop accepting, wait for open connections up to the deadline, then cut them.
 * A later call with a shorter grace (a second SIGTERM) moves the deadline closer; every call
 * resolves when the one close is done.
 */
function gracefulCloser(server: HttpServer | Http2SecureServer, sockets: Set<Socket>): (graceMs: number) => Promise<void> {
  let deadline = Infinity;
  let closing: Promise<void> | undefined;
  let wake: (() => void) | undefined;
  const run = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // Idle keep-alive connections would hold close() open for nothing.
    (server as HttpServer).closeIdleConnections?.();
    while (sockets.size > 0 && Date.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, Math.min(50, Math.max(0, deadline - Date.now())));
      });
      (server as HttpServer).closeIdleConnections?.();
    }
    for (const s of sockets) s.destroy();
    await closed;
  };
  return (graceMs) => {
    deadline = Math.min(deadline, Date.now() + graceMs);
    wake?.();
    return (closing ??= run());
  };
}
