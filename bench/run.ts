// `npm run bench`: regmirror against distribution's proxy mode (when docker-registry is
// installed), both in front of the same fake Docker Hub (token auth, 307 to a CDN), with
// nginx (when installed), a direct upstream pull and a raw fs read as references.
// Every server is a child process; this process only generates load and keeps time.
//
//   BENCH_ROUNDS=3        rounds (the proxies' order alternates per round)
//   BENCH_QUICK=1         ~1-minute smoke run: 1 round, 256 MiB layer, 2 s manifest loops, 300 scale images
//   BENCH_LARGE_MIB=1024  size of the large layer
//   BENCH_MANIFEST_SECONDS=5
//   BENCH_LOG_LEVEL=info  log level of both proxies (logs go to a file)
//   BENCH_TSX=1           run regmirror with `node --import tsx src/main.ts` instead of building
//                         dist/ (`npm run build`) and running `node dist/main.js`, as `npm start` does
//   BENCH_REGMIRROR_DIR=DIR  measure the regmirror of another checkout (built there), e.g. a
//                         worktree of an older commit: a before and an after, one harness
//   BENCH_SCALE_IMAGES=2000  images of the scale scenario (300 with BENCH_QUICK; 0 skips it)
//   BENCH_SCALE_SECONDS=15   length of its 256-connection loop (3 with BENCH_QUICK)
//   BENCH_PROFILE=1       afterwards, CPU-profile a regmirror child during warm manifest GETs
//                         and during a cold then a warm blob pull, and print the top frames
//   BENCH_REPLICAS=0      leave out the replicas scenario (bench/replicas.ts: 3 processes on one
//                         RGW bucket and one PostgreSQL; skipped by itself without Ceph or PostgreSQL)
//   BENCH_ONLY=replicas   run the replicas scenario alone
//   BENCH_ONLY=signatures warm manifests by tag under an enforce signature policy against
//                         policies off (bench/signatures.ts): req/s of both and the ratio
//   BENCH_NODE_LOCAL=1    run every regmirror child with the environment the node-local DaemonSet
//                         gives its container (the env of deploy/kubernetes/node-local/daemonset.yaml)
//   BENCH_CHILD_ENV="K=V"  more environment for the regmirror children only (allocator settings)
//   BENCH_MEMORY_LIMIT=128Mi each regmirror child in a memory cgroup with that limit (as a pod's
//                         limits.memory; BENCH_NODE_LOCAL=1 takes the DaemonSet's; 0: none)
//   BENCH_METADATA=sqlite where regmirror keeps its metadata, as `--metadata` (which wins):
//
//   npm run bench -- --metadata sqlite    the default: SQLite in each fresh data dir
//   npm run bench -- --metadata postgres  regmirror on PostgreSQL instead, a fresh database per
//                                         proxy (restarts keep theirs) on a PostgreSQL 15
//                                         cluster the bench starts in a temp dir and removes
//                                         (test/support/postgres.ts: loopback, SCRAM, fsync off)
//   npm run bench -- --metadata both      each round runs regmirror on SQLite and on PostgreSQL,
//                                         in alternating order like the proxies; the table gets
//                                         a `regmirror (postgres)` column and pg÷sqlite ratios,
//                                         and the end of the output (and the JSON's
//                                         `postgresTargets`) holds the figures issue 14 sets
//                                         targets for: warm manifests by tag (req/s ≥ 0.9×
//                                         SQLite, p99 < 10 ms) and scale cold images/s (≥ 0.8×)
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { cpus, tmpdir, totalmem } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { coalesceBurst, CONTAINERD_ACCEPT as ACCEPT, directPull, fsRead, fsWriteSync, mbps, pullBlob, pullParallel, requestLoop, type Transfer } from './load.js';
import { startPostgres, type PgServer } from '../test/support/postgres.js';
import { cpuAudit, findTool, flushDisk, gitCommit, machineBusy, REPO_ROOT, rssNow, SUBJECT_ROOT, sampleRss, startDistribution, startNginx, startRegmirror, startUpstream, type Nginx, type Proxy, type ProxyStartOptions, type Upstream } from './peers.js';
import { benchChildEnv, benchMemoryLimit } from './node-local-env.js';
import { formatProfile, monotonicUs, summarizeProfile, type ProfileSummary, type Window } from './profile.js';
import { REPLICA_LAYER_BYTES, REPLICA_LAYERS, replicaScenario, replicaSettings, replicasMissing, type ReplicaScenarioOptions } from './replicas.js';
import { formatReplicaFigures, replicaFigures, type ReplicaRound } from './replicas-report.js';
import { jsonSummary, table } from './report.js';
import { formatSignatureBench, signatureScenario } from './signatures.js';
import { SCALE_CLIENTS, SCALE_CONNECTIONS, scaleRound, type ScaleResult } from './scale.js';
import { backendFigures, formatBackendFigures, summaryRows, tableLayout, type Kind, type ManifestRun, type ProxyRound, type RoundResult } from './summary.js';
import type { ScaleInfo } from './scale-images.js';
import type { CountersJson } from './upstream-server.js';

