// Shared test plumbing: a regmirror on an ephemeral loopback port, in a temp data dir,
// in front of the given upstreams; and small HTTP helpers with deadlines.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request as httpRequest } from 'node:http';
import { request } from 'undici';
import { DEFAULTS, type Config, type UpstreamConfig } from '../src/config.js';
import { startServer, type RunningServer } from '../src/cli/serve.js';
import { createLogger, type Logger } from '../src/log.js';

export interface Mirror extends RunningServer {
  dataDir: string;
  logs: string[];
  stop(): Promise<void>;
}

export interface MirrorOptions {
  upstreams: Array<Partial<UpstreamConfig> & { name: string; url: string }>;
  defaultUpstream?: string;
  dataDir?: string;
  now?: () => number;
  adminToken?: string;
  offline?: boolean;
  auth?: Config['auth'];
  tls?: Config['tls'];
  limits?: Partial<Config['limits']>;
  storage?: Partial<Config['storage']>;
}

/** Starts regmirror on 127.0.0.1:0; stop() closes it and removes its data dir (unless one was given). */
export async function startMirror(opts: MirrorOptions): Promise<Mirror> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'regmirror-test-')));
  const base = DEFAULTS.upstreams[0];
  const config: Config = {
    ...structuredClone(DEFAULTS),
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    defaultUpstream: opts.defaultUpstream,
    upstreams: opts.upstreams.map((u) => ({ ...base, aliases: [], tokenRealms: [], headersTimeoutMs: 5000, idleTimeoutMs: 5000, connectTimeoutMs: 2000, ...u })),
    log: { level: 'debug' },
    offline: opts.offline ?? false,
    auth: opts.auth ?? { tokens: [] },
    limits: { ...DEFAULTS.limits, ...opts.limits },
    storage: { ...DEFAULTS.storage, ...opts.storage },
    ...(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.adminToken ? { adminToken: opts.adminToken } : {}),
  };
  const logs: string[] = [];
  const log: Logger = createLogger('debug', (line) => logs.push(line));
  const server = await startServer(config, { log, now: opts.now });
  return {
    ...server,
    dataDir,
    logs,
    stop: async () => {
      await server.close();
      if (!opts.dataDir) await rm(dataDir, { recursive: true, force: true });
    },
  };
}

export interface Fetched {
  status: number;
  headers: Record<string, string>;
  body: Buffer;
}

/** GET/HEAD with a deadline; the body is read whole (tests only). */
export async function get(url: string, init: { method?: 'GET' | 'HEAD'; headers?: Record<string, string>; timeoutMs?: number } = {}): Promise<Fetched> {
  const res = await request(url, { method: init.method ?? 'GET', headers: init.headers, signal: AbortSignal.timeout(init.timeoutMs ?? 20_000) });
  const body = Buffer.from(await res.body.arrayBuffer());
  const headers: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : (v ?? '');
  return { status: res.statusCode, headers, body };
}

export function sha256(b: Uint8Array): string {
  return 'sha256:' + createHash('sha256').update(b).digest('hex');
}

/** The OCI error code of a response body, or undefined. */
export function errorCode(r: Fetched): string | undefined {
  try {
    return (JSON.parse(r.body.toString()) as { errors: Array<{ code: string }> }).errors[0].code;
  } catch {
    return undefined;
  }
}

/** A GET whose path is sent byte for byte (URL parsers would resolve `..` before sending). */
export function rawGet(baseUrl: string, path: string): Promise<Fetched> {
  const { hostname, port } = new URL(baseUrl);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, method: 'GET', timeout: 10_000 }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const headers: Record<string, string> = {};
        for (const [k, v] of Object.entries(res.headers)) headers[k] = Array.isArray(v) ? v.join(', ') : (v ?? '');
        resolve({ status: res.statusCode ?? 0, headers, body: Buffer.concat(chunks) });
      });
      res.on('error', reject);
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}
