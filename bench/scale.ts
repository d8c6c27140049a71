// Scenario 5, scale: a few thousand small images sharing one base layer, pulled through a
// fresh proxy by 32 clients cold and then warm, then 256 keep-alive connections of warm
// manifest and small blob GETs, then a restart on the same store. Reports images/s,
// upstream traffic per image, RSS and store size as the cache fills, and the time from
// a restart to the first warm manifest.
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { CONTAINERD_ACCEPT, requestLoop, type LoopRequest, type LoopResult } from './load.js';
import { rssNow, sampleRss } from './machine.js';
import type { Proxy, ProxyStartOptions, Upstream } from './peers.js';
import { stat, type Row } from './report.js';
import { pullImages, settledStoreSize, storeSize, type PullPass, type StoreSize } from './scale-load.js';
import type { ScaleInfo } from './scale-images.js';
import type { Kind } from './summary.js';
import type { CountersJson } from './upstream-server.js';

export const SCALE_CLIENTS = 32;
/** containerd fetches the config and the layers of a manifest at once: three blobs here. */
export const CONNS_PER_CLIENT = 3;
export const SCALE_CONNECTIONS = 256;
const RESTART_POLL_MS = 10;
const RESTART_TIMEOUT_MS = 30_000;

export interface ScaleSettings {
  loadMs: number;
  warmupMs: number;
}

/** Upstream traffic of a phase: registry requests (401s included) plus token requests; CDN GETs apart. */
export interface UpstreamUse {
  requests: number;
  perImage: number;
  cdnGets: number;
  tokens: number;
  baseLayerGets: number;
  /** The upstream's counters by kind (see fixtures/upstream.ts), for telling the requests apart. */
  counters: Omit<CountersJson, 'blobGetByDigest'>;
}

export interface ScaleSnapshot {
  /** Images pulled when it was taken. */
  images: number;
  rssMiB: number;
  store: StoreSize;
}

export interface ScaleResult {
  images: number;
  contentBytes: number;
  cold: PullPass & { upstream: UpstreamUse; peakRssMiB: number };
  /** Taken as the cold pass reaches N/4, N/2 and N images. */
  snapshots: ScaleSnapshot[];
  /** After the cold pass, once the store stopped growing. */
  store: StoreSize & { settleMs: number; settled: boolean; perImageBytes: number; overContent: number };
  warm: PullPass & { upstream: UpstreamUse; peakRssMiB: number };
  load: LoopResult & { connections: number; upstreamRequests: number; peakRssMiB: number; /** RssAnon's peak over cold, warm and the loop. */ peakAnonMiB: number };
  restart?: { readyMs: number; firstManifestMs: number; upstreamRequests: number };
  restartError?: string;
}

export interface ScaleContext {
  kind: Kind;
  upstream: Upstream;
  /** Starts the proxy: fresh, or with reuseDir on an earlier instance's store. */
  start(opts?: ProxyStartOptions): Promise<Proxy>;
  /** Runs a measured phase (the caller audits the machine's CPU during it). */
  phase<T>(name: string, f: () => Promise<T>): Promise<T>;
  log(msg: string): void;
}

function use(c: CountersJson, images: number, baseDigest: string): UpstreamUse {
  const { blobGetByDigest, ...counters } = c;
  const requests = c.total + c.token;
  return { requests, perImage: requests / images, cdnGets: c.cdnGet, tokens: c.token, baseLayerGets: blobGetByDigest[baseDigest] ?? 0, counters };
}

const ms = (x: number) => (x >= 100 ? x.toFixed(0) : x.toFixed(1));
const mb = (b: number) => (b / 1e6).toFixed(1);

function describe(p: PullPass, u: UpstreamUse): string {
  return (
    `${p.images} images in ${(p.ms / 1000).toFixed(1)} s, ${p.imagesPerS.toFixed(0)} images/s, p50 ${ms(p.p50)} ms, p99 ${ms(p.p99)} ms, ` +
    `${u.perImage.toFixed(1)} upstream requests/image (+${(u.cdnGets / p.images).toFixed(1)} CDN GETs), base layer ${u.baseLayerGets} upstream GETs, ${p.failures} failed`
  );
}

