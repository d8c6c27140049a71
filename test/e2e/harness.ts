// End-to-end harness: real third-party tools (distribution, containerd, skopeo) run as
// child processes on 127.0.0.1, each with its own temp dir, so e2e tests can exercise
// regmirror against the clients and upstream it is meant to sit between.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { createHash, createPrivateKey, randomUUID, sign, X509Certificate, type KeyObject } from 'node:crypto';
import { accessSync, constants } from 'node:fs';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';
import assert from 'node:assert/strict';
import type { TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import type { FixtureImage } from '../../fixtures/images.js';

export interface RunResult {
  code: number;
  stdout: string;
  stderr: string;
}

const TOOL_TIMEOUT_MS = 120_000;

// ---------------------------------------------------------------------------
// Tool discovery

/** True when the binary is on PATH. */
export function haveTool(name: string): boolean {
  for (const dir of (process.env.PATH ?? '').split(delimiter)) {
    if (!dir) continue;
    try {
      accessSync(join(dir, name), constants.X_OK);
      return true;
    } catch {
      // not in this PATH entry
    }
  }
  return false;
}

/**
 * For node:test: returns true if the test should run. Missing tools fail the test in CI
 * (so a broken CI image cannot silently turn e2e coverage off) and skip it elsewhere.
 */
export function requireTools(t: TestContext, ...tools: string[]): boolean {
  const missing = tools.filter((tool) => !haveTool(tool));
  if (missing.length === 0) return true;
  const message = `needs ${missing.join(', ')}: not installed`;
  if (process.env.CI === 'true') throw new Error(message);
  t.skip(message);
  return false;
}

// ---------------------------------------------------------------------------
// Process helpers

/** Runs a command to completion; resolves (never rejects) so tests can assert on `code`. */
export function run(cmd: string, args: string[], env?: NodeJS.ProcessEnv): Promise<RunResult> {
  return new Promise((resolve) => {
    const opts = { timeout: TOOL_TIMEOUT_MS, killSignal: 'SIGKILL' as const, maxBuffer: 64 << 20, env: env ?? process.env };
    execFile(cmd, args, opts, (err, stdout, stderr) => {
      // err.code is the exit status for a normal failure, a string (e.g. ENOENT) when the
      // binary could not start; a timeout kill leaves it null.
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      const note = err && err.killed ? `\n[killed after ${TOOL_TIMEOUT_MS} ms]` : '';
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + note });
    });
  });
}

/**
 * Run skopeo with args; 120 s timeout. `--insecure-policy` is prepended so results do
 * not depend on the machine's /etc/containers/policy.json (absent on some CI images).
 */
export function skopeo(args: string[]): Promise<RunResult> {
  return run('skopeo', ['--insecure-policy', ...args]);
}

/** `skopeo copy` of an image to a fresh `dir:` (removed after the test), with every blob file there checked against its digest. */
export async function skopeoCopyVerified(t: TestContext, ref: string, img: FixtureImage): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-skopeo-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const dest = join(dir, 'out');
  const res = await skopeo(['copy', '--src-tls-verify=false', `docker://${ref}`, `dir:${dest}`]);
  assert.equal(res.code, 0, `skopeo copy ${ref}\n${res.stderr}`);
  const digestOf = (b: Buffer) => `sha256:${createHash('sha256').update(b).digest('hex')}`;
  assert.equal(digestOf(await readFile(join(dest, 'manifest.json'))), img.root.digest);
  for (const digest of img.blobs.keys()) assert.equal(digestOf(await readFile(join(dest, digest.slice('sha256:'.length)))), digest);
}

/** Keeps the last output of a long-running child for error messages. */
function captureOutput(child: ChildProcess): () => string {
  let log = '';
  const append = (chunk: Buffer) => {
    log = (log + chunk.toString()).slice(-200_000);
  };
  child.stdout?.on('data', append);
  child.stderr?.on('data', append);
  return () => log;
}

function exited(child: ChildProcess): boolean {
  return child.exitCode !== null || child.signalCode !== null;
}

