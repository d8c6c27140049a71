// Load generation with undici: whole-blob pulls (1 or N connections), fixed-duration
// request loops over a Pool with a latency histogram, the coalescing burst, a direct pull
// that does the Docker Hub dance itself (token, 307 to the CDN), and a raw fs read.
import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { connect } from 'node:net';
import { Pool, request, type Dispatcher } from 'undici';

const MiB = 1024 * 1024;
/** No single pull in the bench may take longer than this. */
const PULL_TIMEOUT_MS = 600_000;

export interface Transfer {
  bytes: number;
  ms: number;
}

/** MB/s as 10^6 bytes per second. */
export function mbps(t: Transfer): number {
  return t.bytes / 1e6 / (t.ms / 1000);
}

// ---------------------------------------------------------------------------
// Latency histogram: log buckets of 1 %, 1 µs .. ~10 min, flat memory.

export class Histogram {
  static readonly #GROWTH = Math.log(1.01);
  readonly #buckets = new Uint32Array(2100);
  count = 0;
  max = 0;
  #sum = 0;

  record(ms: number): void {
    const us = Math.max(1, ms * 1000);
    const i = Math.min(this.#buckets.length - 1, Math.ceil(Math.log(us) / Histogram.#GROWTH));
    this.#buckets[i]++;
    this.count++;
    this.#sum += ms;
    if (ms > this.max) this.max = ms;
  }

  /** The value (ms) at or below which `p` (0..1) of the samples fall; upper bucket bound, within 1 %. */
  percentile(p: number): number {
    if (this.count === 0) return NaN;
    const rank = Math.ceil(p * this.count);
    let seen = 0;
    for (let i = 0; i < this.#buckets.length; i++) {
      seen += this.#buckets[i];
      if (seen >= rank) return Math.min(this.max, Math.exp(i * Histogram.#GROWTH) / 1000);
    }
    return this.max;
  }

  get mean(): number {
    return this.count ? this.#sum / this.count : NaN;
  }
}

// ---------------------------------------------------------------------------
// Blob pulls

/** Reads a response body to the end, counting (and optionally hashing) the bytes. */
function drain(body: Dispatcher.ResponseData['body'], hash?: ReturnType<typeof createHash>, keep?: Buffer[]): Promise<number> {
  return new Promise((resolve, reject) => {
    let n = 0;
    body.on('data', (chunk: Buffer) => {
      n += chunk.length;
      hash?.update(chunk);
      keep?.push(chunk);
    });
    body.on('end', () => resolve(n));
    body.on('error', reject);
  });
}

/**
 * One GET of a whole blob on a fresh connection; fails unless it is a 200 with a
 * Content-Length of `expectBytes` and that many body bytes. A plain socket reading into one
 * reused 1 MiB buffer (`onread`), not undici: on this 2-core machine undici's per-chunk
 * stream overhead tops out well below what nginx serves over loopback, so it would
 * measure the client. Plain HTTP/1.1 with Content-Length only (what every server here sends).
 * `onBytes` sees the body bytes received so far after every read.
 */
export function pullBlob(url: string, expectBytes: number, onBytes?: (received: number) => void): Promise<Transfer> {
  const u = new URL(url);
  return new Promise((resolve, reject) => {
    const started = performance.now();
    let head: Buffer | undefined = Buffer.alloc(0);
    let received = 0;
    let length = -1;
    const fail = (msg: string) => {
      sock.destroy();
      reject(new Error(`GET ${url}: ${msg}`));
    };
    const onread = (n: number, buf: Buffer): boolean => {
      if (head) {
        head = Buffer.concat([head, buf.subarray(0, n)]);
        const end = head.indexOf('\r\n\r\n');
        if (end < 0) {
          if (head.length > 64 * 1024) fail('response headers too large');
          return true;
        }
        const text = head.subarray(0, end).toString('latin1');
        const status = /^HTTP\/1\.[01] (\d{3})/.exec(text)?.[1];
        const cl = /\r\ncontent-length:[ \t]*(\d+)/i.exec(text)?.[1];
        if (status !== '200') return fail(`HTTP ${status ?? '?'}: ${head.subarray(0, 500).toString('latin1')}`), false;
        if (cl === undefined) return fail('no Content-Length'), false;
        length = Number(cl);
        if (length !== expectBytes) return fail(`Content-Length ${length}, expected ${expectBytes}`), false;
        received = head.length - end - 4;
        head = undefined;
      } else {
        received += n;
      }
      onBytes?.(received);
      if (received >= length) {
        sock.destroy();
        if (received > length) reject(new Error(`GET ${url}: ${received} bytes, more than Content-Length ${length}`));
        else resolve({ bytes: received, ms: performance.now() - started });
      }
      return true;
    };
    const sock = connect({ host: u.hostname, port: Number(u.port), onread: { buffer: Buffer.allocUnsafe(MiB), callback: onread } }, () => {
      sock.write(`GET ${u.pathname}${u.search} HTTP/1.1\r\nHost: ${u.host}\r\nUser-Agent: regmirror-bench\r\nConnection: close\r\n\r\n`);
    });
    sock.setTimeout(PULL_TIMEOUT_MS, () => fail('timed out'));
    sock.on('error', (err) => reject(err));
    sock.on('end', () => {
      if (length < 0 || received < length) fail(`connection closed after ${received} of ${length} body bytes`);
    });
  });
}

/** `clients` simultaneous GETs of the same blob, each on its own connection; aggregate bytes over wall time. */
export async function pullParallel(url: string, expectBytes: number, clients: number): Promise<Transfer> {
  const started = performance.now();
  const parts = await Promise.all(Array.from({ length: clients }, () => pullBlob(url, expectBytes)));
  return { bytes: parts.reduce((a, p) => a + p.bytes, 0), ms: performance.now() - started };
}

/**
 * A blob straight from the fake Docker Hub, the way a client without a mirror gets it:
 * 401 challenge, anonymous token, authorized GET, 307 to the CDN, body from the CDN.
 */
export async function directPull(registryUrl: string, name: string, digest: string, expectBytes: number): Promise<Transfer> {
  const started = performance.now();
  const body = await pullBlob(await blobLocation(registryUrl, name, digest), expectBytes);
  return { bytes: body.bytes, ms: performance.now() - started };
}

/** Where the registry sends a pull of the blob: the token dance, then the 307's Location. */
export async function blobLocation(registryUrl: string, name: string, digest: string): Promise<string> {
  const blobUrl = `${registryUrl}/v2/${name}/blobs/${digest}`;
  const challenge = await request(blobUrl, { signal: AbortSignal.timeout(30_000) });
  await challenge.body.dump();
  const header = String(challenge.headers['www-authenticate'] ?? '');
  const realm = /realm="([^"]+)"/.exec(header)?.[1];
  const service = /service="([^"]+)"/.exec(header)?.[1] ?? '';
  if (challenge.statusCode !== 401 || !realm) throw new Error(`direct pull: expected a Bearer challenge, got ${challenge.statusCode}`);
  const tokenUrl = `${realm}?service=${encodeURIComponent(service)}&scope=${encodeURIComponent(`repository:${name}:pull`)}`;
  const tokenRes = await request(tokenUrl, { signal: AbortSignal.timeout(30_000) });
  const { token } = (await tokenRes.body.json()) as { token: string };
  const redirect = await request(blobUrl, { headers: { authorization: `Bearer ${token}` }, signal: AbortSignal.timeout(30_000) });
  await redirect.body.dump();
  const location = redirect.headers.location;
  if (redirect.statusCode !== 307 || typeof location !== 'string') throw new Error(`direct pull: expected 307, got ${redirect.statusCode}`);
  return new URL(location, blobUrl).toString();
}