const MiB = 1024 * 1024;
const env = process.env;
const QUICK = env.BENCH_QUICK === '1';
const ROUNDS = Math.max(1, Number(env.BENCH_ROUNDS ?? (QUICK ? 1 : 3)));
const MANIFEST_MS = 1000 * Number(env.BENCH_MANIFEST_SECONDS ?? (QUICK ? 2 : 5));
const WARMUP_MS = QUICK ? 300 : 1000;
const LOG_LEVEL = env.BENCH_LOG_LEVEL ?? 'info';
const PROFILE = env.BENCH_PROFILE === '1';
const ENTRY: 'dist' | 'tsx' = env.BENCH_TSX === '1' ? 'tsx' : 'dist';
const WARM_CLIENTS = 8;
/** Single-client warm pulls (and their references) per round; the median is kept. */
const REPEAT = 3;
const BURST_CLIENTS = 16;
const BURST_CONNS_PER_CLIENT = 8;
const MANY_LAYERS = 64;
const MANY_LAYER_BYTES = 256 * 1024;
const MANIFEST_CONNECTIONS = 16;
// V8's memory reducer runs 8 s after start-up's allocations stop and gives the young
// generation back (about 5 MiB): what a node agent holds while it waits for work.
const REST_SETTLE_MS = 12_000;
const ONLY_REPLICAS = env.BENCH_ONLY === 'replicas';
const ONLY_SIGNATURES = env.BENCH_ONLY === 'signatures';
const SCALE_IMAGES = ONLY_REPLICAS ? 0 : Math.max(0, Math.floor(Number(env.BENCH_SCALE_IMAGES ?? (QUICK ? 300 : 2000))) || 0);
const SCALE_MS = 1000 * Number(env.BENCH_SCALE_SECONDS ?? (QUICK ? 3 : 15));
const SCALE_BASE_BYTES = 256 * 1024;

type MetadataMode = 'sqlite' | 'postgres' | 'both';
const USAGE = 'usage: npm run bench [-- --metadata sqlite|postgres|both]; everything else is set with BENCH_* variables';

function metadataMode(args: string[]): MetadataMode {
  let mode = env.BENCH_METADATA || 'sqlite';
  for (let i = 0; i < args.length; i++) {
    const a = args[i];
    if (a === '--metadata') {
      if (i + 1 === args.length) throw new Error(`--metadata needs a value\n${USAGE}`);
      mode = args[++i];
    } else if (a.startsWith('--metadata=')) mode = a.slice('--metadata='.length);
    // A mistyped option would otherwise cost a whole run of the wrong thing.
    else throw new Error(`unknown argument ${a}\n${USAGE}`);
  }
  if (mode !== 'sqlite' && mode !== 'postgres' && mode !== 'both') throw new Error(`--metadata (or BENCH_METADATA) ${mode}: must be sqlite, postgres or both\n${USAGE}`);
  return mode;
}

let METADATA: MetadataMode = 'sqlite';
try {
  METADATA = metadataMode(process.argv.slice(2));
  if (env.BENCH_ONLY !== undefined && !ONLY_REPLICAS && !ONLY_SIGNATURES) throw new Error(`BENCH_ONLY=${env.BENCH_ONLY}: the scenarios that run alone are replicas and signatures`);
} catch (err) {
  console.error((err as Error).message);
  process.exit(2);
}
/** The regmirror columns, in the order of the first round. */
const REGMIRRORS: Kind[] = METADATA === 'both' ? ['regmirror', 'regmirror-postgres'] : METADATA === 'postgres' ? ['regmirror-postgres'] : ['regmirror'];

/** The cluster of a run with PostgreSQL, and each regmirror data dir's database on it. */
let pgCluster: PgServer | undefined;
const pgDatabases = new Map<string, { url: string; password: string }>();
let pgDatabaseCount = 0;