/** Deterministic, so both proxies get the same sequence of images in the connection phase. */
function xorshift(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x ^= x >>> 17;
    x ^= x << 5;
    return (x >>> 0) / 2 ** 32;
  };
}

async function firstWarmManifest(url: string, deadline: number): Promise<number> {
  for (;;) {
    try {
      const res = await request(url, { headers: { accept: CONTAINERD_ACCEPT }, signal: AbortSignal.timeout(1000) });
      await res.body.dump();
      if (res.statusCode === 200) return performance.now();
    } catch {
      // not listening yet, or too slow: try again
    }
    if (performance.now() > deadline) throw new Error(`no 200 for ${url} within ${RESTART_TIMEOUT_MS} ms`);
    await sleep(RESTART_POLL_MS);
  }
}

/**
 * SCALE_CONNECTIONS keep-alive connections on a warm cache, each alternating: the manifest
 * of a random image by tag, then that image's own layer. The sequence is the same for every
 * proxy and every run.
 */
export function connectionsLoop(origin: string, info: ScaleInfo, s: ScaleSettings, beforeMeasure: () => Promise<void>): Promise<LoopResult> {
  const { images, tag } = info;
  const random = xorshift(0x5ca1e);
  const picked: Array<number | undefined> = new Array(SCALE_CONNECTIONS);
  const next = (w: number): LoopRequest => {
    const i = picked[w];
    if (i === undefined) {
      const j = Math.floor(random() * images.length);
      picked[w] = j;
      return { path: `/v2/${images[j].name}/manifests/${tag}`, headers: { accept: CONTAINERD_ACCEPT }, expectBytes: images[j].size };
    }
    picked[w] = undefined;
    return { path: `/v2/${images[i].name}/blobs/${images[i].layer.digest}`, expectBytes: images[i].layer.size };
  };
  return requestLoop(origin, { connections: SCALE_CONNECTIONS, durationMs: s.loadMs, warmupMs: s.warmupMs, path: '/v2/', next, beforeMeasure });
}