/** SIGTERM, then SIGKILL if the child is still alive after `graceMs`. */
async function stopChild(child: ChildProcess, graceMs = 10_000): Promise<void> {
  if (exited(child)) return;
  const gone = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  child.kill('SIGTERM');
  const timer = setTimeout(() => child.kill('SIGKILL'), graceMs);
  await gone;
  clearTimeout(timer);
}

/** A port that was free a moment ago; callers must cope with losing the race. */
async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Polls `probe` until it returns true; fails early if `child` dies meanwhile. */
async function waitFor(what: string, child: ChildProcess, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    if (exited(child)) throw new Error(`${what} exited with ${child.exitCode ?? child.signalCode}`);
    if (await probe().catch(() => false)) return;
    await sleep(100);
  }
  throw new Error(`${what} not ready after ${timeoutMs} ms`);
}

// ---------------------------------------------------------------------------
// Token server (docker registry token auth, as Docker Hub does it)

/** Basic-auth user the token server grants push+pull; anonymous callers only get pull. */
export const TEST_USER = { username: 'pusher', password: 'push-secret' } as const;

const TOKEN_SERVICE = 'regmirror-e2e-registry';
const TOKEN_ISSUER = 'regmirror-e2e-token-server';

interface TokenSigner {
  key: KeyObject;
  /** Base64 DER of the self-signed cert, for the JWT x5c header. */
  certDer: string;
}

/**
 * A self-signed P-256 cert made by openssl. Distribution verifies the JWT's x5c chain
 * against rootcertbundle, so the signing cert itself is the trusted root.
 */
async function makeSigner(dir: string): Promise<{ signer: TokenSigner; certPath: string }> {
  const keyPath = join(dir, 'token.key');
  const certPath = join(dir, 'token.crt');
  const args = ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  args.push('-keyout', keyPath, '-out', certPath, '-days', '2', '-subj', '/CN=regmirror-e2e-token');
  const res = await run('openssl', args);
  if (res.code !== 0) throw new Error(`openssl failed: ${res.stderr}`);
  const key = createPrivateKey(await readFile(keyPath));
  const certDer = new X509Certificate(await readFile(certPath)).raw.toString('base64');
  return { signer: { key, certDer }, certPath };
}

const b64url = (value: unknown) => Buffer.from(JSON.stringify(value)).toString('base64url');

interface Access {
  type: string;
  name: string;
  actions: string[];
}

function signJwt(signer: TokenSigner, subject: string, access: Access[]): string {
  const now = Math.floor(Date.now() / 1000);
  const header = { typ: 'JWT', alg: 'ES256', x5c: [signer.certDer] };
  const claims = { iss: TOKEN_ISSUER, sub: subject, aud: TOKEN_SERVICE, exp: now + 600, nbf: now - 60, iat: now, jti: randomUUID(), access };
  const input = `${b64url(header)}.${b64url(claims)}`;
  // JWS wants the raw r||s form, not the DER that node emits by default.
  const sig = sign('sha256', Buffer.from(input), { key: signer.key, dsaEncoding: 'ieee-p1363' });
  return `${input}.${sig.toString('base64url')}`;
}

/** Grants for one `scope` value, e.g. `repository:library/busybox:pull,push`. */
function grant(scope: string, authenticated: boolean): Access | undefined {
  const parts = scope.split(':');
  if (parts.length < 3) return undefined;
  const [type, actionList] = [parts[0], parts[parts.length - 1]];
  const name = parts.slice(1, -1).join(':');
  if (type !== 'repository') return undefined;
  const allowed = authenticated ? ['pull', 'push'] : ['pull'];
  const actions = actionList.split(',').filter((a) => allowed.includes(a));
  return { type, name, actions };
}

