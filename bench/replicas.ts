// The replicas scenario: three regmirror processes sharing one RGW bucket and one
// PostgreSQL database (`cluster:`), next to one process on the local disk, in front of the
// same fake upstream. Each round starts a fresh replica set (a bucket and a database of its
// own) and measures, in this order: upstream GETs per blob under 16 cold clients spread
// round-robin over the replicas (and the same clients on the single process); a cold pull
// through a replica that does not hold the download against one through the holder; warm
// aggregate throughput over 3 replicas against 1; the time from kill -9 of a download's
// holder to the next complete pull of that blob through another replica; and every
// replica's peak RSS. The figures and their goals are printed by replicas-report.ts.
import { existsSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { HeadObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { startRgw, type RgwServer } from '../test/support/ceph.js';
import { startPostgres, type PgServer } from '../test/support/postgres.js';
import { coalesceBurst, pullBlob, type Transfer } from './load.js';
import { rssNow, sampleRss } from './machine.js';
import { findTool, startRegmirror, type Proxy, type Upstream } from './peers.js';
import type { BurstFigures, ReplicaRound, ReplicaSettings } from './replicas-report.js';
import type { BlobInfo } from './upstream-server.js';

const MiB = 1024 * 1024;
const REPLICAS = 3;
export const REPLICA_LAYERS = 32;
export const REPLICA_LAYER_BYTES = MiB;
const BURST_CLIENTS = 16;
const BURST_CONNS_PER_CLIENT = 8;
const WARM_CLIENTS = 8;
const KILL_BYTES = 128 * MiB;
/** Slow enough that the holder is still downloading when it is killed. */
const KILL_PACE = 32 * MiB;
/** The follower of the holder has this much of the blob when the holder is killed. */
const KILL_AFTER_BYTES = 16 * MiB;
const RECOVERY_TIMEOUT_MS = 60_000;
const SECRET = 'bench-replicas-secret-0123456789';
const PREFIX = 'bench';
const POSTGRES_BIN = '/usr/lib/postgresql/15/bin/postgres';

export interface ReplicaScenarioOptions {
  upstream: Upstream;
  rounds: number;
  /** Size of the cold layer (the driver's large layer: 1 GiB, 256 MiB with BENCH_QUICK). */
  coldBytes: number;
  entry: 'dist' | 'tsx';
  logLevel: string;
  log(msg: string): void;
  /** Runs a measured phase, accounting the CPU of `trees`, each with its children (reaped ones included). */
  phase<T>(name: string, trees: number[], f: () => Promise<T>): Promise<{ value: T; otherCpuS?: number }>;
  /** The driver's PostgreSQL cluster, when it runs one; else the scenario starts its own. */
  pg?: PgServer;
}

/** Why the scenario cannot run here (`no radosgw`, `no PostgreSQL`), or undefined. */
export function replicasMissing(): string | undefined {
  for (const tool of ['radosgw', 'ceph-mon', 'ceph-osd']) if (!findTool(tool)) return `no ${tool}`;
  if (!existsSync(POSTGRES_BIN)) return 'no PostgreSQL';
  return undefined;
}

export function replicaSettings(o: ReplicaScenarioOptions): ReplicaSettings {
  return { replicas: REPLICAS, burstClients: BURST_CLIENTS, layers: REPLICA_LAYERS, layerBytes: REPLICA_LAYER_BYTES, coldBytes: o.coldBytes, warmClients: WARM_CLIENTS, killBytes: KILL_BYTES, killPace: KILL_PACE };
}

/** Starts RGW (and PostgreSQL unless given one), runs the rounds, and takes everything down again. */
export async function replicaScenario(o: ReplicaScenarioOptions): Promise<ReplicaRound[]> {
  const t0 = Date.now();
  // Every round's cold, warm and kill layers stay in the memstore (it is RAM, used only as written).
  const memstoreBytes = 2 ** 30 + o.rounds * 2 * (o.coldBytes + KILL_BYTES + REPLICA_LAYERS * REPLICA_LAYER_BYTES);
  const [rgw, ownPg] = await Promise.all([startRgw({ memstoreBytes }), o.pg ? undefined : startPostgres()]);
  const pg = o.pg ?? ownPg!;
  o.log(`replicas: RGW on ${rgw.endpoint} and PostgreSQL ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  const rounds: ReplicaRound[] = [];
  try {
    for (let i = 1; i <= o.rounds; i++) {
      o.log(`replicas round ${i}/${o.rounds}`);
      rounds.push(await replicaRound(o, rgw, pg, i));
    }
  } finally {
    await ownPg?.destroy();
    await rgw.destroy();
  }
  return rounds;
}

interface ReplicaSet {
  replicas: Proxy[];
  bucket: string;
  stop(): Promise<void>;
}

async function startReplicaSet(o: ReplicaScenarioOptions, rgw: RgwServer, pg: PgServer, round: number): Promise<ReplicaSet> {
  const bucket = await rgw.createBucket(`bench-replicas-${round}-${Date.now()}`);
  const { url } = await pg.createDatabase(`bench_replicas_${round}_${Date.now()}`);
  const extraConfig = (port: number) =>
    [
      'storage:',
      '  backend: s3',
      '  s3:',
      `    bucket: ${bucket}`,
      `    prefix: ${PREFIX}`,
      `    endpoint: ${rgw.endpoint}`,
      `    region: ${rgw.region}`,
      '    forcePathStyle: true',
      'cluster:',
      `  advertise: http://127.0.0.1:${port}`,
      `  secret: ${SECRET}`,
    ].join('\n');
  const env = { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey };
  const started = await Promise.allSettled(
    Array.from({ length: REPLICAS }, () => startRegmirror({ upstreamUrl: o.upstream.info.url, logLevel: o.logLevel, entry: o.entry, postgres: { url, password: pg.password }, extraConfig, env })),
  );
  const replicas = started.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const stop = async () => void (await Promise.all(replicas.map((r) => r.stop())));
  const failed = started.find((s) => s.status === 'rejected');
  if (failed) {
    await stop();
    throw (failed as PromiseRejectedResult).reason;
  }
  return { replicas, bucket, stop };
}

async function replicaRound(o: ReplicaScenarioOptions, rgw: RgwServer, pg: PgServer, round: number): Promise<ReplicaRound> {
  const { upstream, log } = o;
  const set = await startReplicaSet(o, rgw, pg, round);
  const [a, b, c] = set.replicas;
  const idleMiB = await Promise.all(set.replicas.map((r) => rssNow(r.pid)));
  const samplers = set.replicas.map((r) => sampleRss(r.pid));
  const otherCpuS: Record<string, number | undefined> = {};
  const peaks: Record<string, number[]> = {};
  const phase = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    // The bench's children are every server here (a replica killed meanwhile, once reaped,
    // included), and the postmaster's are the backends working for the replicas.
    const r = await o.phase(`replicas round ${round} ${name}`, [process.pid, pg.pid], f);
    otherCpuS[name] = r.otherCpuS;
    peaks[name] = await Promise.all(samplers.map((s) => s.lap()));
    return r.value;
  };
  try {
    // Which side goes first alternates per round, as the proxies' order does.
    const bursts: Partial<Record<'replicas' | 'single', BurstFigures>> = {};
    for (const side of round % 2 === 1 ? (['replicas', 'single'] as const) : (['single', 'replicas'] as const)) {
      bursts[side] = side === 'replicas' ? await phase('burst, 3 replicas', () => burst(upstream, set.replicas.map((r) => r.url))) : await singleBurst(o, phase);
    }
    log(`  burst: upstream GETs per blob ${describeBurst(bursts.replicas!)} through 3 replicas, ${describeBurst(bursts.single!)} through 1 process on local disk`);

    const cold = await phase('cold pull, holder and follower', () => coldPair(upstream, a.url, b.url, o.coldBytes, `cold-${round}-${Date.now()}`));
    log(`  cold ${(o.coldBytes / MiB).toFixed(0)} MiB: holder ${(cold.holder.ms / 1000).toFixed(2)} s, non-holder ${(cold.follower.ms / 1000).toFixed(2)} s, ratio ${cold.ratio.toFixed(2)}, ${cold.upstreamGets} upstream GET`);

    await waitInBucket(rgw, set.bucket, cold.blob.digest, cold.blob.size);
    for (const r of set.replicas) await pullBlob(blobUrl(r.url, cold.blob), cold.blob.size); // untimed: every replica has read it once
    const spread = await phase(`warm pull ${WARM_CLIENTS} clients, 3 replicas`, () => pullSpread(set.replicas.map((r) => blobUrl(r.url, cold.blob)), cold.blob.size, WARM_CLIENTS));
    const one = await phase(`warm pull ${WARM_CLIENTS} clients, 1 replica`, () => pullSpread([blobUrl(a.url, cold.blob)], cold.blob.size, WARM_CLIENTS));
    const warm = { clients: WARM_CLIENTS, replicas: spread, single: one, ratio: mbps(spread) / mbps(one) };
    log(`  warm ${WARM_CLIENTS} clients: 3 replicas ${mbps(spread).toFixed(0)} MB/s, 1 replica ${mbps(one).toFixed(0)} MB/s (${warm.ratio.toFixed(2)}×)`);

    const killed = { proxy: a, gone: undefined as Promise<void> | undefined };
    const kill = await phase('kill -9 of the holder', () => killHolder(upstream, killed, b.url, c.url, `kill-${round}-${Date.now()}`));
    log(`  kill -9 of the holder: next complete pull through another replica after ${(kill.recoveredMs / 1000).toFixed(2)} s (${kill.attempts} attempt(s), ${kill.upstreamGets} upstream GETs)`);
    await killed.gone;

    const rss = await Promise.all(set.replicas.map(async (r, i) => {
      const s = await samplers[i].stop();
      return { pid: r.pid, idleMiB: idleMiB[i], peakMiB: Math.max(s.peakRssMiB, Number.isFinite(s.hwmMiB) ? s.hwmMiB : 0) };
    }));
    log(`  RSS per replica: idle ${idleMiB.map((x) => x.toFixed(0)).join('/')} MiB, peak ${rss.map((r) => r.peakMiB.toFixed(0)).join('/')} MiB; by phase: ${Object.entries(peaks).map(([k, v]) => `${k} ${v.map((x) => x.toFixed(0)).join('/')}`).join('; ')}`);
    return { round, burst: { replicas: bursts.replicas!, single: bursts.single! }, cold, warm, kill, rss, peakRssMiBByPhase: peaks, otherCpuS };
  } catch (err) {
    for (const r of set.replicas) log(`  replica ${r.url} log ends:\n${await r.logs()}`);
    throw err;
  } finally {
    for (const s of samplers) await s.stop();
    await set.stop();
  }
}

function blobUrl(origin: string, blob: { name: string; digest: string }): string {
  return `${origin}/v2/${blob.name}/blobs/${blob.digest}`;
}

function mbps(t: Transfer): number {
  return t.bytes / 1e6 / (t.ms / 1000);
}

function describeBurst(b: BurstFigures): string {
  return `${b.perDigestMin}..${b.perDigestMax}${b.failures ? ` (${b.failures} failed)` : ''}`;
}

async function burst(upstream: Upstream, origins: string[]): Promise<BurstFigures> {
  const many = upstream.info.replicaMany!;
  await upstream.reset();
  const r = await coalesceBurst(origins, many.name, many.layers, BURST_CLIENTS, BURST_CONNS_PER_CLIENT);
  const c = await upstream.counters();
  const per = many.layers.map((l) => c.blobGetByDigest[l.digest] ?? 0);
  return { ms: r.ms, failures: r.failures, failureSamples: r.failureSamples, perDigestMin: Math.min(...per), perDigestMean: per.reduce((x, y) => x + y, 0) / per.length, perDigestMax: Math.max(...per) };
}

/** The same burst on one fresh process on the local disk (SQLite, files), as a single mirror runs. */
async function singleBurst(o: ReplicaScenarioOptions, phase: <T>(name: string, f: () => Promise<T>) => Promise<T>): Promise<BurstFigures> {
  const proxy = await startRegmirror({ upstreamUrl: o.upstream.info.url, logLevel: o.logLevel, entry: o.entry });
  try {
    return await phase('burst, 1 process', () => burst(o.upstream, [proxy.url]));
  } finally {
    await proxy.stop();
  }
}

/** Resolves once the upstream has had a GET of `digest`: whoever sent it holds the download's lease. */
async function upstreamGetSeen(upstream: Upstream, digest: string, timeoutMs = 30_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (((await upstream.counters()).blobGetByDigest[digest] ?? 0) === 0) {
    if (Date.now() > deadline) throw new Error(`no upstream GET of ${digest} within ${timeoutMs} ms`);
    await sleep(5);
  }
}

async function coldPair(upstream: Upstream, holderUrl: string, followerUrl: string, bytes: number, seed: string): Promise<ReplicaRound['cold']> {
  const blob = await upstream.freshBlob(bytes, seed);
  await upstream.reset();
  const holder = pullBlob(blobUrl(holderUrl, blob), blob.size);
  // A catch now, so that a failure while the follower starts is not unhandled; awaited below.
  holder.catch(() => undefined);
  await upstreamGetSeen(upstream, blob.digest);
  const follower = await pullBlob(blobUrl(followerUrl, blob), blob.size);
  const h = await holder;
  const gets = (await upstream.counters()).blobGetByDigest[blob.digest] ?? 0;
  return { blob, holder: h, follower, ratio: follower.ms / h.ms, upstreamGets: gets };
}

/** `clients` pulls of one blob at once, client i through url i mod n; aggregate bytes over wall time. */
async function pullSpread(urls: string[], size: number, clients: number): Promise<Transfer> {
  const started = performance.now();
  const parts = await Promise.all(Array.from({ length: clients }, (_, i) => pullBlob(urls[i % urls.length], size)));
  return { bytes: parts.reduce((x, p) => x + p.bytes, 0), ms: performance.now() - started };
}

/**
 * A slow download held by `killed.proxy` and followed through `followerUrl`; kill -9 of the
 * holder once the follower has KILL_AFTER_BYTES; then pulls through `otherUrl` (at full
 * upstream speed) until one completes.
 */
async function killHolder(upstream: Upstream, killed: { proxy: Proxy; gone?: Promise<void> }, followerUrl: string, otherUrl: string, seed: string): Promise<ReplicaRound['kill']> {
  const blob = await upstream.freshBlob(KILL_BYTES, seed);
  await upstream.reset();
  await upstream.throttle(KILL_PACE);
  try {
    return await killAndRecover(upstream, blob, killed, followerUrl, otherUrl);
  } finally {
    await upstream.throttle(undefined);
  }
}

async function killAndRecover(upstream: Upstream, blob: BlobInfo, killed: { proxy: Proxy; gone?: Promise<void> }, followerUrl: string, otherUrl: string): Promise<ReplicaRound['kill']> {
  const holder = pullBlob(blobUrl(killed.proxy.url, blob), blob.size).then(() => true, () => false);
  await upstreamGetSeen(upstream, blob.digest);
  let followed = 0;
  let reached: () => void = () => undefined;
  const enough = new Promise<void>((r) => (reached = r));
  const follower = pullBlob(blobUrl(followerUrl, blob), blob.size, (n) => {
    followed = n;
    if (n >= KILL_AFTER_BYTES) reached();
  }).then(() => true, () => false);
  await Promise.race([enough, follower, sleep(30_000)]);
  if (followed < KILL_AFTER_BYTES) throw new Error(`the follower had ${followed} bytes of ${blob.digest} before the holder was killed`);
  process.kill(killed.proxy.pid, 'SIGKILL');
  const killedAt = performance.now();
  killed.gone = killed.proxy.stop();
  await upstream.throttle(undefined);
  let attempts = 0;
  for (;;) {
    attempts++;
    const ok = await pullBlob(blobUrl(otherUrl, blob), blob.size).then(() => true, () => false);
    if (ok) break;
    if (performance.now() - killedAt > RECOVERY_TIMEOUT_MS) throw new Error(`no complete pull of ${blob.digest} within ${RECOVERY_TIMEOUT_MS} ms of the kill`);
    await sleep(50);
  }
  const recoveredMs = performance.now() - killedAt;
  const [holderCompleted, followerCompleted] = await Promise.all([holder, follower]);
  const upstreamGets = (await upstream.counters()).blobGetByDigest[blob.digest] ?? 0;
  return { blob, recoveredMs, attempts, upstreamGets, holderCompleted, followerCompleted };
}

/** Resolves once the bucket holds the blob whole (the holder uploads it after its clients' last byte). */
async function waitInBucket(rgw: RgwServer, bucket: string, digest: string, size: number, timeoutMs = 120_000): Promise<void> {
  const s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
  const hex = digest.slice('sha256:'.length);
  const key = `${PREFIX}/blobs/sha256/${hex.slice(0, 2)}/${hex}`;
  const deadline = Date.now() + timeoutMs;
  try {
    for (;;) {
      const head = await s3.send(new HeadObjectCommand({ Bucket: bucket, Key: key })).catch(() => undefined);
      if (head?.ContentLength === size) return;
      if (Date.now() > deadline) throw new Error(`${key} not in bucket ${bucket} within ${timeoutMs} ms`);
      await sleep(100);
    }
  } finally {
    s3.destroy();
  }
}
