// Random and truncated requests against a regmirror child process: random methods, paths
// under /v2/ and the admin endpoints, random Authorization/Range/Accept headers, random
// prewarm bodies, connections cut while sending and while reading. Afterwards the same
// process must still serve correct pulls and its log must show no uncaught error.
// REGMIRROR_FUZZ_SEED replays a run (the seed is printed either way); FUZZ_LOG=FILE keeps
// the server's log of it.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { largeBlobImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, serveChild, type ChildServer } from './helpers.js';

const REQUESTS = 2500;
const AT_ONCE = 32;
const TOKEN = 'fuzz-token';
/** No single exchange may hold a slot longer than this. */
const EXCHANGE_MS = 1500;

/** mulberry32: small, seedable, good enough to pick test cases. */
function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

let up: FakeUpstream;
let dir: string;
let server: ChildServer;
let exited = false;
let small: FixtureImage;
const medium = largeBlobImage('library/medium', '1', 3 * 1024 * 1024, 'fuzz-medium');

before(async () => {
  up = await FakeUpstream.start();
  small = await singleImage({ name: 'library/small', tag: 'v1', seed: 'fuzz-small' });
  up.addImage(small);
  up.addImage(medium);
  dir = await mkdtemp(join(tmpdir(), 'regmirror-fuzz-'));
  await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync('wonderland', 4)}\n`);
  const config = join(dir, 'mirror.yaml');
  await writeFile(
    config,
    `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\ndefaultUpstream: docker.io\nlimits:\n  connectionsPerClient: 0\n` +
      `auth:\n  tokens: [${TOKEN}]\n  htpasswd: ${join(dir, 'htpasswd')}\nupstreams:\n  docker.io:\n    url: ${up.url}\n    deny: [library/denied]\n`,
  );
  server = serveChild(config);
  void server.exited.then(() => (exited = true));
  await server.url;
});
after(async () => {
  server.kill();
  await server.exited;
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

/** One random request as raw bytes, and how the exchange is to be cut. */
function randomRequest(r: () => number, host: string): { bytes: Buffer; cutSendAt?: number; cutReadAt?: number } {
  const pick = <T>(xs: readonly T[]): T => xs[Math.floor(r() * xs.length)];
  const hex = (n: number) => Array.from({ length: n }, () => '0123456789abcdef'[Math.floor(r() * 16)]).join('');
  const blobs = [...small.blobs.keys(), ...medium.blobs.keys()];
  const junk = () => pick(['', '..', '%2e%2e', '%00', 'a'.repeat(300), '%ff%fe', 'x/../y', '\u00e9', '*', 'A:B', hex(8)]);
  // One in five is a prewarm: its progress stream is the longest-lived response.
  const path = r() < 0.2 ? '/_regmirror/prewarm' : pick([
    () => '/v2/',
    () => '/v2',
    () => `/v2/library/small/manifests/${pick(['v1', small.root.digest, 'nope', `sha256:${hex(64)}`, junk()])}`,
    () => `/v2/library/medium/manifests/${pick(['1', medium.root.digest])}`,
    () => `/v2/${pick(['library/small', 'library/medium', 'library/denied', 'docker.io/library/small', junk()])}/blobs/${pick([...blobs, `sha256:${hex(64)}`, `sha512:${hex(128)}`, junk()])}`,
    () => `/v2/library/small/tags/list?n=${pick(['1', '-1', 'x', '100000'])}&last=${junk()}`,
    () => `/v2/library/small/referrers/${pick([small.root.digest, junk()])}?artifactType=${junk()}`,
    () => `/v2/${junk()}/${junk()}/manifests/${junk()}?ns=${pick(['docker.io', 'evil.example', junk()])}`,
    () => pick(['/metrics', '/healthz', '/readyz', '/_regmirror/status', '/_regmirror/prewarm', '/_regmirror/', '/']),
  ])();
  const method = path === '/_regmirror/prewarm' && r() < 0.8 ? 'POST' : pick(['GET', 'GET', 'GET', 'HEAD', 'POST', 'PUT', 'DELETE', 'PATCH', 'OPTIONS', 'FOO']);
  const b64 = (s: string) => Buffer.from(s).toString('base64');
  const headers: string[] = [`Host: ${host}`];
  const auth = pick([`Bearer ${TOKEN}`, `Bearer ${TOKEN}`, `basic ${b64(`x:${TOKEN}`)}`, `Basic ${b64('alice:wonderland')}`, `Basic ${b64(`alice:${hex(6)}`)}`, `Basic ${b64(`${hex(4)}:`)}`, 'Bearer', 'Basic', `Basic ${hex(20)}`, 'Digest x', undefined]);
  if (auth !== undefined) headers.push(`Authorization: ${auth}`);
  if (r() < 0.4) headers.push(`Range: ${pick(['bytes=0-99', 'bytes=-10', 'bytes=100-', 'bytes=5-1', 'bytes=0-0,5-9', 'bytes=99999999-', 'bytes=x', 'items=0-1'])}`);
  if (r() < 0.5) headers.push(`Accept: ${pick(['*/*', 'application/vnd.oci.image.index.v1+json', 'application/vnd.docker.distribution.manifest.v2+json, */*;q=0.1', 'text/html', junk()])}`);
  if (r() < 0.2) headers.push(`X-Request-Id: ${junk()}`);
  let body = Buffer.alloc(0);
  if (method === 'POST' || r() < 0.1) {
    const image = () => pick(['library/small:v1', 'library/medium:1', 'library/denied:x', 'library/nope:1', 'evil.example/x:1', junk(), 42]);
    body = Buffer.from(
      pick([
        () => JSON.stringify({ images: [image(), image()] }),
        () => JSON.stringify({ images: ['library/medium:1'] }),
        () => JSON.stringify({ images: ['library/medium:1', 'library/small:v1'] }),
        () => JSON.stringify({ images: [image()], platforms: pick(['all', 'linux/amd64', 'x', 7]), concurrency: pick([1, 0, 65, 'x', 2.5]) }),
        () => JSON.stringify({ images: pick(['x', [], null, {}]) }),
        () => '{"images": [',
        () => hex(Math.floor(r() * 4096)),
        () => '',
      ])(),
    );
  }
  const chunked = r() < 0.1;
  if (chunked) headers.push('Transfer-Encoding: chunked');
  else if (body.length || r() < 0.1) headers.push(`Content-Length: ${r() < 0.1 ? body.length + 10 : body.length}`);
  if (body.length) headers.push('Content-Type: application/json');
  headers.push('Connection: close');
  const head = Buffer.from(`${method} ${path} HTTP/1.1\r\n${headers.join('\r\n')}\r\n\r\n`, 'latin1');
  const payload = chunked ? Buffer.concat([Buffer.from(`${body.length.toString(16)}\r\n`), body, Buffer.from(r() < 0.5 ? '\r\n0\r\n\r\n' : '\r\n')]) : body;
  const bytes = Buffer.concat([head, payload]);
  const mode = r();
  if (mode < 0.3) return { bytes, cutSendAt: Math.floor(r() * bytes.length) };
  // Half the read cuts fall in the headers or the first lines of a stream.
  if (mode < 0.6) return { bytes, cutReadAt: Math.floor(r() * (r() < 0.5 ? 400 : 8192)) };
  return { bytes };
}

/** Sends one request over a fresh connection, cutting it where it says; never rejects. */
function exchange(port: number, req: ReturnType<typeof randomRequest>): Promise<void> {
  return new Promise((resolve) => {
    const socket = connect(port, '127.0.0.1');
    let read = 0;
    const done = () => {
      clearTimeout(timer);
      socket.destroy();
      resolve();
    };
    const timer = setTimeout(done, EXCHANGE_MS);
    socket.on('error', done);
    socket.on('close', done);
    socket.on('data', (c: Buffer) => {
      read += c.length;
      if (req.cutReadAt !== undefined && read >= req.cutReadAt) done();
    });
    socket.on('connect', () => {
      if (req.cutSendAt === undefined) return void socket.write(req.bytes);
      socket.write(req.bytes.subarray(0, req.cutSendAt), () => done());
    });
  });
}

async function pullDigest(url: string): Promise<string> {
  const r = await get(url, { headers: { authorization: `Bearer ${TOKEN}` }, timeoutMs: 30_000 });
  assert.equal(r.status, 200, url);
  return 'sha256:' + createHash('sha256').update(r.body).digest('hex');
}

test('13 fuzz: thousands of random, truncated and cut requests leave the server serving correct pulls', async (t) => {
  const seed = Number(process.env.REGMIRROR_FUZZ_SEED ?? Math.floor(Math.random() * 2 ** 32));
  t.diagnostic(`seed ${seed} (replay with REGMIRROR_FUZZ_SEED=${seed})`);
  console.log(`13 fuzz: seed ${seed}`);
  const r = rng(seed);
  const base = await server.url;
  const { host, port } = new URL(base);
  // The medium layer trickles and is cut short every time, so it is never cached: prewarms
  // and pulls of it stay in flight long enough to be abandoned mid-stream.
  up.faults = { blobBytesPerSecond: 4 * 1024 * 1024, cutBlobAfter: 1024 * 1024 };
  const started = Date.now();
  let next = 0;
  await Promise.all(
    Array.from({ length: AT_ONCE }, async () => {
      while (next < REQUESTS) {
        next++;
        await exchange(Number(port), randomRequest(r, host));
      }
    }),
  );
  t.diagnostic(`${REQUESTS} requests in ${Date.now() - started} ms`);
  up.faults = {};
  assert.equal(exited, false, 'the server process is still running');
  const [layer] = [...medium.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  assert.equal(await pullDigest(`${base}/v2/library/small/manifests/v1`), small.root.digest);
  assert.equal(await pullDigest(`${base}/v2/library/medium/blobs/${layer}`), layer);
  for (const [digest] of small.blobs) assert.equal(await pullDigest(`${base}/v2/library/small/blobs/${digest}`), digest);
  assert.equal(exited, false, 'the server process is still running');
  const log = server.stderr();
  if (process.env.FUZZ_LOG) await writeFile(process.env.FUZZ_LOG, log);
  const statuses = new Map<string, number>();
  for (const m of log.matchAll(/"msg":"request".*?"status":(\d+)/g)) statuses.set(m[1], (statuses.get(m[1]) ?? 0) + 1);
  t.diagnostic(`statuses logged: ${[...statuses].sort().map(([s, n]) => `${s}×${n}`).join(' ')}`);
  assert.doesNotMatch(log, /uncaught/i, `seed ${seed}`);
  assert.equal(statuses.get('500'), undefined, `seed ${seed}: an unexpected error was answered 500`);
  for (const line of log.split('\n').filter((l) => l.trim())) {
    assert.doesNotThrow(() => JSON.parse(line), `seed ${seed}: a stderr line that is no log line: ${line.slice(0, 300)}`);
  }
});