function basicUser(req: IncomingMessage): { username: string; password: string } | undefined {
  const header = req.headers.authorization ?? '';
  if (!header.startsWith('Basic ')) return undefined;
  const decoded = Buffer.from(header.slice(6), 'base64').toString();
  const colon = decoded.indexOf(':');
  return { username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
}

async function readBody(req: IncomingMessage): Promise<string> {
  const chunks: Buffer[] = [];
  for await (const chunk of req) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString();
}

/** GET with Basic auth (docker, skopeo) or POST form grant_type=password (containerd). */
async function tokenRequest(req: IncomingMessage): Promise<{ scopes: string[]; user?: { username: string; password: string } }> {
  const url = new URL(req.url ?? '/', 'http://token');
  if (req.method === 'POST') {
    const form = new URLSearchParams(await readBody(req));
    const user = form.get('username') !== null ? { username: form.get('username')!, password: form.get('password') ?? '' } : undefined;
    return { scopes: form.getAll('scope').flatMap((s) => s.split(' ')), user };
  }
  return { scopes: url.searchParams.getAll('scope').flatMap((s) => s.split(' ')), user: basicUser(req) };
}

async function handleToken(signer: TokenSigner, req: IncomingMessage, res: ServerResponse): Promise<void> {
  const { scopes, user } = await tokenRequest(req);
  if (user && (user.username !== TEST_USER.username || user.password !== TEST_USER.password)) {
    res.writeHead(401, { 'content-type': 'application/json' }).end('{"errors":[{"code":"UNAUTHORIZED"}]}');
    return;
  }
  const access = scopes.map((s) => grant(s, user !== undefined)).filter((a): a is Access => a !== undefined);
  const token = signJwt(signer, user?.username ?? '', access);
  const body = { token, access_token: token, expires_in: 600, issued_at: new Date().toISOString() };
  res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(body));
}