/** A fresh database for a fresh proxy; a restart on `reuseDir` gets the one of that dir, as it gets its files. */
async function proxyDatabase(reuseDir: string | undefined): Promise<{ url: string; password: string }> {
  if (!pgCluster) throw new Error('no PostgreSQL cluster running');
  const known = reuseDir === undefined ? undefined : pgDatabases.get(reuseDir);
  if (known) return known;
  const { url } = await pgCluster.createDatabase(`bench_${++pgDatabaseCount}`);
  return { url, password: pgCluster.password };
}


function log(msg: string): void {
  process.stderr.write(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}\n`);
}

function fmtT(t: Transfer): string {
  return `${(t.ms / 1000).toFixed(2)} s, ${mbps(t).toFixed(0)} MB/s`;
}

/** Runs `f` `n` times back to back and keeps the median run (single-client pulls are short and noisy). */
async function medianOf(n: number, f: () => Promise<Transfer>): Promise<Transfer> {
  const runs: Transfer[] = [];
  for (let i = 0; i < n; i++) runs.push(await f());
  return runs.sort((a, b) => a.ms - b.ms)[n >> 1];
}

function upstreamRequests(c: CountersJson): number {
  return c.total + c.token;
}

async function getOk(url: string, headers: Record<string, string> = {}): Promise<void> {
  const res = await request(url, { headers, signal: AbortSignal.timeout(30_000) });
  const body = await res.body.text();
  if (res.statusCode !== 200) throw new Error(`GET ${url}: HTTP ${res.statusCode} ${body.slice(0, 300)}`);
}

async function startProxy(kind: Kind, upstream: Upstream, cpuProfDir?: string, opts: ProxyStartOptions = {}): Promise<Proxy> {
  if (kind === 'distribution') return startDistribution({ upstreamUrl: upstream.info.url, logLevel: LOG_LEVEL, ...opts });
  const postgres = kind === 'regmirror-postgres' ? await proxyDatabase(opts.reuseDir) : undefined;
  const proxy = await startRegmirror({ upstreamUrl: upstream.info.url, logLevel: LOG_LEVEL, cpuProfDir, entry: ENTRY, postgres, ...opts });
  if (postgres) pgDatabases.set(proxy.dir, postgres);
  return proxy;
}

async function manifestRun(proxy: Proxy, upstream: Upstream, path: string): Promise<ManifestRun> {
  const r = await requestLoop(proxy.url, {
    connections: MANIFEST_CONNECTIONS,
    durationMs: MANIFEST_MS,
    warmupMs: WARMUP_MS,
    path,
    headers: { accept: ACCEPT },
    beforeMeasure: () => upstream.reset(),
  });
  return { ...r, upstreamRequests: upstreamRequests(await upstream.counters()) };
}

/** Phases during which other processes took more than this share of the machine's CPUs. */
const NOISY_SHARE = 0.1;
const noisyPhases: string[] = [];

/**
 * Runs one measured phase while accounting the machine's CPU time: what the bench, the
 * upstream and the proxy did not use was used by someone else, and the phase is flagged.
 */
async function audited<T>(phase: string, pids: number[], f: () => Promise<T>, trees: number[] = []): Promise<{ value: T; otherCpuS?: number }> {
  // The postmaster with its backends: they work for regmirror on PostgreSQL, not against it.
  const allTrees = [...new Set([...(pgCluster ? [pgCluster.pid] : []), ...trees])];
  // The bench's own tree already holds its own CPU time.
  const audit = await cpuAudit(allTrees.includes(process.pid) ? pids : [process.pid, ...pids], allTrees);
  const value = await f();
  const a = await audit.stop();
  if (a && a.otherS > NOISY_SHARE * a.wallS * cpus().length) {
    noisyPhases.push(`${phase} (${((100 * a.otherS) / (a.wallS * cpus().length)).toFixed(0)} % of the CPUs)`);
    log(`  warning: other processes used ${a.otherS.toFixed(1)} CPU-s of ${(a.wallS * cpus().length).toFixed(1)} during ${phase}`);
  }
  return { value, otherCpuS: a?.otherS };
}

/** One proxy, fresh process and empty cache: cold pull, warm pulls, coalescing burst, manifest loops. */
async function proxyRound(kind: Kind, upstream: Upstream, round: number): Promise<ProxyRound> {
  const { large, many, index } = upstream.info;
  const proxy = await startProxy(kind, upstream);
  const pids = [proxy.pid, upstream.pid];
  const otherCpuS: Record<string, number | undefined> = {};
  const phase = async <T>(name: string, f: () => Promise<T>): Promise<T> => {
    const r = await audited(`round ${round} ${kind} ${name}`, pids, f);
    otherCpuS[name] = r.otherCpuS;
    return r.value;
  };
  try {
    const blobUrl = `${proxy.url}/v2/${large.name}/blobs/${large.digest}`;
    const idleRssMiB = await rssNow(proxy.pid);
    await sleep(Math.max(0, REST_SETTLE_MS - (performance.now() - proxy.spawnedAt)));
    const restRssMiB = await rssNow(proxy.pid);
    const rss = sampleRss(proxy.pid);
    await upstream.reset();
    // Dirty pages left by earlier phases (the layer the upstream wrote, the other proxy's
    // store) would be written back during the pull and compete with the store's writes.
    flushDisk();
    const coldT = await phase('cold pull', () => pullBlob(blobUrl, large.size));
    await proxy.waitCached(large.digest, large.size);
    const c = await upstream.counters();
    const cold = { ...coldT, upstreamBlobGets: c.blobGetByDigest[large.digest] ?? 0, cdnGets: c.cdnGet, peakRssMiB: await rss.lap() };
    log(`  ${kind}: cold ${fmtT(cold)} (${cold.upstreamBlobGets} upstream GET)`);
    const warm1 = await phase('warm pull 1 client', () => medianOf(REPEAT, () => pullBlob(blobUrl, large.size)));
    const warmN = await phase(`warm pull ${WARM_CLIENTS} clients`, () => pullParallel(blobUrl, large.size, WARM_CLIENTS));
    const warmPeakRssMiB = await rss.lap();
    const mem = await rss.stop();
    log(`  ${kind}: warm 1 client ${fmtT(warm1)}; ${WARM_CLIENTS} clients ${fmtT(warmN)}; RSS idle ${idleRssMiB.toFixed(0)}, at rest ${restRssMiB.toFixed(0)}, cold peak ${cold.peakRssMiB.toFixed(0)}, warm peak ${warmPeakRssMiB.toFixed(0)} MiB`);

    await upstream.reset();
    const b = await phase('coalescing burst', () => coalesceBurst(proxy.url, many.name, many.layers, BURST_CLIENTS, BURST_CONNS_PER_CLIENT));
    // distribution stores in the background: let that finish (and be counted) before going on.
    await Promise.all(many.layers.map((l) => proxy.waitCached(l.digest, l.size, 60_000))).catch((err: Error) => log(`  ${kind}: ${err.message}`));
    const bc = await upstream.counters();
    const per = many.layers.map((l) => bc.blobGetByDigest[l.digest] ?? 0);
    const burst = {
      ...b,
      perDigestMin: Math.min(...per),
      perDigestMean: per.reduce((x, y) => x + y, 0) / per.length,
      perDigestMax: Math.max(...per),
      blobGets: bc.blobGet,
      blobHeads: bc.blobHead,
      cdnGets: bc.cdnGet,
    };
    log(`  ${kind}: burst ${(b.ms / 1000).toFixed(2)} s, ${b.failures} failed, upstream GETs per digest ${burst.perDigestMin}..${burst.perDigestMax}`);
    for (const f of b.failureSamples) log(`  ${kind}: burst failure: ${f}`);

    const tagPath = `/v2/${index.name}/manifests/${index.tag}`;
    const digestPath = `/v2/${index.name}/manifests/${index.childDigest}`;
    await getOk(`${proxy.url}${tagPath}`, { accept: ACCEPT });
    await getOk(`${proxy.url}${digestPath}`, { accept: ACCEPT });
    const manifestTag = await phase('manifests by tag', () => manifestRun(proxy, upstream, tagPath));
    const manifestDigest = await phase('manifests by digest', () => manifestRun(proxy, upstream, digestPath));
    for (const [what, m] of [['by tag', manifestTag], ['by digest', manifestDigest]] as const) {
      log(`  ${kind}: manifest ${what} ${m.rps.toFixed(0)} req/s, p50 ${m.p50.toFixed(2)} ms, p99 ${m.p99.toFixed(2)} ms, ${m.errors} errors, ${m.upstreamRequests} upstream requests`);
    }
    return { cold, warm1, warmN, idleRssMiB, restRssMiB, warmPeakRssMiB, rss: mem, burst, manifestTag, manifestDigest, otherCpuS };
  } catch (err) {
    log(`  ${kind} failed; its log ends:\n${await proxy.logs()}`);
    throw err;
  } finally {
    await proxy.stop();
  }
}

/** Scenario 5 on a fresh proxy of `kind`; its phases' CPU audits go into `otherCpuS`. */
async function proxyScale(kind: Kind, upstream: Upstream, info: ScaleInfo, round: number, otherCpuS: Record<string, number | undefined>): Promise<ScaleResult> {
  let current: Proxy | undefined;
  return scaleRound(
    {
      kind,
      upstream,
      start: async (opts) => (current = await startProxy(kind, upstream, undefined, opts)),
      phase: async (name, f) => {
        const r = await audited(`round ${round} ${kind} ${name}`, [current!.pid, upstream.pid], f);
        otherCpuS[name] = r.otherCpuS;
        return r.value;
      },
      log,
    },
    info,
    { loadMs: SCALE_MS, warmupMs: WARMUP_MS },
  );
}

/**
 * CPU profiles of regmirror children (`--cpu-prof`): one during warm manifest GETs, one
 * during a cold pull followed by warm parallel pulls. Each summary covers only the samples
 * taken while that load ran (start-up and shutdown are left out).
 */
async function profiles(upstream: Upstream, outPrefix: string, kind: Kind): Promise<Record<string, ProfileSummary>> {
  const { large, index } = upstream.info;
  const out: Record<string, ProfileSummary> = {};
  // SQLite's keys are the ones results have always had.
  const key = (name: string) => (kind === 'regmirror' ? name : `${kind}:${name}`);
  for (const what of ['manifests', 'blobs'] as const) {
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-prof-'));
    const proxy = await startProxy(kind, upstream, dir);
    const windows: Array<{ name: string; title: string; window: Window }> = [];
    const timed = async <T>(name: string, title: string, f: () => Promise<T>): Promise<T> => {
      const fromUs = monotonicUs();
      const r = await f();
      windows.push({ name, title, window: { fromUs, toUs: monotonicUs() } });
      return r;
    };
    try {
      if (what === 'manifests') {
        const tagPath = `/v2/${index.name}/manifests/${index.tag}`;
        const digestPath = `/v2/${index.name}/manifests/${index.childDigest}`;
        await getOk(`${proxy.url}${tagPath}`, { accept: ACCEPT });
        await getOk(`${proxy.url}${digestPath}`, { accept: ACCEPT });
        const t = await timed('manifest-tag', `warm manifest GET by tag, ${MANIFEST_CONNECTIONS} connections`, () => manifestRun(proxy, upstream, tagPath));
        const d = await timed('manifest-digest', `warm manifest GET by digest, ${MANIFEST_CONNECTIONS} connections`, () => manifestRun(proxy, upstream, digestPath));
        log(`  profiled ${kind} manifests: by tag ${t.rps.toFixed(0)} req/s, by digest ${d.rps.toFixed(0)} req/s`);
      } else {
        const blobUrl = `${proxy.url}/v2/${large.name}/blobs/${large.digest}`;
        const c = await timed('blob-cold', 'cold pull, 1 client', () => pullBlob(blobUrl, large.size));
        const w = await timed('blob-warm', `warm pull, ${WARM_CLIENTS} clients`, () => pullParallel(blobUrl, large.size, WARM_CLIENTS));
        log(`  profiled ${kind} blobs: cold ${fmtT(c)}; ${WARM_CLIENTS} clients ${fmtT(w)}`);
      }
    } finally {
      await proxy.stop(); // SIGTERM: the child exits normally and writes its profile
    }
    const file = (await readdir(dir)).find((f) => f.endsWith('.cpuprofile'));
    if (!file) {
      log(`  no profile written for ${what}`);
      await rm(dir, { recursive: true, force: true });
      continue;
    }
    const keep = `${outPrefix}-${kind}-${what}.cpuprofile`;
    await copyFile(join(dir, file), keep);
    await rm(dir, { recursive: true, force: true });
    for (const w of windows) {
      const summary = (out[key(w.name)] = await summarizeProfile(keep, w.window));
      console.log('\n' + formatProfile(`${kind} CPU profile: ${w.title} (${keep.slice(REPO_ROOT.length + 1)})`, summary));
    }
  }
  return out;
}

async function main(): Promise<void> {
  if (ONLY_SIGNATURES) {
    const r = await signatureScenario({ entry: ENTRY, logLevel: LOG_LEVEL, durationMs: MANIFEST_MS, warmupMs: WARMUP_MS, connections: MANIFEST_CONNECTIONS, rounds: ROUNDS });
    console.log(formatSignatureBench(r));
    return;
  }
  const started = Date.now();
  const notes: string[] = [];
  let largeMiB = Number(env.BENCH_LARGE_MIB ?? (QUICK ? 256 : 1024));
  // The upstream child briefly holds ~3× the layer while generating it, and the page cache wants it too.
  if (totalmem() < largeMiB * MiB * 8 && largeMiB > 512) {
    notes.push(`only ${(totalmem() / 2 ** 30).toFixed(0)} GiB of memory: large layer reduced from ${largeMiB} to 512 MiB`);
    largeMiB = 512;
  }
  const largeLabel = largeMiB % 1024 === 0 ? `${largeMiB / 1024} GiB` : `${largeMiB} MiB`;
  const registryPath = findTool('docker-registry');
  const nginxPath = ONLY_REPLICAS ? undefined : findTool('nginx');
  const kinds: Kind[] = registryPath ? [...REGMIRRORS, 'distribution'] : REGMIRRORS;
  const skipped: string[] = [];
  if (!registryPath && !ONLY_REPLICAS) skipped.push('distribution proxy: docker-registry not installed');
  if (!nginxPath && !ONLY_REPLICAS) skipped.push('nginx reference: nginx not installed');
  const replicasOff = env.BENCH_REPLICAS === '0' && !ONLY_REPLICAS ? 'BENCH_REPLICAS=0' : replicasMissing();
  const replicasLine = replicasOff && `replicas: skipped (${replicasOff})`;
  if (replicasLine) log(replicasLine);
  for (const s of skipped) log(`skipped: ${s}`);
  // Two cores are shared by the load, the proxy and the upstream: anything else running skews every number.
  const checkQuiet = async (when: string) => {
    const busy = await machineBusy(1000);
    if (busy !== undefined && busy > 0.15) {
      const note = `${when}, other processes kept ${(busy * 100).toFixed(0)} % of the CPUs busy: numbers are noisy`;
      notes.push(note);
      log(`warning: ${note}`);
    }
  };
  await checkQuiet('before the run');
  log(`${QUICK ? 'quick run, ' : ''}${ROUNDS} round(s), ${largeLabel} layer, manifest loops ${MANIFEST_MS / 1000} s, scale ${SCALE_IMAGES} images, proxy log level ${LOG_LEVEL}, regmirror from ${ENTRY === 'dist' ? 'dist/' : 'src/ via tsx'}${METADATA === 'sqlite' ? '' : `, metadata ${METADATA}`}, ${cpus().length} CPUs`);

  if (ENTRY === 'dist') {
    log('building dist/ (npm run build)');
    execFileSync('npm', ['run', 'build', '--silent'], { cwd: SUBJECT_ROOT, stdio: ['ignore', 'inherit', 'inherit'] });
  }
  const work = await mkdtemp(join(tmpdir(), 'regmirror-bench-'));
  const www = join(work, 'www');
  await mkdir(www);
  const largeFile = join(www, 'large.bin');
  let upstream: Upstream | undefined;
  let nginx: Nginx | undefined;
  const rounds: RoundResult[] = [];
  let profileSummaries: Record<string, ProfileSummary> | undefined;
  let scaleInfo: ScaleInfo | undefined;
  let replicaRounds: ReplicaRound[] | undefined;
  let replicaOpts: ReplicaScenarioOptions | undefined;
  const stamp = new Date().toISOString().replace(/[:.]/g, '-');
  const resultsDir = join(REPO_ROOT, 'bench', 'results');
  try {
    const t0 = Date.now();
    upstream = await startUpstream({
      // Alone, the replicas scenario asks for its cold layers itself.
      largeBytes: ONLY_REPLICAS ? MiB : largeMiB * MiB,
      largeFile,
      manyLayers: MANY_LAYERS,
      manyLayerBytes: MANY_LAYER_BYTES,
      scaleImages: SCALE_IMAGES,
      scaleBaseBytes: SCALE_BASE_BYTES,
      replicaLayers: replicasOff ? 0 : REPLICA_LAYERS,
      replicaLayerBytes: REPLICA_LAYER_BYTES,
    });
    scaleInfo = upstream.info.scale;
    log(`fake upstream ${upstream.info.url} (CDN ${upstream.info.cdnUrl}) ready in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
    if (nginxPath) nginx = await startNginx(nginxPath, www);
    if (METADATA !== 'sqlite') {
      const t1 = Date.now();
      pgCluster = await startPostgres();
      log(`PostgreSQL 15 cluster on ${pgCluster.host}:${pgCluster.port} ready in ${((Date.now() - t1) / 1000).toFixed(1)} s`);
    }
    const { large } = upstream.info;
    // Untimed: warms the upstream child's code paths and this process's client before round 1.
    await directPull(upstream.info.url, large.name, large.digest, large.size);

    for (let i = 0; i < (ONLY_REPLICAS ? 0 : ROUNDS); i++) {
      const order = i % 2 === 0 ? kinds : [...kinds].reverse();
      log(`round ${i + 1}/${ROUNDS} (${order.join(', ')})`);
      await upstream.reset();
      const refPids = [upstream.pid, ...((await nginx?.pids()) ?? [])];
      const { value: refs } = await audited(`round ${i + 1} references`, refPids, async () => {
        const direct = await directPull(upstream!.info.url, large.name, large.digest, large.size);
        const fsWrite = await fsWriteSync(join(work, 'write-test.bin'), large.size);
        const fs1 = await medianOf(REPEAT, () => fsRead(largeFile, large.size, 1));
        const fsN = await fsRead(largeFile, large.size, WARM_CLIENTS);
        const nginx1 = nginx ? await medianOf(REPEAT, () => pullBlob(`${nginx!.url}/large.bin`, large.size)) : undefined;
        const nginxN = nginx ? await pullParallel(`${nginx.url}/large.bin`, large.size, WARM_CLIENTS) : undefined;
        return { direct, fsWrite, fs1, fsN, nginx1, nginxN };
      });
      const { direct, fsWrite, fs1, fsN } = refs;
      const r: RoundResult = { round: i + 1, order, ...refs, proxies: {} };
      log(`  references: direct ${fmtT(direct)}; fs write+fsync ${fmtT(fsWrite)}; fs read ${fmtT(fs1)}, ×${WARM_CLIENTS} ${fmtT(fsN)}${r.nginx1 ? `; nginx ${fmtT(r.nginx1)}, ×${WARM_CLIENTS} ${fmtT(r.nginxN!)}` : ''}`);
      for (const kind of order) {
        const p = await proxyRound(kind, upstream, i + 1);
        if (scaleInfo) p.scale = await proxyScale(kind, upstream, scaleInfo, i + 1, p.otherCpuS);
        r.proxies[kind] = p;
      }
      rounds.push(r);
    }
    if (!replicasOff) {
      replicaOpts = { upstream, rounds: ROUNDS, coldBytes: largeMiB * MiB, entry: ENTRY, logLevel: LOG_LEVEL, log, pg: pgCluster, phase: (name, trees, f) => audited(name, [], f, trees) };
      // A failure here must not cost the figures of the scenarios before it.
      replicaRounds = await replicaScenario(replicaOpts).catch((err: Error) => {
        notes.push(`the replicas scenario failed: ${err.message.split('\n')[0]}`);
        log(`replicas failed: ${err.stack ?? err.message}`);
        return undefined;
      });
    }
    if (PROFILE && !ONLY_REPLICAS) {
      await mkdir(resultsDir, { recursive: true });
      profileSummaries = {};
      for (const kind of REGMIRRORS) {
        log(`profiling ${kind}`);
        Object.assign(profileSummaries, await profiles(upstream, join(resultsDir, stamp), kind));
      }
    }
  } finally {
    await pgCluster?.destroy();
    await nginx?.stop();
    await upstream?.stop();
    await rm(work, { recursive: true, force: true });
  }
  await checkQuiet('after the run');
  if (noisyPhases.length > 0) notes.push(`other processes used over ${NOISY_SHARE * 100} % of the CPUs during: ${noisyPhases.join(', ')}`);

  const columns: Kind[] = [...REGMIRRORS, 'distribution'];
  const limit = benchMemoryLimit(REPO_ROOT);
  const childEnv = Object.entries(benchChildEnv(REPO_ROOT)).map(([k, v]) => `, ${k}=${v}`).join('') + (limit === undefined ? '' : `, memory limit ${(limit / 1048576).toFixed(0)} MiB`);
  const rows = summaryRows(rounds, { REPEAT, WARM_CLIENTS, BURST_CLIENTS, MANY_LAYERS, MANY_LAYER_BYTES, MANIFEST_CONNECTIONS, MANIFEST_MS }, largeLabel, nginx !== undefined, columns, scaleInfo);
  console.log(
    `\nregmirror benchmark — ${ONLY_REPLICAS ? 'the replicas scenario alone' : `${rounds.length} round(s), median (min–max); ratios are of medians`}; ` +
      `${cpus().length} CPUs, node ${process.version}, commit ${gitCommit() ?? '?'}${SUBJECT_ROOT === REPO_ROOT ? '' : ` (BENCH_REGMIRROR_DIR)`}, regmirror ${ENTRY === 'dist' ? 'dist/main.js' : 'tsx src/main.ts'}${METADATA === 'sqlite' ? '' : `, metadata ${METADATA}`}, log level ${LOG_LEVEL}${QUICK ? ', QUICK' : ''}` +
      childEnv,
  );
  if (!ONLY_REPLICAS) {
    console.log(table(rows, tableLayout(REGMIRRORS, registryPath ? undefined : 'skipped')));
    console.log('ratios are a ÷ b of the medians: above 1× is better for MB/s and req/s, worse for s, ms and MiB');
  }
  const replicas = replicaRounds && replicaOpts && { settings: replicaSettings(replicaOpts), rounds: replicaRounds, figures: replicaFigures(replicaRounds, replicaSettings(replicaOpts)) };
  const noisyReplicas = noisyPhases.filter((p) => p.startsWith('replicas '));
  if (replicas) console.log('\n' + formatReplicaFigures(replicas.figures, replicas.rounds.length, noisyReplicas.length > 0 ? [`other processes used the CPUs during ${noisyReplicas.length} of its phases: these figures are noisy`] : []));
  for (const s of skipped) console.log(`skipped: ${s}`);
  if (replicasLine) console.log(replicasLine);
  for (const n of notes) console.log(`note: ${n}`);
  const postgresTargets = METADATA === 'sqlite' ? undefined : backendFigures(rounds, { manifestConnections: MANIFEST_CONNECTIONS, scale: scaleInfo && { images: scaleInfo.images.length, clients: SCALE_CLIENTS } });
  // A target "met" or "not met" on a busy machine says nothing: say so beside it.
  const noisyTargets = noisyPhases.filter((p) => /regmirror.* (manifests by tag|scale cold) /.test(p));
  if (postgresTargets && noisyTargets.length > 0) postgresTargets.notes.push(`other processes used the CPUs during ${noisyTargets.join(', ')}: these figures are noisy`);
  if (postgresTargets) console.log('\n' + formatBackendFigures(postgresTargets));

  await mkdir(resultsDir, { recursive: true });
  const jsonPath = join(resultsDir, `${stamp}.json`);
  const result = {
    date: new Date(started).toISOString(),
    commit: gitCommit(),
    node: process.version,
    cpus: cpus().length,
    memoryGiB: totalmem() / 2 ** 30,
    settings: { quick: QUICK, rounds: ROUNDS, regmirrorEntry: ENTRY, largeBytes: largeMiB * MiB, manifestMs: MANIFEST_MS, warmupMs: WARMUP_MS, logLevel: LOG_LEVEL, warmClients: WARM_CLIENTS, burst: { clients: BURST_CLIENTS, connsPerClient: BURST_CONNS_PER_CLIENT, layers: MANY_LAYERS, layerBytes: MANY_LAYER_BYTES }, manifestConnections: MANIFEST_CONNECTIONS, metadata: METADATA, scale: { images: SCALE_IMAGES, baseBytes: SCALE_BASE_BYTES, contentBytes: scaleInfo?.contentBytes, clients: SCALE_CLIENTS, connections: SCALE_CONNECTIONS, loadMs: SCALE_MS } },
    skipped: replicasLine ? [...skipped, replicasLine] : skipped,
    notes,
    rounds,
    summary: jsonSummary(rows),
    postgresTargets,
    replicas,
    profiles: profileSummaries,
    seconds: (Date.now() - started) / 1000,
  };
  await writeFile(jsonPath, JSON.stringify(result, null, 2) + '\n');
  console.log(`\nresults: ${jsonPath.slice(REPO_ROOT.length + 1)} (${((Date.now() - started) / 1000).toFixed(0)} s)`);
}

main().then(
  () => process.exit(0),
  (err: unknown) => {
    console.error('bench failed:', err);
    process.exit(1);
  },
);
