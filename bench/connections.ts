// `npm run bench:connections`: scenario 5's 256-connection loop alone (warm manifest by tag,
// then that image's small layer, on every connection back to back), through regmirror and,
// when docker-registry is installed, distribution's proxy in the same run, so tail latency
// can be worked on without the whole of `npm run bench`.
//   BENCH_ROUNDS=3               rounds (a fresh proxy each, the order alternating)
//   BENCH_SCALE_IMAGES=2000      images on the upstream (each pulled once cold to warm the cache)
//   BENCH_CONNECTIONS_SECONDS=10 length of each measured loop (after a 1 s warm-up)
//   BENCH_PROFILE=1              regmirror runs with --cpu-prof in the last round; the measured
//                                loop's profile is summarised (top frames, areas) and kept
//   BENCH_TSX=1                  regmirror from src/ with tsx instead of dist/
//   BENCH_DISTRIBUTION=0         leave distribution out (regmirror's figures alone, quicker)
import { execFileSync } from 'node:child_process';
import { copyFile, mkdir, mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { formatProfile, monotonicUs, summarizeProfile, type Window } from './profile.js';
import { cpuAudit, findTool, REPO_ROOT, sampleRss, startDistribution, startRegmirror, startUpstream, type Proxy, type Upstream } from './peers.js';
import { stat } from './report.js';
import { pullImages } from './scale-load.js';
import { CONNS_PER_CLIENT, SCALE_CLIENTS, SCALE_CONNECTIONS, connectionsLoop } from './scale.js';
import type { ScaleInfo } from './scale-images.js';

const env = process.env;
const ROUNDS = Number(env.BENCH_ROUNDS ?? 3);
const IMAGES = Number(env.BENCH_SCALE_IMAGES ?? 2000);
const LOAD_MS = Number(env.BENCH_CONNECTIONS_SECONDS ?? 10) * 1000;
const PROFILE = env.BENCH_PROFILE === '1';
const ENTRY = env.BENCH_TSX === '1' ? 'tsx' : 'dist';
type Kind = 'regmirror' | 'distribution';

interface Run {
  rps: number;
  p50: number;
  p99: number;
  max: number;
  errors: number;
  peakRssMiB: number;
  /** RssAnon's peak since the proxy started (the cold pass included): RSS without file pages. */
  peakAnonMiB: number;
  upstreamRequests: number;
  /** The proxy's own CPU time (user + system, all threads) per request of the measured loop: steadier than req/s on a busy machine. */
  cpuMsPerRequest: number;
}

const log = (msg: string) => console.error(`[bench ${new Date().toISOString().slice(11, 19)}] ${msg}`);

async function start(kind: Kind, upstream: Upstream, cpuProfDir?: string): Promise<Proxy> {
  const upstreamUrl = upstream.info.url;
  return kind === 'distribution' ? startDistribution({ upstreamUrl, logLevel: 'info' }) : startRegmirror({ upstreamUrl, logLevel: 'info', entry: ENTRY, cpuProfDir });
}

/** A fresh proxy: every image pulled once (cold), then the measured loop on the warm cache. */
async function run(kind: Kind, upstream: Upstream, info: ScaleInfo, cpuProfDir?: string): Promise<{ run: Run; window: Window }> {
  const proxy = await start(kind, upstream, cpuProfDir);
  const rss = sampleRss(proxy.pid);
  try {
    const cold = await pullImages({ origin: proxy.url, images: info.images, tag: info.tag, clients: SCALE_CLIENTS, connsPerClient: CONNS_PER_CLIENT });
    if (cold.failures > 0) throw new Error(`${kind}: ${cold.failures} images failed to pull: ${cold.failureSamples[0]}`);
    let fromUs = 0;
    let audit: Awaited<ReturnType<typeof cpuAudit>> | undefined;
    const loop = await connectionsLoop(proxy.url, info, { loadMs: LOAD_MS, warmupMs: 1000 }, async () => {
      await upstream.reset();
      await rss.lap();
      audit = await cpuAudit([proxy.pid]);
      fromUs = monotonicUs();
    });
    const window = { fromUs, toUs: monotonicUs() };
    const cpu = await audit?.stop();
    const c = await upstream.counters();
    const cpuMsPerRequest = cpu ? (cpu.ownS * 1000) / Math.max(1, loop.requests) : NaN;
    return { run: { ...loop, peakRssMiB: await rss.lap(), peakAnonMiB: rss.anonPeak(), upstreamRequests: c.total + c.token, cpuMsPerRequest }, window };
  } finally {
    await rss.stop();
    await proxy.stop(); // SIGTERM: a profiled child writes its profile as it exits
  }
}

async function profiled(upstream: Upstream, info: ScaleInfo): Promise<Run> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-prof-'));
  try {
    const { run: r, window } = await run('regmirror', upstream, info, dir);
    const file = (await readdir(dir)).find((f) => f.endsWith('.cpuprofile'));
    if (!file) log('no profile written');
    else {
      const results = join(REPO_ROOT, 'bench', 'results');
      await mkdir(results, { recursive: true });
      const keep = join(results, `${new Date().toISOString().replace(/[:.]/g, '-')}-connections.cpuprofile`);
      await copyFile(join(dir, file), keep);
      const title = `regmirror CPU profile: ${SCALE_CONNECTIONS} connections, warm manifest + small blob (${keep.slice(REPO_ROOT.length + 1)})`;
      console.log('\n' + formatProfile(title, await summarizeProfile(keep, window)));
    }
    return r;
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function row(metric: string, runs: Record<Kind, Run[]>, f: (r: Run) => number, digits = 1): string {
  const cell = (rs: Run[]) => {
    const s = stat(rs.map(f));
    return s ? `${s.median.toFixed(digits)} (${s.min.toFixed(digits)}–${s.max.toFixed(digits)})` : '—';
  };
  return `${metric.padEnd(34)} ${cell(runs.regmirror).padStart(24)} ${cell(runs.distribution).padStart(24)}`;
}

async function main(): Promise<void> {
  if (ENTRY === 'dist') execFileSync('npm', ['run', 'build', '--silent'], { cwd: REPO_ROOT, stdio: 'inherit' });
  const kinds: Kind[] = findTool('docker-registry') && env.BENCH_DISTRIBUTION !== '0' ? ['regmirror', 'distribution'] : ['regmirror'];
  const work = await mkdtemp(join(tmpdir(), 'regmirror-bench-conn-'));
  const upstream = await startUpstream({ largeBytes: 1024 * 1024, largeFile: join(work, 'large.bin'), manyLayers: 1, manyLayerBytes: 1024, scaleImages: IMAGES });
  const runs: Record<Kind, Run[]> = { regmirror: [], distribution: [] };
  try {
    const info = upstream.info.scale!;
    for (let i = 0; i < ROUNDS; i++) {
      for (const kind of i % 2 === 0 ? kinds : [...kinds].reverse()) {
        const r = PROFILE && kind === 'regmirror' && i === ROUNDS - 1 ? await profiled(upstream, info) : (await run(kind, upstream, info)).run;
        runs[kind].push(r);
        log(`round ${i + 1} ${kind}: ${r.rps.toFixed(0)} req/s, p50 ${r.p50.toFixed(1)} ms, p99 ${r.p99.toFixed(1)} ms, max ${r.max.toFixed(0)} ms, ${r.errors} errors, peak RSS ${r.peakRssMiB.toFixed(0)} MiB (anonymous ${r.peakAnonMiB.toFixed(0)}), ${r.cpuMsPerRequest.toFixed(3)} CPU-ms/request, ${r.upstreamRequests} upstream requests`);
      }
    }
  } finally {
    await upstream.stop();
    await rm(work, { recursive: true, force: true });
  }
  const median = (k: Kind) => stat(runs[k].map((r) => r.rps))?.median;
  console.log(`\n${SCALE_CONNECTIONS} connections, ${IMAGES} images, ${LOAD_MS / 1000} s loops, medians of ${ROUNDS} (min–max)`);
  console.log(`${'metric'.padEnd(34)} ${'regmirror'.padStart(24)} ${'distribution'.padStart(24)}`);
  console.log(row('req/s', runs, (r) => r.rps, 0));
  console.log(row('p50 ms', runs, (r) => r.p50));
  console.log(row('p99 ms', runs, (r) => r.p99));
  console.log(row('max ms', runs, (r) => r.max, 0));
  console.log(row('peak RSS MiB', runs, (r) => r.peakRssMiB, 0));
  console.log(row('peak anonymous RSS MiB', runs, (r) => r.peakAnonMiB, 0));
  console.log(row('proxy CPU-ms per request', runs, (r) => r.cpuMsPerRequest, 3));
  console.log(row('errors', runs, (r) => r.errors, 0));
  const reg = median('regmirror');
  const dist = median('distribution');
  if (reg !== undefined && dist !== undefined) console.log(`req/s regmirror ÷ distribution: ${(reg / dist).toFixed(2)} (goal ≥ 10); regmirror p99 goal < 100 ms`);
}

await main();
