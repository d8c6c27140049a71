// The processes the benchmark talks to, each a child on 127.0.0.1 with its own temp dir:
// the fake upstream (bench/upstream-server.ts), regmirror (`src/main.ts serve`), Debian's
// distribution in proxy mode (`docker-registry`) and nginx as a plain file server. Also
// tool detection (the /proc-based CPU audit and RSS sampler live in machine.ts).
import { execFileSync, fork, spawn, type ChildProcess } from 'node:child_process';
import { accessSync, constants, openSync, closeSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, dirname, join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { fileURLToPath } from 'node:url';
import { describeCgroup, MemoryCgroup } from './memory-cgroup.js';
import { benchChildEnv, benchMemoryLimit } from './node-local-env.js';
import type { BlobInfo, CountersJson, Reply, Request, UpstreamInfo, UpstreamSpec } from './upstream-server.js';

export { cpuAudit, machineBusy, rssNow, sampleRss, type CpuAudit, type RssSample } from './machine.js';

export const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
/**
 * The checkout whose regmirror is measured: this one, or BENCH_REGMIRROR_DIR (another
 * worktree, built there), so that a before and an after run under the same harness.
 */
export const SUBJECT_ROOT = process.env.BENCH_REGMIRROR_DIR ? resolve(process.env.BENCH_REGMIRROR_DIR) : REPO_ROOT;

/** True when the binary is on PATH (or the absolute path is executable). */
export function findTool(name: string): string | undefined {
  const dirs = (process.env.PATH ?? '').split(delimiter).concat(['/usr/sbin', '/sbin']);
  for (const dir of dirs) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return join(dir, name);
    } catch {
      // not here
    }
  }
  return undefined;
}

export async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const { port } = server.address() as AddressInfo;
  await new Promise((r) => server.close(r));
  return port;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL after `graceMs`. */