async function startTokenServer(signer: TokenSigner): Promise<{ server: Server; realm: string }> {
  const server = createServer((req, res) => {
    handleToken(signer, req, res).catch((err) => res.writeHead(500).end(String(err)));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as AddressInfo;
  return { server, realm: `http://127.0.0.1:${port}/token` };
}

// ---------------------------------------------------------------------------
// Distribution (docker-registry)

export interface Distribution {
  url: string;
  host: string;
  tokenUrl: string;
  /** Push a FixtureImage (blobs, child manifests, then the root under its tag) with a push token. */
  push(img: FixtureImage): Promise<void>;
  /** The registry's log so far (stdout+stderr), for failure messages. */
  logs(): string;
  /** Kill the process, stop the token server, remove the temp dir. */
  close(): Promise<void>;
}

function registryConfig(dir: string, port: number, realm: string, certPath: string): string {
  // JSON is valid YAML, so no YAML writer is needed. No http.debug: it would need its own port.
  return JSON.stringify({
    version: '0.1',
    log: { level: 'info', accesslog: { disabled: false } },
    storage: { filesystem: { rootdirectory: join(dir, 'storage') }, delete: { enabled: true } },
    http: { addr: `127.0.0.1:${port}` },
    auth: { token: { realm, service: TOKEN_SERVICE, issuer: TOKEN_ISSUER, rootcertbundle: certPath } },
  });
}

/** Starts the registry on a fresh port; retries when another process took the port first. */
async function spawnRegistry(dir: string, realm: string, certPath: string) {
  let lastError: unknown;
  for (let attempt = 0; attempt < 5; attempt++) {
    const port = await freePort();
    const configPath = join(dir, 'config.yml');
    await writeFile(configPath, registryConfig(dir, port, realm, certPath));
    const child = spawn('docker-registry', ['serve', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
    const logs = captureOutput(child);
    try {
      // Token auth is on, so a live registry answers /v2/ with 401.
      await waitFor('docker-registry', child, async () => (await fetch(`http://127.0.0.1:${port}/v2/`)).status === 401);
      return { child, port, logs };
    } catch (err) {
      await stopChild(child);
      lastError = new Error(`${(err as Error).message}\n${logs()}`);
    }
  }
  throw lastError;
}

export async function startDistribution(): Promise<Distribution> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-dist-'));
  let tokenServer: Server | undefined;
  try {
    const { signer, certPath } = await makeSigner(dir);
    const token = await startTokenServer(signer);
    tokenServer = token.server;
    const { child, port, logs } = await spawnRegistry(dir, token.realm, certPath);
    const url = `http://127.0.0.1:${port}`;
    return {
      url,
      host: `127.0.0.1:${port}`,
      tokenUrl: token.realm,
      push: (img) => pushImage(url, token.realm, img),
      logs,
      close: async () => {
        await stopChild(child);
        await closeServer(token.server);
        await rm(dir, { recursive: true, force: true });
      },
    };
  } catch (err) {
    if (tokenServer) await closeServer(tokenServer);
    await rm(dir, { recursive: true, force: true });
    throw err;
  }
}

function closeServer(server: Server): Promise<void> {
  server.closeAllConnections();
  return new Promise((resolve) => server.close(() => resolve()));
}

// ---------------------------------------------------------------------------
// Pushing through the registry HTTP API

async function pushToken(realm: string, name: string): Promise<string> {
  const query = new URLSearchParams({ service: TOKEN_SERVICE, scope: `repository:${name}:pull,push` });
  const basic = Buffer.from(`${TEST_USER.username}:${TEST_USER.password}`).toString('base64');
  const res = await fetch(`${realm}?${query}`, { headers: { authorization: `Basic ${basic}` } });
  if (!res.ok) throw new Error(`token request failed: ${res.status}`);
  return ((await res.json()) as { token: string }).token;
}

async function expectStatus(res: Response, ok: number[], what: string): Promise<Response> {
  if (!ok.includes(res.status)) throw new Error(`${what}: HTTP ${res.status} ${await res.text()}`);
  return res;
}

/** Monolithic upload: POST to open a session, then one PUT with the whole blob. */
async function pushBlob(base: string, name: string, auth: Record<string, string>, digest: string, bytes: Buffer): Promise<void> {
  const head = await fetch(`${base}/v2/${name}/blobs/${digest}`, { method: 'HEAD', headers: auth });
  if (head.status === 200) return;
  const start = await fetch(`${base}/v2/${name}/blobs/uploads/`, { method: 'POST', headers: auth });
  await expectStatus(start, [202], `start upload ${digest}`);
  const location = new URL(start.headers.get('location') ?? '', base);
  location.searchParams.set('digest', digest);
  const headers = { ...auth, 'content-type': 'application/octet-stream' };
  const put = await fetch(location, { method: 'PUT', headers, body: bytes });
  await expectStatus(put, [201], `finish upload ${digest}`);
}

async function pushManifest(base: string, name: string, auth: Record<string, string>, ref: string, mediaType: string, bytes: Buffer): Promise<void> {
  const headers = { ...auth, 'content-type': mediaType };
  const res = await fetch(`${base}/v2/${name}/manifests/${ref}`, { method: 'PUT', headers, body: bytes });
  await expectStatus(res, [201], `put manifest ${name}:${ref}`);
}

async function pushImage(base: string, realm: string, img: FixtureImage): Promise<void> {
  const auth = { authorization: `Bearer ${await pushToken(realm, img.name)}` };
  for (const [digest, bytes] of img.blobs) await pushBlob(base, img.name, auth, digest, bytes);
  // Children first: the registry refuses an index whose manifests it does not hold.
  for (const [digest, m] of img.manifests) {
    if (digest !== img.root.digest) await pushManifest(base, img.name, auth, digest, m.mediaType, m.bytes);
  }
  await pushManifest(base, img.name, auth, img.tag, img.root.mediaType, img.root.bytes);
}

// ---------------------------------------------------------------------------
// containerd

export type Snapshotter = 'overlayfs' | 'native';

export interface Containerd {
  address: string;
  /** Snapshotter ctr uses for unpacking (passed via CONTAINERD_SNAPSHOTTER). */
  snapshotter: Snapshotter;
  /** Runs `ctr --address <sock> <args>`; never rejects on non-zero. Timeout 120 s. */
  ctr(args: string[]): Promise<RunResult>;
  /** The daemon's log so far, for failure messages. */
  logs(): string;
  /** SIGTERM then SIGKILL, unmount anything under its dir, remove the temp dir. */
  close(): Promise<void>;
}

/**
 * overlayfs is containerd's default but fails when the temp dir itself sits on overlayfs
 * (typical inside a container); probe with a real mount and fall back to `native`, which
 * only needs bind mounts.
 */
async function pickSnapshotter(dir: string): Promise<Snapshotter> {
  const probe = join(dir, 'overlay-probe');
  const [lower, upper, work, merged] = ['l', 'u', 'w', 'm'].map((d) => join(probe, d));
  await Promise.all([lower, upper, work, merged].map((d) => mkdir(d, { recursive: true })));
  const opts = `lowerdir=${lower},upperdir=${upper},workdir=${work}`;
  const res = await run('mount', ['-t', 'overlay', 'overlay', '-o', opts, merged]);
  if (res.code === 0) await run('umount', [merged]);
  await rm(probe, { recursive: true, force: true });
  return res.code === 0 ? 'overlayfs' : 'native';
}

function containerdConfig(dir: string, socket: string): string {
  return [
    'version = 2',
    `root = ${JSON.stringify(join(dir, 'root'))}`,
    `state = ${JSON.stringify(join(dir, 'state'))}`,
    // CRI would want CNI, a sandbox image and its own streaming port; not needed here.
    'disabled_plugins = ["io.containerd.grpc.v1.cri"]',
    '[grpc]',
    `  address = ${JSON.stringify(socket)}`,
    '[ttrpc]',
    `  address = ${JSON.stringify(socket + '.ttrpc')}`,
    '[debug]',
    '  level = "info"',
    // The opt plugin would otherwise create /opt/containerd on the host.
    '[plugins."io.containerd.internal.v1.opt"]',
    `  path = ${JSON.stringify(join(dir, 'opt'))}`,
    '',
  ].join('\n');
}

/** `snapshotter` forces a choice; by default overlayfs is used when it can mount here. */
export async function startContainerd(opts: { snapshotter?: Snapshotter } = {}): Promise<Containerd> {
  // Short prefix: the socket path must stay under the 108-byte unix socket limit.
  const dir = await mkdtemp(join(tmpdir(), 'rm-ctrd-'));
  const socket = join(dir, 'c.sock');
  const configPath = join(dir, 'config.toml');
  const snapshotter = opts.snapshotter ?? (await pickSnapshotter(dir));
  await writeFile(configPath, containerdConfig(dir, socket));
  const child = spawn('containerd', ['--config', configPath], { stdio: ['ignore', 'pipe', 'pipe'] });
  const logs = captureOutput(child);
  const ctr = (args: string[]) =>
    run('ctr', ['--address', socket, ...args], { ...process.env, CONTAINERD_SNAPSHOTTER: snapshotter });
  const close = async () => {
    await stopChild(child);
    await unmountUnder(dir);
    await rm(dir, { recursive: true, force: true });
  };
  try {
    await waitFor('containerd', child, async () => (await ctr(['version'])).code === 0);
  } catch (err) {
    await close();
    throw new Error(`${(err as Error).message}\n${logs()}`);
  }
  return { address: socket, snapshotter, ctr, logs, close };
}

/** Lazily unmounts every mount point below `dir`, deepest first. */
async function unmountUnder(dir: string): Promise<void> {
  const mountinfo = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const points = mountinfo
    .split('\n')
    .map((line) => line.split(' ')[4])
    // mountinfo escapes spaces etc. as octal; our own temp paths have none.
    .filter((p): p is string => p !== undefined && p.startsWith(dir + '/'))
    .sort((a, b) => b.length - a.length);
  for (const p of points) await run('umount', ['-l', p]);
}

// ---------------------------------------------------------------------------
// containerd hosts dir

/**
 * Writes DIR/<registry>/hosts.toml. containerd tries each [host] in order before
 * `server`, so the mirror is what gets hit; `server` is only the fallback.
 */
export async function writeHostsDir(
  dir: string,
  entries: Array<{ registry: string; server: string; mirrorUrl: string; overridePath?: boolean }>,
): Promise<string> {
  for (const e of entries) {
    const lines = [
      `server = ${JSON.stringify(e.server)}`,
      '',
      `[host.${JSON.stringify(e.mirrorUrl)}]`,
      '  capabilities = ["pull", "resolve"]',
    ];
    if (e.overridePath) lines.push('  override_path = true');
    await mkdir(join(dir, e.registry), { recursive: true });
    await writeFile(join(dir, e.registry, 'hosts.toml'), lines.join('\n') + '\n');
  }
  return dir;
}
