// Headless Chromium (Debian's `chromium`) for tests of the status page, with every request
// it makes sent through a recording proxy: loopback included, so the proxy sees the page's
// own requests as well as any it would make elsewhere (those are refused and recorded).
// The browser also calls home on its own (component updates, account checks) whatever the
// flags say; its net log tells those apart from the page's, since every request made for a
// page carries the page's site in its network isolation key.
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export const CHROMIUM = '/usr/bin/chromium';
export const haveChromium = existsSync(CHROMIUM);

/** A forward proxy that passes requests for `allowed` (host:port) and refuses the rest; it records every one. */
export interface RecordingProxy {
  port: number;
  /** Every request: `GET http://host:port/path`, or `CONNECT host:port`. */
  seen: string[];
  close(): Promise<void>;
}

export async function startRecordingProxy(allowed: string): Promise<RecordingProxy> {
  const seen: string[] = [];
  const server: Server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    let target: URL;
    try {
      target = new URL(req.url ?? '');
    } catch {
      res.writeHead(400).end();
      return;
    }
    if (target.host !== allowed) {
      res.writeHead(502).end('not the mirror');
      return;
    }
    // Chromium is killed at the end of each visit: any of these sockets may be reset mid-request.
    req.on('error', () => out.destroy());
    res.on('error', () => out.destroy());
    const out = httpRequest(target, { method: req.method, headers: req.headers }, (answer) => {
      answer.on('error', () => res.destroy());
      res.writeHead(answer.statusCode ?? 502, answer.headers);
      answer.pipe(res);
    });
    out.on('error', () => res.destroy());
    req.pipe(out);
  });
  server.on('clientError', (_err, socket) => socket.destroy());
  server.on('connect', (req, socket) => {
    seen.push(`CONNECT ${req.url}`);
    socket.on('error', () => socket.destroy());
    socket.end('HTTP/1.1 502 Bad Gateway\r\n\r\n');
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: (server.address() as AddressInfo).port,
    seen,
    close: () => new Promise((resolve) => {
      server.closeAllConnections();
      server.close(() => resolve());
    }),
  };
}

/**
 * Runs Chromium once on `url` through the proxy: `--dump-dom` (the DOM after scripts ran,
 * returned) or `--screenshot=<file>`. Killed by its process group after `timeoutMs`.
 */
export async function runChromium(url: string, proxyPort: number, mode: { dumpDom: true } | { screenshot: string }, timeoutMs = 30_000): Promise<Visit> {
  const profile = await mkdtemp(join(tmpdir(), 'regmirror-chromium-'));
  const netLog = join(profile, 'net-log.json');
  const args = [
    '--headless',
    '--no-sandbox',
    '--disable-gpu',
    '--no-first-run',
    '--disable-background-networking',
    '--disable-component-update',
    '--disable-sync',
    '--disable-extensions',
    '--disable-default-apps',
    '--disable-domain-reliability',
    '--disable-features=NetworkTimeServiceQuerying,OptimizationHints,Translate,MediaRouter,DialMediaRouteProvider',
    '--disable-client-side-phishing-detection',
    '--disable-component-extensions-with-background-pages',
    '--disable-breakpad',
    '--metrics-recording-only',
    '--enable-automation',
    '--password-store=basic',
    '--use-mock-keychain',
    '--allow-browser-signin=false',
    `--user-data-dir=${profile}`,
    `--log-net-log=${netLog}`,
    `--proxy-server=http://127.0.0.1:${proxyPort}`,
    // Without this Chromium connects to loopback directly, past the proxy.
    '--proxy-bypass-list=<-loopback>',
    '--window-size=1280,1600',
    '--virtual-time-budget=5000',
    'dumpDom' in mode ? '--dump-dom' : `--screenshot=${mode.screenshot}`,
    url,
  ];
  const child = spawn(CHROMIUM, args, { detached: true, stdio: ['ignore', 'pipe', 'pipe'] });
  const out: Buffer[] = [];
  const err: Buffer[] = [];
  child.stdout.on('data', (c: Buffer) => out.push(c));
  child.stderr.on('data', (c: Buffer) => err.push(c));
  const kill = () => {
    try {
      if (child.pid) process.kill(-child.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
  };
  const timer = setTimeout(kill, timeoutMs);
  try {
    const code = await new Promise<number | null>((resolve, reject) => {
      child.on('error', reject);
      child.on('exit', (c) => resolve(c));
    });
    if (code !== 0) throw new Error(`chromium exited with ${code}: ${Buffer.concat(err).toString().slice(-2000)}`);
    return { output: Buffer.concat(out).toString('utf8'), requests: requestsOf(JSON.parse(await readFile(netLog, 'utf8')) as NetLog) };
  } finally {
    clearTimeout(timer);
    kill();
    await rm(profile, { recursive: true, force: true });
  }
}

export interface Visit {
  /** stdout: the DOM with --dump-dom. */
  output: string;
  /** Every URL request the browser started, with the top-frame site it was made for ('null' for the browser's own). */
  requests: Array<{ url: string; site: string }>;
}

interface NetLog {
  constants: { logEventTypes: Record<string, number> };
  events: Array<{ type: number; params?: { url?: string; network_isolation_key?: string } }>;
}

function requestsOf(log: NetLog): Visit['requests'] {
  const start = log.constants.logEventTypes.URL_REQUEST_START_JOB;
  return log.events
    .filter((e) => e.type === start && e.params?.url !== undefined)
    .map((e) => ({ url: e.params!.url!, site: (e.params!.network_isolation_key ?? 'null').split(' ')[0] }));
}