/** One proxy, fresh process and empty cache, through the whole scenario. */
export async function scaleRound(ctx: ScaleContext, info: ScaleInfo, s: ScaleSettings): Promise<ScaleResult> {
  const { upstream, kind, log } = ctx;
  const { images, tag, base } = info;
  const n = images.length;
  let proxy = await ctx.start();
  // The first process's: after the restart only the time to the first manifest is measured.
  const rss = sampleRss(proxy.pid);
  try {
    const marks = new Set([Math.ceil(n / 4), Math.ceil(n / 2), n]);
    const snapshots: Array<Promise<ScaleSnapshot>> = [];
    const p = proxy;
    const snapshot = async (done: number): Promise<ScaleSnapshot> => {
      const [rssMiB, store] = await Promise.all([rssNow(p.pid), storeSize(p.storeDir)]);
      return { images: done, rssMiB, store };
    };
    await upstream.reset();
    const coldPass = await ctx.phase('scale cold', () =>
      pullImages({
        origin: proxy.url,
        images,
        tag,
        clients: SCALE_CLIENTS,
        connsPerClient: CONNS_PER_CLIENT,
        onImage: (done) => void (marks.has(done) && snapshots.push(snapshot(done))),
      }),
    );
    const coldPeak = await rss.lap();
    const snaps = await Promise.all(snapshots);
    const settledStore = await settledStoreSize(proxy.storeDir);
    const cold = { ...coldPass, upstream: use(await upstream.counters(), n, base.digest), peakRssMiB: coldPeak };
    log(`  ${kind}: scale cold ${describe(cold, cold.upstream)}`);
    for (const f of cold.failureSamples) log(`  ${kind}: scale cold failure: ${f}`);
    const store = {
      ...settledStore,
      perImageBytes: settledStore.diskBytes / n,
      overContent: settledStore.diskBytes / info.contentBytes,
    };
    log(
      `  ${kind}: scale RSS ${snaps.map((x) => `${x.rssMiB.toFixed(0)}`).join(' / ')} MiB and store ${snaps.map((x) => mb(x.store.diskBytes)).join(' / ')} MB ` +
        `after ${snaps.map((x) => x.images).join(' / ')} images; settled store ${mb(store.diskBytes)} MB on disk (${mb(store.apparentBytes)} MB of files) ` +
        `${store.settled ? `after ${(store.settleMs / 1000).toFixed(1)} s` : 'still changing'}, ${(store.perImageBytes / 1000).toFixed(1)} KB per image, ` +
        `${store.overContent.toFixed(2)}× the content (${mb(info.contentBytes)} MB)`,
    );

    await upstream.reset();
    const warmPass = await ctx.phase('scale warm', () =>
      pullImages({ origin: proxy.url, images, tag, clients: SCALE_CLIENTS, connsPerClient: CONNS_PER_CLIENT }),
    );
    const warm = { ...warmPass, upstream: use(await upstream.counters(), n, base.digest), peakRssMiB: await rss.lap() };
    log(`  ${kind}: scale warm ${describe(warm, warm.upstream)}`);
    for (const f of warm.failureSamples) log(`  ${kind}: scale warm failure: ${f}`);

    const loop = await ctx.phase(`scale ${SCALE_CONNECTIONS} connections`, () =>
      connectionsLoop(proxy.url, info, s, async () => {
        await upstream.reset();
        await rss.lap(); // the peak of the measured part only
      }),
    );
    const load = { ...loop, connections: SCALE_CONNECTIONS, upstreamRequests: use(await upstream.counters(), n, base.digest).requests, peakRssMiB: await rss.lap(), peakAnonMiB: rss.anonPeak() };
    log(
      `  ${kind}: scale ${SCALE_CONNECTIONS} connections ${load.rps.toFixed(0)} req/s, p50 ${ms(load.p50)} ms, p99 ${ms(load.p99)} ms, ` +
        `${load.errors} errors, peak RSS ${load.peakRssMiB.toFixed(0)} MiB (anonymous ${load.peakAnonMiB.toFixed(0)} over the scenario), ${load.upstreamRequests} upstream requests`,
    );

    let restart: ScaleResult['restart'];
    let restartError: string | undefined;
    try {
      await proxy.stop({ keepDir: true });
      await upstream.reset();
      proxy = await ctx.start({ reuseDir: proxy.dir, readyPollMs: RESTART_POLL_MS });
      const readyMs = performance.now() - proxy.spawnedAt;
      const url = `${proxy.url}/v2/${images[0].name}/manifests/${tag}`;
      const firstManifestMs = (await firstWarmManifest(url, performance.now() + RESTART_TIMEOUT_MS)) - proxy.spawnedAt;
      restart = { readyMs, firstManifestMs, upstreamRequests: use(await upstream.counters(), n, base.digest).requests };
      log(`  ${kind}: scale restart: /v2/ after ${ms(readyMs)} ms, first warm manifest after ${ms(firstManifestMs)} ms, ${restart.upstreamRequests} upstream requests`);
      if (kind !== 'distribution' && restart.upstreamRequests > 0) log(`  warning: ${kind} went upstream for a manifest it had cached before the restart`);
    } catch (err) {
      restartError = (err as Error).message;
      log(`  ${kind}: scale restart failed: ${restartError}`);
    }
    return { images: n, contentBytes: info.contentBytes, cold, snapshots: snaps, store, warm, load, restart, restartError };
  } catch (err) {
    log(`  ${kind} failed in the scale scenario; its log ends:\n${await proxy.logs()}`);
    throw err;
  } finally {
    await rss.stop();
    await proxy.stop();
  }
}

/** Each column's results by round. */
type Scale = Partial<Record<Kind, Array<ScaleResult | undefined>>>;