export async function stopChild(child: ChildProcess, graceMs = 15_000): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((r) => child.once('exit', () => r()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

async function waitFor(what: string, child: ChildProcess, probe: () => Promise<boolean>, logPath: string, timeoutMs = 30_000, pollMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited(child)) throw new Error(`${what} exited with ${child.exitCode ?? child.signalCode}:\n${await tail(logPath)}`);
    if (await probe().catch(() => false)) return;
    await sleep(pollMs);
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms:\n${await tail(logPath)}`);
}

async function tail(path: string): Promise<string> {
  return (await readFile(path, 'utf8').catch(() => '')).slice(-4000);
}

/** Opens a log file for a child's stdout and stderr: a file, so the parent reads nothing while measuring. */
function logFd(path: string): number {
  return openSync(path, 'a');
}

// ---------------------------------------------------------------------------
// A proxy under test

export interface Proxy {
  kind: 'regmirror' | 'distribution';
  url: string;
  pid: number;
  dir: string;
  /** Where the proxy keeps its cache (inside `dir`): what its size on disk is measured of. */
  storeDir: string;
  /** performance.now() when the process was spawned (the last attempt, if a port was taken). */
  spawnedAt: number;
  /** Resolves once the blob is fully in the proxy's own storage (distribution stores it in the background). */
  waitCached(digest: string, size: number, timeoutMs?: number): Promise<void>;
  logs(): Promise<string>;
  /** SIGTERM; the temp dir goes too unless `keepDir`, which lets a new process start on the same store. */
  stop(opts?: { keepDir?: boolean }): Promise<void>;
}

/** Options both proxies take. */
export interface ProxyStartOptions {
  /** The `dir` of an earlier instance stopped with keepDir: start on its store (a restart) instead of a fresh temp dir. */
  reuseDir?: string;
  /** How often readiness (/v2/ answering 200) is polled; default 50 ms. */
  readyPollMs?: number;
}

export interface RegmirrorOptions extends ProxyStartOptions {
  upstreamUrl: string;
  logLevel: string;
  /** 'dist': `node dist/main.js` (built by `npm run build`, as `npm start` runs it); 'tsx': `node --import tsx src/main.ts`. */
  entry: 'dist' | 'tsx';
  /** Passes --cpu-prof to the child; the profile is written to this directory when it exits. */
  cpuProfDir?: string;
  /** Metadata in this PostgreSQL database (pool as configured by default) instead of SQLite in the data dir. */
  postgres?: { url: string; password: string };
  /** More top-level YAML, given the port the process will listen on (a replica advertises it). */
  extraConfig?: (port: number) => string;
  /** More environment for the child (e.g. the bucket's credentials). */
  env?: Record<string, string>;
}

/** `node dist/main.js serve --config <tmp>/mirror.yaml` (or the tsx equivalent) on a free loopback port. */
export async function startRegmirror(opts: RegmirrorOptions): Promise<Proxy> {
  const dir = opts.reuseDir ?? (await mkdtemp(join(tmpdir(), 'regmirror-bench-')));
  const dataDir = join(dir, 'data');
  const logPath = join(dir, 'regmirror.log');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const config = [
      `listen: "127.0.0.1:${port}"`,
      `dataDir: ${JSON.stringify(dataDir)}`,
      'defaultUpstream: docker.io',
      ...(opts.postgres ? ['metadata:', '  postgres:', `    url: ${JSON.stringify(opts.postgres.url)}`, `    password: ${JSON.stringify(opts.postgres.password)}`] : []),
      'log:',
      `  level: ${opts.logLevel}`,
      'upstreams:',
      '  docker.io:',
      `    url: ${JSON.stringify(opts.upstreamUrl)}`,
      opts.extraConfig?.(port) ?? '',
      '',
    ].join('\n');
    const configPath = join(dir, 'mirror.yaml');
    await writeFile(configPath, config);
    const fd = logFd(logPath);
    const prof = opts.cpuProfDir ? ['--cpu-prof', `--cpu-prof-dir=${opts.cpuProfDir}`] : [];
    // V8 flags such as --max-semi-space-size, to measure their effect on RSS and CPU.
    const nodeFlags = (process.env.BENCH_NODE_FLAGS ?? '').split(/\s+/).filter(Boolean);
    const main = opts.entry === 'dist' ? ['dist/main.js'] : ['--import', 'tsx', 'src/main.ts'];
    const limit = benchMemoryLimit(REPO_ROOT);
    const cgroup = limit === undefined ? undefined : await MemoryCgroup.create(limit);
    const nodeArgs = [...nodeFlags, ...prof, ...main, 'serve', '--config', configPath];
    const [command, args] = cgroup ? cgroup.wrap(process.execPath, nodeArgs) : [process.execPath, nodeArgs];
    const spawnedAt = performance.now();
    const child = spawn(command, args, {
      cwd: SUBJECT_ROOT,
      stdio: ['ignore', fd, fd],
      env: { ...process.env, ...benchChildEnv(REPO_ROOT), ...opts.env },
    });
    closeSync(fd);
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('regmirror', child, async () => (await fetch(`${url}/v2/`)).status === 200, logPath, undefined, opts.readyPollMs);
    } catch (err) {
      await stopChild(child);
      await cgroup?.remove();
      if (attempt < 4 && /EADDRINUSE/.test(await tail(logPath))) continue;
      // A reused dir belongs to the caller, who may want its log.
      if (!opts.reuseDir) await rm(dir, { recursive: true, force: true });
      throw err;
    }
    return {
      kind: 'regmirror',
      url,
      pid: child.pid!,
      dir,
      storeDir: dataDir,
      spawnedAt,
      waitCached: (digest, size, timeoutMs) => waitFile(join(dataDir, 'blobs', 'sha256', digest.slice(7, 9), digest.slice(7)), size, timeoutMs),
      logs: () => tail(logPath),
      stop: async (o) => {
        await stopChild(child);
        if (cgroup) {
          process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}]   regmirror (pid ${child.pid}): ${describeCgroup(await cgroup.read())}\n`);
          await cgroup.remove();
        }
        if (!o?.keepDir) await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