/** `readers` parallel reads of a file with 1 MiB reads into a reused buffer: what the disk cache gives. */
export async function fsRead(path: string, expectBytes: number, readers: number): Promise<Transfer> {
  const started = performance.now();
  const one = async () => {
    const fh = await open(path, 'r');
    try {
      const buf = Buffer.allocUnsafe(MiB);
      let pos = 0;
      for (;;) {
        const { bytesRead } = await fh.read(buf, 0, buf.length, pos);
        if (bytesRead === 0) break;
        pos += bytesRead;
      }
      if (pos !== expectBytes) throw new Error(`${path}: read ${pos} bytes, expected ${expectBytes}`);
      return pos;
    } finally {
      await fh.close();
    }
  };
  const sizes = await Promise.all(Array.from({ length: readers }, one));
  return { bytes: sizes.reduce((a, b) => a + b, 0), ms: performance.now() - started };
}

/** Writes `bytes` bytes to a new file in 1 MiB writes and fsyncs it: what the disk takes, as regmirror stores a blob. */
export async function fsWriteSync(path: string, bytes: number): Promise<Transfer> {
  const buf = Buffer.alloc(MiB, 0xa5);
  const started = performance.now();
  const fh = await open(path, 'wx');
  try {
    for (let pos = 0; pos < bytes; pos += MiB) await fh.write(buf, 0, Math.min(MiB, bytes - pos), pos);
    await fh.sync();
  } finally {
    await fh.close();
  }
  const ms = performance.now() - started;
  await rm(path, { force: true });
  return { bytes, ms };
}

// ---------------------------------------------------------------------------
// Coalescing burst

export interface BurstResult {
  ms: number;
  requests: number;
  /** Responses that were not 200 or whose bytes did not hash to the digest asked for. */
  failures: number;
  /** The first few failures, described. */
  failureSamples: string[];
}

/**
 * `clients` clients (each its own undici Pool of `connsPerClient` connections) start at the
 * same moment and each pull every layer; every body is checked against its digest. With
 * several origins, client i talks to origin i mod n (round-robin, as a load balancer would).
 */