/** Section 5 of the table. */
export function scaleRows(results: Scale, info: ScaleInfo): Row[] {
  const n = info.images.length;
  const both = (metric: string, f: (r: ScaleResult) => number | undefined, extra: Partial<Row> = {}): Row => ({
    metric,
    values: Object.fromEntries(Object.entries(results).map(([k, rs]) => [k, stat(rs.map((r) => (r ? f(r) : undefined)))])),
    ...extra,
  });
  const count = { integer: true, ratios: false };
  const perImageKB = (info.contentBytes - info.base.size) / n / 1000;
  const snap = (i: number) => (r: ScaleResult) => r.snapshots[i];
  const at = [Math.ceil(n / 4), Math.ceil(n / 2), n];
  return [
    {
      metric: `5. scale: ${n} images of ~${perImageKB.toFixed(0)} KB sharing one ${(info.base.size / 1024).toFixed(0)} KiB base layer, ${SCALE_CLIENTS} clients`,
      section: true,
    },
    both('   cold, images/s', (r) => r.cold.imagesPerS),
    both('   cold, p50 ms per image', (r) => r.cold.p50),
    both('   cold, p99 ms per image', (r) => r.cold.p99),
    both('   cold, upstream requests per image (registry + token)', (r) => r.cold.upstream.perImage, { ratios: false }),
    both('   cold, CDN GETs per image', (r) => r.cold.upstream.cdnGets / r.images, { ratios: false }),
    both('   cold, all upstream requests per image (with CDN)', (r) => (r.cold.upstream.requests + r.cold.upstream.cdnGets) / r.images, { ratios: false }),
    both('   cold, upstream GETs of the shared base layer (ideal 1)', (r) => r.cold.upstream.baseLayerGets, count),
    both('   warm, images/s', (r) => r.warm.imagesPerS),
    both('   warm, p50 ms per image', (r) => r.warm.p50),
    both('   warm, p99 ms per image', (r) => r.warm.p99),
    both('   warm, upstream requests per image (registry + token)', (r) => r.warm.upstream.perImage, { ratios: false }),
    both('   failed image pulls (cold + warm)', (r) => r.cold.failures + r.warm.failures, count),
    both(`   ${SCALE_CONNECTIONS} connections, warm manifest + small blob, req/s`, (r) => r.load.rps),
    both(`   ${SCALE_CONNECTIONS} connections, p50 ms`, (r) => r.load.p50),
    both(`   ${SCALE_CONNECTIONS} connections, p99 ms`, (r) => r.load.p99),
    both(`   ${SCALE_CONNECTIONS} connections, peak RSS MiB`, (r) => r.load.peakRssMiB, { integer: true }),
    both(`   peak anonymous RSS, cold to ${SCALE_CONNECTIONS} connections, MiB (no file pages)`, (r) => r.load.peakAnonMiB, { integer: true }),
    both(`   ${SCALE_CONNECTIONS} connections, errors`, (r) => r.load.errors, count),
    both(`   ${SCALE_CONNECTIONS} connections, upstream requests`, (r) => r.load.upstreamRequests, count),
    ...at.map((k, i) => both(`   RSS after ${k} images (cold), MiB`, (r) => snap(i)(r)?.rssMiB, { integer: true })),
    ...at.slice(0, 2).map((k, i) => both(`   store on disk after ${k} images, MB`, (r) => (snap(i)(r)?.store.diskBytes ?? NaN) / 1e6)),
    both(`   store on disk after ${n} images, settled, MB`, (r) => r.store.diskBytes / 1e6),
    both('   store on disk per image, KB', (r) => r.store.perImageBytes / 1000),
    both(`   store ÷ content size (${(info.contentBytes / 1e6).toFixed(1)} MB)`, (r) => r.store.overContent),
    both('   restart to first warm manifest, ms', (r) => r.restart?.firstManifestMs),
    both('   restart, upstream requests until then', (r) => r.restart?.upstreamRequests, count),
  ];
}
