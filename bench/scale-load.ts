// Load for the scale scenario: image pulls the way containerd does them (manifest by tag,
// then the config and every layer at once) by a number of clients sharing one queue of
// images, and the size of a proxy's store on disk.
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { Pool } from 'undici';
import { CONTAINERD_ACCEPT, Histogram } from './load.js';
import type { ScaleImageInfo } from './scale-images.js';

const REQUEST_TIMEOUT_MS = 60_000;
/** Bodies up to this size are hashed and compared with their digest; bigger ones (the base layer) only counted. */
const HASH_LIMIT = 64 * 1024;

interface Descriptor {
  digest: string;
  size: number;
}

export interface PullPass {
  images: number;
  ms: number;
  imagesPerS: number;
  /** Per image, manifest GET to the last blob byte, ms. */
  p50: number;
  p99: number;
  max: number;
  bytes: number;
  /** Images with any request that failed or returned a wrong body. */
  failures: number;
  failureSamples: string[];
}

export interface PullPassOptions {
  origin: string;
  images: ScaleImageInfo[];
  tag: string;
  clients: number;
  /** Keep-alive connections per client: containerd fetches a manifest's blobs concurrently. */
  connsPerClient: number;
  /** Called after each image, done or failed, with the count so far. */
  onImage?: (done: number) => void;
}

function sha256(b: Buffer): string {
  return `sha256:${createHash('sha256').update(b).digest('hex')}`;
}

async function getBlob(pool: Pool, name: string, d: Descriptor): Promise<number> {
  const res = await pool.request({ path: `/v2/${name}/blobs/${d.digest}`, method: 'GET', signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS) });
  const hash = d.size <= HASH_LIMIT || res.statusCode !== 200 ? createHash('sha256') : undefined;
  const chunks: Buffer[] = [];
  let n = 0;
  for await (const chunk of res.body as AsyncIterable<Buffer>) {
    n += chunk.length;
    hash?.update(chunk);
    if (res.statusCode !== 200 && n <= 1024) chunks.push(chunk);
  }
  const short = d.digest.slice(7, 19);
  if (res.statusCode !== 200) throw new Error(`blob ${short}: HTTP ${res.statusCode} ${Buffer.concat(chunks).toString().slice(0, 200)}`);
  if (n !== d.size) throw new Error(`blob ${short}: ${n} of ${d.size} bytes`);
  if (hash && `sha256:${hash.digest('hex')}` !== d.digest) throw new Error(`blob ${short}: body does not match its digest`);
  return n;
}

/** One image pull; returns the bytes read. */
async function pullImage(pool: Pool, img: ScaleImageInfo, tag: string): Promise<number> {
  const res = await pool.request({
    path: `/v2/${img.name}/manifests/${tag}`,
    method: 'GET',
    headers: { accept: CONTAINERD_ACCEPT },
    signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
  });
  const body = Buffer.from(await res.body.arrayBuffer());
  if (res.statusCode !== 200) throw new Error(`manifest: HTTP ${res.statusCode} ${body.toString().slice(0, 200)}`);
  if (sha256(body) !== img.digest) throw new Error(`manifest: ${body.length} bytes not matching ${img.digest.slice(0, 19)}`);
  const m = JSON.parse(body.toString()) as { config: Descriptor; layers: Descriptor[] };
  const sizes = await Promise.all([m.config, ...m.layers].map((d) => getBlob(pool, img.name, d)));
  return body.length + sizes.reduce((a, b) => a + b, 0);
}

/** Every image once: `clients` workers, each with its own keep-alive pool, take the next image from a shared counter. */
export async function pullImages(o: PullPassOptions): Promise<PullPass> {
  const pools = Array.from({ length: o.clients }, () => new Pool(o.origin, { connections: o.connsPerClient, pipelining: 1 }));
  const hist = new Histogram();
  let next = 0;
  let done = 0;
  let bytes = 0;
  let failures = 0;
  const failureSamples: string[] = [];
  const worker = async (pool: Pool) => {
    for (let i = next++; i < o.images.length; i = next++) {
      const img = o.images[i];
      const t0 = performance.now();
      try {
        bytes += await pullImage(pool, img, o.tag);
        hist.record(performance.now() - t0);
      } catch (err) {
        failures++;
        if (failureSamples.length < 5) failureSamples.push(`${img.name}: ${(err as Error).message}`);
      }
      o.onImage?.(++done);
    }
  };
  try {
    const started = performance.now();
    await Promise.all(pools.map(worker));
    const ms = performance.now() - started;
    return {
      images: o.images.length,
      ms,
      imagesPerS: o.images.length / (ms / 1000),
      p50: hist.percentile(0.5),
      p99: hist.percentile(0.99),
      max: hist.max,
      bytes,
      failures,
      failureSamples,
    };
  } finally {
    await Promise.all(pools.map((p) => p.close()));
  }
}

// ---------------------------------------------------------------------------
// Store size

export interface StoreSize {
  /** Allocated blocks, directories included (`du -B1`): what the store costs on disk. */
  diskBytes: number;
  /** Sum of file sizes (`du -b`). */
  apparentBytes: number;
}

/** `du -s` of a directory. du, not a walk in this process, so the load generator's event loop is left alone. */
function du(dir: string, args: string[]): Promise<number> {
  return new Promise((resolve) => {
    // Files come and go while a proxy writes: du then exits 1 but still prints the total.
    execFile('du', ['-s', ...args, dir], (_err, stdout) => {
      const n = Number(/^(\d+)/.exec(String(stdout))?.[1]);
      resolve(Number.isFinite(n) ? n : 0);
    });
  });
}

export async function storeSize(dir: string): Promise<StoreSize> {
  const [diskBytes, apparentBytes] = await Promise.all([du(dir, ['-B1']), du(dir, ['-b'])]);
  return { diskBytes, apparentBytes };
}

/**
 * The store's size once it stops changing (distribution writes blobs in the background
 * after it has answered): polled until two readings `intervalMs` apart agree.
 */
export async function settledStoreSize(dir: string, intervalMs = 500, timeoutMs = 60_000): Promise<StoreSize & { settleMs: number; settled: boolean }> {
  const started = performance.now();
  let last = await storeSize(dir);
  for (;;) {
    await sleep(intervalMs);
    const now = await storeSize(dir);
    const settled = now.diskBytes === last.diskBytes && now.apparentBytes === last.apparentBytes;
    if (settled || performance.now() - started > timeoutMs) return { ...now, settleMs: performance.now() - started - intervalMs, settled };
    last = now;
  }
}