/** Debian's docker-registry (distribution 2.8) as a pull-through cache of `upstreamUrl`. */
export async function startDistribution(opts: { upstreamUrl: string; logLevel: string } & ProxyStartOptions): Promise<Proxy> {
  const dir = opts.reuseDir ?? (await mkdtemp(join(tmpdir(), 'distribution-bench-')));
  const root = join(dir, 'storage');
  const logPath = join(dir, 'registry.log');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const config = {
      version: '0.1',
      log: { level: opts.logLevel === 'debug' ? 'debug' : opts.logLevel, accesslog: { disabled: opts.logLevel !== 'info' && opts.logLevel !== 'debug' } },
      storage: { filesystem: { rootdirectory: root }, cache: { blobdescriptor: 'inmemory' }, delete: { enabled: true } },
      http: { addr: `127.0.0.1:${port}` },
      proxy: { remoteurl: opts.upstreamUrl },
    };
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, JSON.stringify(config)); // JSON is YAML
    const fd = logFd(logPath);
    const spawnedAt = performance.now();
    const child = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('docker-registry', child, async () => (await fetch(`${url}/v2/`)).status === 200, logPath, undefined, opts.readyPollMs);
    } catch (err) {
      await stopChild(child);
      if (attempt < 4 && /address already in use/.test(await tail(logPath))) continue;
      if (!opts.reuseDir) await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const blobPath = (d: string) => join(root, 'docker', 'registry', 'v2', 'blobs', 'sha256', d.slice(7, 9), d.slice(7), 'data');
    return {
      kind: 'distribution',
      url,
      pid: child.pid!,
      dir,
      storeDir: root,
      spawnedAt,
      waitCached: (digest, size, timeoutMs) => waitFile(blobPath(digest), size, timeoutMs),
      logs: () => tail(logPath),
      stop: async (o) => {
        await stopChild(child);
        if (!o?.keepDir) await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

async function waitFile(path: string, size: number, timeoutMs = 120_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    const st = await stat(path).catch(() => undefined);
    if (st && st.size === size) return;
    await sleep(50);
  }
  throw new Error(`${path} did not reach ${size} bytes in ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------
// nginx, serving one directory over loopback

export interface Nginx {
  url: string;
  /** The master and its workers. */
  pids(): Promise<number[]>;
  stop(): Promise<void>;
}

/** nginx -c <tmp>/nginx.conf -g 'daemon off;' with one worker (one event loop, like regmirror) and sendfile. */
export async function startNginx(nginxPath: string, root: string): Promise<Nginx> {
  const dir = await mkdtemp(join(tmpdir(), 'nginx-bench-'));
  for (const d of ['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi']) await mkdir(join(dir, d));
  const logPath = join(dir, 'error.log');
  for (let attempt = 0; ; attempt++) {
    const port = await freePort();
    const conf = [
      // As root, workers would otherwise switch to an account that cannot enter the 0700 temp dirs.
      ...(process.getuid?.() === 0 ? ['user root;'] : []),
      'worker_processes 1;',
      `pid ${join(dir, 'nginx.pid')};`,
      `error_log ${logPath} warn;`,
      'events { worker_connections 1024; }',
      'http {',
      '  access_log off;',
      '  sendfile on;',
      '  tcp_nopush on;',
      '  keepalive_requests 100000;',
      '  default_type application/octet-stream;',
      ...['body', 'proxy', 'fastcgi', 'uwsgi', 'scgi'].map((d) => `  ${d === 'body' ? 'client_body' : d}_temp_path ${join(dir, d)};`),
      '  server {',
      `    listen 127.0.0.1:${port};`,
      `    root ${root};`,
      '  }',
      '}',
      '',
    ].join('\n');
    const confPath = join(dir, 'nginx.conf');
    await writeFile(confPath, conf);
    const fd = logFd(logPath);
    const child = spawn(nginxPath, ['-e', logPath, '-p', dir, '-c', confPath, '-g', 'daemon off;'], { stdio: ['ignore', fd, fd] });
    closeSync(fd);
    const url = `http://127.0.0.1:${port}`;
    try {
      await waitFor('nginx', child, async () => (await fetch(`${url}/`)).status > 0, logPath, 15_000);
    } catch (err) {
      await stopChild(child);
      if (attempt < 4 && /Address already in use/i.test(await tail(logPath))) continue;
      await rm(dir, { recursive: true, force: true });
      throw err;
    }
    const master = child.pid!;
    return {
      url,
      pids: async () => {
        const kids = await readFile(`/proc/${master}/task/${master}/children`, 'utf8').catch(() => '');
        return [master, ...kids.trim().split(/\s+/).filter(Boolean).map(Number)];
      },
      stop: async () => {
        await stopChild(child); // SIGTERM: fast shutdown of master and worker
        await rm(dir, { recursive: true, force: true });
      },
    };
  }
}

// ---------------------------------------------------------------------------
// The fake upstream, in its own process

export interface Upstream {
  info: UpstreamInfo;
  pid: number;
  counters(): Promise<CountersJson>;
  /** Zeroes the counters and returns them as they were. */
  reset(): Promise<CountersJson>;
  /** A new single-layer image of `bytes` incompressible bytes (repository `replicas/<seed>`): a digest no cache has yet. */
  freshBlob(bytes: number, seed: string): Promise<BlobInfo>;
  /** Paces every blob body at this rate from now on; undefined: full speed. */
  throttle(bytesPerSecond: number | undefined): Promise<void>;
  stop(): Promise<void>;
}

/** A request as the caller gives it: the id is added when it is sent. */
type WithoutId<T> = T extends unknown ? Omit<T, 'id'> : never;
type Command = WithoutId<Request>;

export async function startUpstream(spec: UpstreamSpec): Promise<Upstream> {
  const child = fork(join(REPO_ROOT, 'bench', 'upstream-server.ts'), [JSON.stringify(spec)], {
    cwd: REPO_ROOT,
    execArgv: ['--import', 'tsx'],
    stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
  });
  const waiting = new Map<number, (r: Reply) => void>();
  let nextId = 1;
  const info = await new Promise<UpstreamInfo>((resolveInfo, reject) => {
    child.once('exit', (code) => reject(new Error(`bench upstream exited with ${code}`)));
    child.on('message', (msg: { ready?: UpstreamInfo } & Partial<Reply>) => {
      if (msg.ready) resolveInfo(msg.ready);
      else if (msg.id !== undefined) {
        waiting.get(msg.id)?.(msg as Reply);
        waiting.delete(msg.id);
      }
    });
  });
  const ask = (cmd: Command) =>
    new Promise<Reply>((r) => {
      const id = nextId++;
      waiting.set(id, r);
      child.send({ id, ...cmd });
    });
  const counters = async (cmd: 'counters' | 'reset') => (await ask({ cmd })).counters!;
  return {
    info,
    pid: child.pid!,
    counters: () => counters('counters'),
    reset: () => counters('reset'),
    freshBlob: async (bytes, seed) => (await ask({ cmd: 'fresh', bytes, seed })).blob!,
    throttle: async (bytesPerSecond) => void (await ask({ cmd: 'throttle', bytesPerSecond })),
    stop: () => stopChild(child),
  };
}

/** The commit being measured, marked when src/ has uncommitted changes. */
export function gitCommit(): string | undefined {
  try {
    const head = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: SUBJECT_ROOT, encoding: 'utf8' }).trim();
    const dirty = execFileSync('git', ['status', '--porcelain', '--untracked-files=no', '--', 'src'], { cwd: SUBJECT_ROOT, encoding: 'utf8' }).trim() !== '';
    return dirty ? `${head}+dirty-src` : head;
  } catch {
    return undefined;
  }
}

/** sync(1): writes back every dirty page now, so that a measured phase does not pay for earlier ones. */
export function flushDisk(): void {
  execFileSync('sync');
}
