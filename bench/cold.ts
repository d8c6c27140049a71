// `npm run bench:cold`: cold pulls of one 1 GiB layer through fresh regmirror processes,
// one after another, with the CPU-seconds each process spent on it (from /proc): a quick
// look at the cold path alone, without the peers and scenarios of `npm run bench`.
//   BENCH_COLD_PULLS=5   pulls (each through a new process with an empty cache)
//   BENCH_COLD_SYNC=1    sync(1) before each pull, so no earlier write-back competes with it
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { directPull, mbps, pullBlob } from './load.js';
import { flushDisk, startRegmirror, startUpstream } from './peers.js';

const MiB = 1024 * 1024;
const PULLS = Number(process.env.BENCH_COLD_PULLS ?? 5);

/** User and system CPU time of a process (all threads), seconds. */
async function cpuSeconds(pid: number): Promise<{ user: number; sys: number }> {
  const raw = await readFile(`/proc/${pid}/stat`, 'utf8');
  const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  return { user: Number(f[11]) / 100, sys: Number(f[12]) / 100 };
}

function spent(a: { user: number; sys: number }, b: { user: number; sys: number }): string {
  return `${(b.user + b.sys - a.user - a.sys).toFixed(2)} (system ${(b.sys - a.sys).toFixed(2)})`;
}

const work = await mkdtemp(join(tmpdir(), 'regmirror-bench-cold-'));
const up = await startUpstream({ largeBytes: 1024 * MiB, largeFile: join(work, 'large.bin'), manyLayers: 1, manyLayerBytes: 1024 });
const { large } = up.info;
const results: number[] = [];
try {
  const direct = await directPull(up.info.url, large.name, large.digest, large.size);
  console.log(`direct pull: ${mbps(direct).toFixed(0)} MB/s`);
  for (let i = 0; i < PULLS; i++) {
    if (process.env.BENCH_COLD_SYNC === '1') flushDisk();
    const proxy = await startRegmirror({ upstreamUrl: up.info.url, logLevel: 'info', entry: 'tsx' });
    try {
      const [r0, u0, c0] = [await cpuSeconds(proxy.pid), await cpuSeconds(up.pid), process.cpuUsage()];
      const t = await pullBlob(`${proxy.url}/v2/${large.name}/blobs/${large.digest}`, large.size);
      const [r1, u1, c1] = [await cpuSeconds(proxy.pid), await cpuSeconds(up.pid), process.cpuUsage(c0)];
      results.push(mbps(t));
      console.log(
        `cold pull ${i + 1}: ${mbps(t).toFixed(0)} MB/s, ${(t.ms / 1000).toFixed(2)} s; CPU-s regmirror ${spent(r0, r1)}, ` +
          `upstream ${spent(u0, u1)}, client ${((c1.user + c1.system) / 1e6).toFixed(2)}`,
      );
      await proxy.waitCached(large.digest, large.size);
    } finally {
      await proxy.stop();
    }
  }
  const sorted = [...results].sort((a, b) => a - b);
  console.log(`median ${sorted[sorted.length >> 1].toFixed(0)} MB/s of ${PULLS} (min ${sorted[0].toFixed(0)}, max ${sorted[sorted.length - 1].toFixed(0)})`);
} finally {
  await up.stop();
  await rm(work, { recursive: true, force: true });
}
