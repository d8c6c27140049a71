// `npm run bench:cold`: cold pulls of one 1 GiB layer through fresh regmirror processes,
// one after another, with the CPU-seconds each process spent on it (from /proc): a quick
// look at the cold path alone, without the peers and scenarios of `npm run bench`. Each
// pull is paired with one through the tee floor (bench/tee-floor.ts: hash, spool file and
// client socket in plain Node, nothing else), in alternating order, and regmirror's CPU
// is quoted as a ratio to it: what is left above the kernel's and sha256's share.
//   BENCH_COLD_PULLS=5   pulls (each through a new process with an empty cache)
//   BENCH_COLD_SYNC=1    sync(1) before each pull, so no earlier write-back competes with it
//   BENCH_PROFILE=1      CPU-profile each regmirror process (--cpu-prof) and summarise where the
//                        last pull's time went (profiling itself costs CPU: compare CPU-s without it)
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { blobLocation, directPull, mbps, pullBlob, type Transfer } from './load.js';
import { hwmNow } from './machine.js';
import { flushDisk, startRegmirror, startUpstream } from './peers.js';
import { formatProfile, monotonicUs, summarizeProfile, type Window } from './profile.js';
import { startTeeFloor } from './tee-floor.js';

const MiB = 1024 * 1024;
const PULLS = Number(process.env.BENCH_COLD_PULLS ?? 5);
const PROFILE = process.env.BENCH_PROFILE === '1';

/** User and system CPU time of a process (all threads), seconds. */
async function cpuSeconds(pid: number): Promise<{ user: number; sys: number }> {
  const raw = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}

function spent(a: { user: number; sys: number }, b: { user: number; sys: number }): string {
  return `${(b.user + b.sys - a.user - a.sys).toFixed(2)} (system ${(b.sys - a.sys).toFixed(2)})`;
}

/** One timed pull through the process `pid` serves, with its CPU-seconds per GiB. */
async function timedPull(pid: number, url: string, size: number): Promise<{ t: Transfer; cpuPerGiB: number; line: string }> {
  const [c0, u0] = [await cpuSeconds(pid), await cpuSeconds(up.pid)];
  const t = await pullBlob(url, size);
  const [c1, u1] = [await cpuSeconds(pid), await cpuSeconds(up.pid)];
  const cpuPerGiB = (c1.user + c1.sys - c0.user - c0.sys) / (size / (1024 * MiB));
  const hwm = await hwmNow(pid);
  return { t, cpuPerGiB, line: `${mbps(t).toFixed(0)} MB/s, ${(t.ms / 1000).toFixed(2)} s; CPU-s ${spent(c0, c1)}, upstream ${spent(u0, u1)}; peak RSS ${hwm.toFixed(0)} MiB` };
}

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[s.length >> 1];
}

/** Summarises the profile a stopped regmirror process left in `dir` over `window`. */
async function printProfile(dir: string, window: Window, title: string): Promise<void> {
  const file = (await readdir(dir)).find((f) => f.endsWith('.cpuprofile'));
  if (!file) return console.log('no CPU profile was written');
  console.log('\n' + formatProfile(title, await summarizeProfile(join(dir, file), window, 20)));
}

const work = await mkdtemp(join(tmpdir(), 'regmirror-bench-cold-'));
const up = await startUpstream({ largeBytes: 1024 * MiB, largeFile: join(work, 'large.bin'), manyLayers: 1, manyLayerBytes: 1024 });
const { large } = up.info;
const floor = await startTeeFloor(work);
const results: number[] = [];
/** CPU-seconds (user + system) per GiB pulled, one per pull: regmirror's and the floor's. */
const cpuPerGiB: number[] = [];
const floorCpu: number[] = [];
try {
  const direct = await directPull(up.info.url, large.name, large.digest, large.size);
  console.log(`direct pull: ${mbps(direct).toFixed(0)} MB/s`);
  const pullFloor = async (i: number) => {
    if (process.env.BENCH_COLD_SYNC === '1') flushDisk();
    const from = await blobLocation(up.info.url, large.name, large.digest);
    const r = await timedPull(floor.pid, `${floor.url}/?from=${encodeURIComponent(from)}&digest=${large.digest}`, large.size);
    floorCpu.push(r.cpuPerGiB);
    console.log(`floor pull ${i + 1}: ${r.line}`);
  };
  for (let i = 0; i < PULLS; i++) {
    if (i % 2 === 0) await pullFloor(i);
    if (process.env.BENCH_COLD_SYNC === '1') flushDisk();
    const profDir = PROFILE ? await mkdtemp(join(work, 'prof-')) : undefined;
    const proxy = await startRegmirror({ upstreamUrl: up.info.url, logLevel: 'info', entry: 'tsx', cpuProfDir: profDir });
    let window: Window | undefined;
    try {
      const fromUs = monotonicUs();
      const r = await timedPull(proxy.pid, `${proxy.url}/v2/${large.name}/blobs/${large.digest}`, large.size);
      window = { fromUs, toUs: monotonicUs() };
      results.push(mbps(r.t));
      cpuPerGiB.push(r.cpuPerGiB);
      console.log(`cold pull ${i + 1}: ${r.line}`);
      await proxy.waitCached(large.digest, large.size);
    } finally {
      await proxy.stop(); // SIGTERM: a profiled process exits normally and writes its profile
    }
    if (i % 2 === 1) await pullFloor(i);
    if (profDir && window && i === PULLS - 1) await printProfile(profDir, window, `regmirror CPU profile, cold pull ${i + 1}`);
  }
  const sorted = [...results].sort((a, b) => a - b);
  console.log(`median ${median(results).toFixed(0)} MB/s of ${PULLS} (min ${sorted[0].toFixed(0)}, max ${sorted[sorted.length - 1].toFixed(0)})`);
  const list = (xs: number[]) => xs.map((c) => c.toFixed(2)).join(', ');
  console.log(`regmirror CPU-s per GiB: median ${median(cpuPerGiB).toFixed(2)} of ${PULLS} (${list(cpuPerGiB)})` + (PROFILE ? ' (profiled: inflated)' : ''));
  console.log(`tee floor CPU-s per GiB: median ${median(floorCpu).toFixed(2)} (${list(floorCpu)}); regmirror / floor ${(median(cpuPerGiB) / median(floorCpu)).toFixed(2)}`);
} finally {
  await floor.stop();
  await up.stop();
  await rm(work, { recursive: true, force: true });
}
