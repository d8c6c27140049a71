// A big store: a data dir holding N small blobs (rows and files), then
//  - the time from starting `regmirror serve` to the first warm manifest answered, and the
//    server's RSS once started (3 rounds, medians);
//  - `regmirror gc` over it: wall, CPU and peak RSS (3 runs, medians);
//  - one eviction pass that frees 10 % of the store.
// Several sizes run one after the other and are printed side by side.
// Run: node --import tsx bench/startup.ts [N[,N...]]   (or BENCH_STARTUP_BLOBS=100000,1000000)
import { spawn } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { fill } from './startup-fill.js';
import { configText, evictOnce } from './store-runs.js';

const SIZES = (process.argv[2] ?? process.env.BENCH_STARTUP_BLOBS ?? '100000').split(',').map(Number);
const MAIN = new URL('../src/main.ts', import.meta.url).pathname;
const ROUNDS = Number(process.env.BENCH_STARTUP_ROUNDS ?? 3);
/** Let start-up work that runs after the listener (sweeps, first eviction check) show in RSS. */
const SETTLE_MS = 2000;

interface Figures {
  blobs: number;
  fillS: number;
  firstManifestMs: number;
  rssMiB: number;
  gcS: number;
  gcCpuS: number;
  gcRssMiB: number;
  evictS: number;
  evictCpuS: number;
  evicted: number;
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));


async function rssMiB(pid: number): Promise<number> {
  const m = /VmRSS:\s+(\d+) kB/.exec(await readFile(`/proc/${pid}/status`, 'utf8'));
  return m ? Number(m[1]) / 1024 : NaN;
}

/** One `serve`: ms from spawn to the warm manifest, and RSS after it settled. */
async function startOnce(config: string, digest: string): Promise<{ ms: number; rss: number }> {
  const started = performance.now();
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'] });
  try {
    let log = '';
    const url = await new Promise<string>((resolve, reject) => {
      child.stderr.on('data', (c: Buffer) => {
        log += c.toString();
        const m = /"url":"([^"]+)"/.exec(log);
        if (m) resolve(m[1]);
      });
      child.once('exit', () => reject(new Error(log)));
    });
    const res = await request(`${url}/v2/library/app/manifests/v1`);
    await res.body.dump();
    const ms = performance.now() - started;
    if (res.statusCode !== 200 || res.headers['docker-content-digest'] !== digest) throw new Error(`warm manifest: status ${res.statusCode}, digest ${String(res.headers['docker-content-digest'])}`);
    await sleep(SETTLE_MS);
    return { ms, rss: await rssMiB(child.pid!) };
  } finally {
    child.kill('SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}

/** One `regmirror gc` under /usr/bin/time: wall and CPU seconds, peak RSS. */
async function gcOnce(config: string): Promise<{ s: number; cpu: number; rss: number }> {
  const child = spawn('/usr/bin/time', ['-f', 'TIME %e %U %S %M', process.execPath, '--import', 'tsx', MAIN, 'gc', '--config', config, '--json'], { stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  const m = /TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(err);
  if (code !== 0 || !m) throw new Error(`gc failed (${code}): ${err}`);
  return { s: Number(m[1]), cpu: Number(m[2]) + Number(m[3]), rss: Number(m[4]) / 1024 };
}


async function scenario(n: number): Promise<Figures> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-startup-'));
  try {
    const dataDir = join(dir, 'data');
    const t0 = performance.now();
    const { manifestDigest, bytes } = await fill(dataDir, n);
    const fillS = (performance.now() - t0) / 1000;
    console.log(`${n} blobs: filled in ${fillS.toFixed(1)} s`);
    const config = join(dir, 'mirror.yaml');
    await writeFile(config, configText(dataDir, '  maxSize: 100GiB\n'));
    const starts = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const s = await startOnce(config, manifestDigest);
      console.log(`  start ${r}: first warm manifest ${s.ms.toFixed(0)} ms, RSS ${s.rss.toFixed(0)} MiB`);
      starts.push(s);
    }
    const gcs = [];
    for (let r = 1; r <= ROUNDS; r++) {
      const g = await gcOnce(config);
      console.log(`  gc ${r}: ${g.s.toFixed(2)} s wall, ${g.cpu.toFixed(2)} s CPU, peak RSS ${g.rss.toFixed(0)} MiB`);
      gcs.push(g);
    }
    const ev = await evictOnce(dir, dataDir, bytes);
    console.log(`  eviction pass: ${ev.removed} blobs in ${ev.s.toFixed(2)} s (${ev.cpu.toFixed(2)} s CPU)`);
    return {
      blobs: n,
      fillS,
      firstManifestMs: median(starts.map((s) => s.ms)),
      rssMiB: median(starts.map((s) => s.rss)),
      gcS: median(gcs.map((g) => g.s)),
      gcCpuS: median(gcs.map((g) => g.cpu)),
      gcRssMiB: median(gcs.map((g) => g.rss)),
      evictS: ev.s,
      evictCpuS: ev.cpu,
      evicted: ev.removed,
    };
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function table(all: Figures[]): void {
  const rows: Array<[string, (f: Figures) => string]> = [
    ['fill (s)', (f) => f.fillS.toFixed(1)],
    ['start to first warm manifest (ms, median)', (f) => f.firstManifestMs.toFixed(0)],
    ['RSS after start-up (MiB, median)', (f) => f.rssMiB.toFixed(0)],
    ['gc wall (s, median)', (f) => f.gcS.toFixed(2)],
    ['gc CPU (s, median)', (f) => f.gcCpuS.toFixed(2)],
    ['gc peak RSS (MiB, median)', (f) => f.gcRssMiB.toFixed(0)],
    ['eviction pass, 10 % of blobs (s)', (f) => f.evictS.toFixed(2)],
    ['eviction pass CPU (s)', (f) => f.evictCpuS.toFixed(2)],
    ['blobs evicted', (f) => String(f.evicted)],
  ];
  console.log(['', ...all.map((f) => `${f.blobs} blobs`)].map((c, i) => (i === 0 ? c.padEnd(44) : c.padStart(16))).join(''));
  for (const [label, cell] of rows) console.log([label.padEnd(44), ...all.map((f) => cell(f).padStart(16))].join(''));
}

const all: Figures[] = [];
for (const n of SIZES) all.push(await scenario(n));
table(all);
