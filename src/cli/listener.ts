// The listening socket: plain HTTP/1.1, or TLS with HTTP/2 and HTTP/1.1 by ALPN whose
// certificate is reloaded without dropping connections; per-client connection limits,
// idle and header timeouts against slow or hostile clients, and a graceful close that
// lets responses in flight finish within a grace period.
import { readFile } from 'node:fs/promises';
import { createServer as createHttpServer, Server as HttpServer, type ServerResponse } from 'node:http';
import { createSecureServer, type Http2SecureServer, type ServerHttp2Session, type Http2ServerResponse } from 'node:http2';
import type { AddressInfo, Socket } from 'node:net';
import type { TLSSocket } from 'node:tls';
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
  /**
   * Stops accepting; waits up to `graceMs` for open connections to finish, then cuts them
   * and says how many it cut. Called again, the shorter grace wins.
   */
  close(graceMs: number): Promise<{ cut: number }>;
}

/** HTTP/2 streams one connection may have open at once: nginx's and Go's default. */
export const MAX_STREAMS_PER_CONNECTION = 100;

export async function listen(config: Config, fetch: FetchHandler, log: Logger): Promise<Listener> {
  const tls = config.tls;
  const server = createServer(config.limits, tls && (await readTls(tls)), getRequestListener(fetch));
  const connections = trackConnections(server, config.limits, log);
  const close = gracefulCloser(server, connections);
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

/** The same limits for both: header deadline, no request deadline (blob bodies are long), bounded streams. */
function createServer(limits: Config['limits'], tls: TlsFiles | undefined, handler: RequestHandler): HttpServer | Http2SecureServer {
  const { headersTimeoutMs } = limits;
  // node:http checks header deadlines only this often; its default (30 s) would double them.
  const connectionsCheckingInterval = Math.max(10, Math.min(1000, headersTimeoutMs));
  if (!tls) return createHttpServer({ headersTimeout: headersTimeoutMs, requestTimeout: 0, connectionsCheckingInterval }, handler);
  const server = createSecureServer({ ...tls, allowHTTP1: true, handshakeTimeout: headersTimeoutMs, settings: { maxConcurrentStreams: MAX_STREAMS_PER_CONNECTION } }, handler);
  // HTTP/1.1 over TLS runs node:http's connection code, which reads these from the server.
  Object.assign(server, { headersTimeout: headersTimeoutMs, requestTimeout: 0, connectionsCheckingInterval });
  return server;
}

type RequestHandler = ReturnType<typeof getRequestListener>;
type TlsFiles = { cert: Buffer; key: Buffer };

async function readTls(tls: { cert: string; key: string }): Promise<TlsFiles> {
  const [cert, key] = await Promise.all([readFile(tls.cert), readFile(tls.key)]);
  return { cert, key };
}

/** Open connections: raw sockets, counted per client address, and the HTTP/2 sessions on some of them. */
interface Connections {
  sockets: Set<Socket>;
  sessions: Set<ServerHttp2Session>;
  /** Responses in flight, over either protocol: what a shutdown that runs out of grace cuts. */
  responses: Set<object>;
}

/** Counts connections per client address, refuses those over the limit, closes idle ones. */
function trackConnections(server: HttpServer | Http2SecureServer, limits: Config['limits'], log: Logger): Connections {
  const conns: Connections = { sockets: new Set(), sessions: new Set(), responses: new Set() };
  const perClient = new Map<string, number>();
  const secure = !(server instanceof HttpServer);
  server.on('connection', (socket: Socket) => {
    const who = socket.remoteAddress ?? '?';
    const n = (perClient.get(who) ?? 0) + 1;
    if (limits.connectionsPerClient > 0 && n > limits.connectionsPerClient) {
      log.warn('connection refused: too many from one client', { client: who, limit: limits.connectionsPerClient });
      socket.destroy();
      return;
    }
    perClient.set(who, n);
    conns.sockets.add(socket);
    // No byte either way for this long: a stalled or hostile client, never a slow transfer.
    // Under TLS the raw socket sees no activity of its own: the TLS socket or session is timed.
    if (!secure) socket.setTimeout(limits.clientIdleTimeoutMs, () => socket.destroy());
    socket.once('close', () => {
      conns.sockets.delete(socket);
      const left = (perClient.get(who) ?? 1) - 1;
      if (left > 0) perClient.set(who, left);
      else perClient.delete(who);
    });
  });
  server.on('request', (_req: unknown, res: ServerResponse | Http2ServerResponse) => {
    conns.responses.add(res);
    res.once('close', () => conns.responses.delete(res));
  });
  if (secure) watchSecure(server, limits, conns);
  return conns;
}

/** Idle and header deadlines for TLS connections: HTTP/1.1 ones on their socket, HTTP/2 ones on their session. */
function watchSecure(server: Http2SecureServer, limits: Config['limits'], conns: Connections): void {
  server.on('secureConnection', (socket: TLSSocket) => {
    if (socket.alpnProtocol !== 'h2') socket.setTimeout(limits.clientIdleTimeoutMs, () => socket.destroy());
  });
  server.on('session', (session: ServerHttp2Session) => {
    conns.sessions.add(session);
    // The session owns the socket: destroying the socket would leave the connection open.
    session.setTimeout(limits.clientIdleTimeoutMs, () => session.destroy());
    // An HTTP/2 client has headersTimeout for its first request, as an HTTP/1.1 one has.
    const first = setTimeout(() => session.destroy(), limits.headersTimeoutMs);
    session.once('stream', () => clearTimeout(first));
    session.once('close', () => {
      clearTimeout(first);
      conns.sessions.delete(session);
    });
  });
}

/**
 * close(grace): stop accepting, wait for open connections up to the deadline, then cut them.
 * A later call with a shorter grace (a second SIGTERM) moves the deadline closer; every call
 * resolves when the one close is done.
 */
function gracefulCloser(server: HttpServer | Http2SecureServer, conns: Connections): (graceMs: number) => Promise<{ cut: number }> {
  let deadline = Infinity;
  let closing: Promise<{ cut: number }> | undefined;
  let wake: (() => void) | undefined;
  const run = async () => {
    const closed = new Promise<void>((resolve) => server.close(() => resolve()));
    // Idle keep-alive connections would hold close() open for nothing. An HTTP/2 session is
    // told to go away: its open streams finish, then it closes.
    (server as HttpServer).closeIdleConnections?.();
    for (const s of conns.sessions) s.close();
    while (conns.sockets.size > 0 && Date.now() < deadline) {
      await new Promise<void>((r) => {
        wake = r;
        setTimeout(r, Math.min(50, Math.max(0, deadline - Date.now())));
      });
      (server as HttpServer).closeIdleConnections?.();
    }
    const cut = conns.responses.size;
    for (const s of conns.sessions) s.destroy();
    for (const s of conns.sockets) s.destroy();
    await closed;
    return { cut };
  };
  return (graceMs) => {
    deadline = Math.min(deadline, Date.now() + graceMs);
    wake?.();
    return (closing ??= run());
  };
}