export async function coalesceBurst(
  origin: string | string[],
  name: string,
  layers: Array<{ digest: string; size: number }>,
  clients: number,
  connsPerClient: number,
): Promise<BurstResult> {
  const origins = typeof origin === 'string' ? [origin] : origin;
  const pools = Array.from({ length: clients }, (_, i) => new Pool(origins[i % origins.length], { connections: connsPerClient }));
  let failures = 0;
  const failureSamples: string[] = [];
  const failed = (why: string) => {
    failures++;
    if (failureSamples.length < 5) failureSamples.push(why);
  };
  const one = async (pool: Pool, digest: string, size: number) => {
    try {
      const res = await pool.request({ path: `/v2/${name}/blobs/${digest}`, method: 'GET', signal: AbortSignal.timeout(120_000) });
      const hash = createHash('sha256');
      const chunks: Buffer[] = [];
      const n = await drain(res.body, hash, res.statusCode === 200 ? undefined : chunks);
      const actual = `sha256:${hash.digest('hex')}`;
      if (res.statusCode !== 200) failed(`${digest.slice(0, 19)}: HTTP ${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 200)}`);
      else if (n !== size) failed(`${digest.slice(0, 19)}: ${n} of ${size} bytes`);
      else if (actual !== digest) failed(`${digest.slice(0, 19)}: body hashes to ${actual.slice(0, 19)}`);
    } catch (err) {
      failed(`${digest.slice(0, 19)}: ${(err as Error).message}`);
    }
  };
  try {
    const started = performance.now();
    await Promise.all(pools.flatMap((pool) => layers.map((l) => one(pool, l.digest, l.size))));
    return { ms: performance.now() - started, requests: clients * layers.length, failures, failureSamples };
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
}

// ---------------------------------------------------------------------------
// Fixed-duration request loop

/** What containerd sends when it resolves a tag. */
export const CONTAINERD_ACCEPT = [
  'application/vnd.docker.distribution.manifest.v2+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.oci.image.index.v1+json',
  '*/*',
].join(', ');

/** One request of a loop; with `expectBytes`, a 200 with another body length counts as an error. */
export interface LoopRequest {
  path: string;
  headers?: Record<string, string>;
  expectBytes?: number;
}

export interface LoopOptions {
  connections: number;
  durationMs: number;
  warmupMs: number;
  path: string;
  headers?: Record<string, string>;
  /** When set, each worker (0..connections-1) asks it for every request instead of GETting `path`. */
  next?: (worker: number) => LoopRequest;
  /** Called between warm-up and the measured part (e.g. to zero the upstream's counters). */
  beforeMeasure?: () => Promise<unknown>;
}

export interface LoopResult {
  requests: number;
  errors: number;
  rps: number;
  p50: number;
  p99: number;
  max: number;
  mean: number;
  /** Bytes of the last body, as a sanity check that bodies were read. */
  bodyBytes: number;
}

/** `connections` workers, one per Pool connection, each GETting `path` (or what `next` names) back to back until the deadline. */
export async function requestLoop(origin: string, o: LoopOptions): Promise<LoopResult> {
  const pool = new Pool(origin, { connections: o.connections, pipelining: 1 });
  let bodyBytes = 0;
  const fixed: LoopRequest = { path: o.path, headers: o.headers };
  const run = async (worker: number, until: number, hist?: Histogram): Promise<number> => {
    let errors = 0;
    // Bounded by time and, as a backstop, by count.
    for (let i = 0; i < 10_000_000 && performance.now() < until; i++) {
      const r = o.next ? o.next(worker) : fixed;
      const t0 = performance.now();
      try {
        const res = await pool.request({ path: r.path, method: 'GET', headers: r.headers });
        const body = Buffer.from(await res.body.arrayBuffer());
        if (res.statusCode !== 200 || (r.expectBytes !== undefined && body.length !== r.expectBytes)) errors++;
        else bodyBytes = body.length;
      } catch {
        errors++;
      }
      hist?.record(performance.now() - t0);
    }
    return errors;
  };
  try {
    const warmUntil = performance.now() + o.warmupMs;
    await Promise.all(Array.from({ length: o.connections }, (_, w) => run(w, warmUntil)));
    await o.beforeMeasure?.();
    const hist = new Histogram();
    const started = performance.now();
    const until = started + o.durationMs;
    const errs = await Promise.all(Array.from({ length: o.connections }, (_, w) => run(w, until, hist)));
    const elapsed = performance.now() - started;
    return {
      requests: hist.count,
      errors: errs.reduce((a, b) => a + b, 0),
      rps: hist.count / (elapsed / 1000),
      p50: hist.percentile(0.5),
      p99: hist.percentile(0.99),
      max: hist.max,
      mean: hist.mean,
      bodyBytes,
    };
  } finally {
    await pool.close();
  }
}
