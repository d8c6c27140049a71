// Shared test plumbing: a regmirror on an ephemeral loopback port, in a temp data dir,
// in front of the given upstreams; and small HTTP helpers with deadlines.
import { createHash } from 'node:crypto';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { execFile, spawn } from 'node:child_process';
import { request as httpRequest } from 'node:http';
import { request } from 'undici';
import { DEFAULTS, type Config, type UpstreamConfig } from '../src/config.js';
import { startServer, type RunningServer } from '../src/cli/serve.js';
import { createLogger, type Logger } from '../src/log.js';
import { metadataConfigFor } from './support/metadata-backend.js';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';
import type { TestContext } from 'node:test';

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
  /** The backend under test (REGMIRROR_TEST_METADATA) unless given. */
  metadata?: Config['metadata'];
  /** Another mirror to fetch every upstream through. */
  parent?: Config['parent'];
  /** The events section: webhook, queue, retention. */
  events?: Config['events'];
  policies?: Config['policies'];
}

/** Starts regmirror on 127.0.0.1:0; stop() closes it and removes its data dir (unless one was given). */
export async function startMirror(opts: MirrorOptions): Promise<Mirror> {
  const dataDir = opts.dataDir ?? (await mkdtemp(join(tmpdir(), 'regmirror-test-')));
  const base = DEFAULTS.upstreams[0];
  const config: Config = {
    ...structuredClone(DEFAULTS),
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    metadata: opts.metadata ?? (await metadataConfigFor(dataDir)),
    defaultUpstream: opts.defaultUpstream,
    upstreams: opts.upstreams.map((u) => ({ ...base, aliases: [], tokenRealms: [], headersTimeoutMs: 5000, idleTimeoutMs: 5000, connectTimeoutMs: 2000, ...u })),
    log: { level: 'debug', format: 'json' },
    offline: opts.offline ?? false,
    auth: opts.auth ?? { tokens: [] },
    limits: { ...DEFAULTS.limits, ...opts.limits },
    storage: { ...DEFAULTS.storage, ...opts.storage },
    ...(opts.tls ? { tls: opts.tls } : {}),
    ...(opts.parent ? { parent: opts.parent } : {}),
    ...(opts.events ? { events: opts.events } : {}),
    ...(opts.policies ? { policies: opts.policies } : {}),
    ...(opts.adminToken !== undefined ? { adminToken: opts.adminToken } : {}),
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

const MAIN = new URL('../src/main.ts', import.meta.url).pathname;

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `regmirror ARGS...` as a child process, as a user would; never rejects. */
export function cli(args: string[], env: Record<string, string> = {}): Promise<CliResult> {
  return new Promise((resolve) => {
    execFile(process.execPath, ['--import', 'tsx', MAIN, ...args], { env: { ...process.env, ...env }, maxBuffer: 64 * 1024 * 1024 }, (err, stdout, stderr) => {
      const e = err as (Error & { code?: number; signal?: NodeJS.Signals }) | null;
      resolve({ code: e ? (typeof e.code === 'number' ? e.code : null) : 0, signal: e?.signal ?? null, stdout, stderr });
    });
  });
}

export interface ChildServer {
  /** Resolves with the URL from the `listening` log line; rejects if the process exits first. */
  url: Promise<string>;
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  kill(signal?: NodeJS.Signals): void;
  /** Everything the process wrote to stderr so far (its JSON log lines). */
  stderr(): string;
}

/** `regmirror serve --config FILE` as a child process (for signals and kill -9). */
export function serveChild(config: string, env: Record<string, string> = {}): ChildServer {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env, ...env } });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
  let seen = '';
  const url = new Promise<string>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`regmirror did not start within 20 s:\n${seen}`)), 20_000);
    child.stderr!.on('data', (c: Buffer) => {
      seen += c.toString();
      const m = /"msg":"listening".*?"url":"([^"]+)"/.exec(seen);
      if (m) {
        clearTimeout(timer);
        resolve(m[1]);
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`regmirror exited before listening:\n${seen}`));
    });
  });
  url.catch(() => {});
  return { url, exited, kill: (signal = 'SIGKILL') => child.kill(signal), stderr: () => seen };
}

/** Waits until no download is in flight: a client's transfer can end before its blob is recorded. */
export async function downloadsSettled(m: { blobs: { inFlight: number } }, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (m.blobs.inFlight > 0) {
    if (Date.now() > deadline) throw new Error('downloads did not settle');
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** Reads a whole response; `complete` is false when the transfer failed part-way. */
export async function pull(url: string, headers: Record<string, string> = {}): Promise<{ status: number; complete: boolean; body: Buffer }> {
  const res = await request(url, { headers, signal: AbortSignal.timeout(30_000) });
  const chunks: Buffer[] = [];
  try {
    for await (const c of res.body) chunks.push(c as Buffer);
    return { status: res.statusCode, complete: true, body: Buffer.concat(chunks) };
  } catch {
    return { status: res.statusCode, complete: false, body: Buffer.concat(chunks) };
  }
}

/** The value of an unlabelled Prometheus counter in a /metrics text, 0 when absent. */
export function counter(metricsText: string, name: string): number {
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(metricsText);
  return m ? Number(m[1]) : 0;
}

/** Polls `check` until it holds; fails naming `what` after `timeoutMs`. */
export async function until(what: string, check: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await check())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 10));
  }
}

/** A SQLite metadata store in a temp dir, closed and removed after the test. */
export async function tempSqliteStore(t: TestContext, prefix: string): Promise<SqliteMetadataStore> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  const store = new SqliteMetadataStore(join(dir, 'mirror.db'));
  t.after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  return store;
}
