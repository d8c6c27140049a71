// Eviction and gc on a big store, round after round on the same filled data dir:
//  - one eviction pass that frees 10 % of the store, in this process (wall and CPU seconds);
//  - `regmirror gc` over the whole store, as a command (wall, CPU, peak RSS).
// Each round works on a fresh copy of the filled dir (files hard-linked, the database
// copied), so every pass evicts the same blobs. Medians of BENCH_EVICT_ROUNDS (3).
// BENCH_EVICT_PROFILE=<file.cpuprofile> records the first eviction pass's CPU profile.
// Run: node --import tsx bench/evict.ts [N]   (N blobs, 100000 unless given)
import { execFileSync, spawn } from 'node:child_process';
import { copyFileSync, existsSync } from 'node:fs';
import { Session } from 'node:inspector/promises';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { databaseFile } from '../src/store/data-dir.js';
import { fill } from './startup-fill.js';
import { configText, evictOnce } from './store-runs.js';

const N = Number(process.argv[2] ?? process.env.BENCH_EVICT_BLOBS ?? 100_000);
const ROUNDS = Number(process.env.BENCH_EVICT_ROUNDS ?? 3);
const PROFILE = process.env.BENCH_EVICT_PROFILE;
const MAIN = new URL('../src/main.ts', import.meta.url).pathname;

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];


/** A fresh copy of the filled dir: the blob files hard-linked (cheap, and unlinking one costs what unlinking a file does), the database copied. */
function copyOf(template: string, to: string): string {
  execFileSync('cp', ['-al', template, to]);
  for (const suffix of ['', '-wal', '-shm']) {
    const f = databaseFile(to) + suffix;
    if (!existsSync(f)) continue;
    execFileSync('rm', [f]);
    copyFileSync(databaseFile(template) + suffix, f);
  }
  return to;
}

async function profiled<T>(file: string | undefined, fn: () => Promise<T>): Promise<T> {
  if (!file) return fn();
  const session = new Session();
  session.connect();
  await session.post('Profiler.enable');
  await session.post('Profiler.start');
  try {
    return await fn();
  } finally {
    const { profile } = await session.post('Profiler.stop');
    await writeFile(file, JSON.stringify(profile));
    session.disconnect();
  }
}


/** One `regmirror gc` under /usr/bin/time: wall and CPU seconds, peak RSS. */
async function gcOnce(config: string): Promise<{ s: number; cpu: number; rss: number; report: string }> {
  const child = spawn('/usr/bin/time', ['-f', 'TIME %e %U %S %M', process.execPath, '--import', 'tsx', MAIN, 'gc', '--config', config, '--json'], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (c: Buffer) => (out += c.toString()));
  child.stderr.on('data', (c: Buffer) => (err += c.toString()));
  const code = await new Promise<number | null>((r) => child.once('exit', r));
  const m = /TIME ([\d.]+) ([\d.]+) ([\d.]+) (\d+)/.exec(err);
  if (code !== 0 || !m) throw new Error(`gc failed (${code}): ${err}`);
  return { s: Number(m[1]), cpu: Number(m[2]) + Number(m[3]), rss: Number(m[4]) / 1024, report: out.trim() };
}

const dir = await mkdtemp(join(tmpdir(), 'regmirror-evict-'));
try {
  const template = join(dir, 'template');
  const t0 = performance.now();
  const { bytes } = await fill(template, N);
  console.log(`${N} blobs: filled in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
  const evictions = [];
  const gcs = [];
  for (let r = 1; r <= ROUNDS; r++) {
    const dataDir = copyOf(template, join(dir, `round-${r}`));
    const ev = await evictOnce(dir, dataDir, bytes, (pass) => profiled(r === 1 ? PROFILE : undefined, pass));
    console.log(`  eviction ${r}: ${ev.removed} blobs in ${ev.s.toFixed(2)} s wall, ${ev.cpu.toFixed(2)} s CPU`);
    evictions.push(ev);
    const config = join(dir, `gc-${r}.yaml`);
    await writeFile(config, configText(dataDir, '  maxSize: 100GiB\n', 'warn'));
    const g = await gcOnce(config);
    console.log(`  gc ${r}: ${g.s.toFixed(2)} s wall, ${g.cpu.toFixed(2)} s CPU, peak RSS ${g.rss.toFixed(0)} MiB ${g.report.replace(/\s+/g, ' ')}`);
    gcs.push(g);
    await rm(dataDir, { recursive: true, force: true });
  }
  console.log(`median of ${ROUNDS} at ${N} blobs: eviction ${median(evictions.map((e) => e.s)).toFixed(2)} s wall, ${median(evictions.map((e) => e.cpu)).toFixed(2)} s CPU (${median(evictions.map((e) => e.removed))} blobs); ` +
    `gc ${median(gcs.map((g) => g.s)).toFixed(2)} s wall, ${median(gcs.map((g) => g.cpu)).toFixed(2)} s CPU, peak RSS ${median(gcs.map((g) => g.rss)).toFixed(0)} MiB`);
} finally {
  await rm(dir, { recursive: true, force: true });
}
