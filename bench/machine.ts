// The machine and the processes on it, from /proc: how busy the CPUs are, how much CPU
// time given processes used, and a process's resident memory.
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';

// ---------------------------------------------------------------------------
// Machine

function cpuTimes(text: string): { idle: number; total: number } {
  const f = text.split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return { idle: f[3] + f[4], total: f.reduce((a, b) => a + b, 0) };
}

/** Ticks (USER_HZ) spent in user, nice and system mode by all CPUs: /proc/stat, interrupts left out. */
async function machineTicks(): Promise<number | undefined> {
  const text = await readFile('/proc/stat', 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const f = text.split('\n')[0].trim().split(/\s+/).slice(1).map(Number);
  return f[0] + f[1] + f[2];
}

/** utime + stime of a process, all threads, in USER_HZ ticks (the unit /proc/stat uses). */
async function processTicks(pid: number): Promise<number> {
  const raw = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  return raw ? Number(f[11]) + Number(f[12]) : 0;
}

/**
 * CPU ticks of a process and of its children, those running (one level down) and those it
 * has reaped (cutime + cstime): a PostgreSQL postmaster forks a backend per connection,
 * and a backend that ends during a phase still counts.
 */
async function treeTicks(pid: number): Promise<number> {
  const raw = await readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
  if (!raw) return 0;
  const f = raw.slice(raw.lastIndexOf(')') + 2).split(' ');
  const kids = (await readFile(`/proc/${pid}/task/${pid}/children`, 'utf8').catch(() => '')).trim().split(/\s+/).filter(Boolean).map(Number);
  const live = await Promise.all(kids.map(processTicks));
  return Number(f[11]) + Number(f[12]) + Number(f[13]) + Number(f[14]) + live.reduce((a, b) => a + b, 0);
}

export interface CpuAudit {
  /** CPU-seconds the machine spent in user and system mode. */
  machineS: number;
  /** ...of which the given processes (the bench, its servers) spent. */
  ownS: number;
  /** The rest: other processes on the machine (a noisy neighbour), plus some kernel work. */
  otherS: number;
  wallS: number;
}

/**
 * Starts accounting the machine's CPU time against `pids` (read at start and at stop), and
 * against `trees`, processes counted with their children.
 */
export async function cpuAudit(pids: number[], trees: number[] = []): Promise<{ stop(): Promise<CpuAudit | undefined> }> {
  const own = async () => (await Promise.all([...pids.map(processTicks), ...trees.map(treeTicks)])).reduce((a, b) => a + b, 0);
  const [m0, o0, t0] = [await machineTicks(), await own(), performance.now()];
  return {
    stop: async () => {
      const [m1, o1] = [await machineTicks(), await own()];
      if (m0 === undefined || m1 === undefined) return undefined;
      const HZ = 100; // USER_HZ on Linux
      const machineS = (m1 - m0) / HZ;
      const ownS = (o1 - o0) / HZ;
      return { machineS, ownS, otherS: Math.max(0, machineS - ownS), wallS: (performance.now() - t0) / 1000 };
    },
  };
}

/** Share (0..1) of all CPUs busy over `ms`, from /proc/stat; call it while the bench itself is idle. */
export async function machineBusy(ms: number): Promise<number | undefined> {
  const a = await readFile('/proc/stat', 'utf8').catch(() => undefined);
  await sleep(ms);
  const b = await readFile('/proc/stat', 'utf8').catch(() => undefined);
  if (!a || !b) return undefined;
  const [x, y] = [cpuTimes(a), cpuTimes(b)];
  return y.total > x.total ? 1 - (y.idle - x.idle) / (y.total - x.total) : undefined;
}

// ---------------------------------------------------------------------------
// Memory

/** VmRSS of a process now, MiB. */
export async function rssNow(pid: number): Promise<number> {
  return (await readStatus(pid))?.rss ?? NaN;
}

/** VmHWM of a process now (the most it has held since it started), MiB. */
export async function hwmNow(pid: number): Promise<number> {
  return (await readStatus(pid))?.hwm ?? NaN;
}

export interface RssSample {
  /** Largest VmRSS seen by the 100 ms sampler, MiB. */
  peakRssMiB: number;
  /** VmHWM (the kernel's own high-water mark since the process started) at stop(), MiB. */
  hwmMiB: number;
  /**
   * Largest RssAnon seen by the sampler, MiB: RSS without the file pages (the node binary's
   * ~45 MiB among them), which the kernel reclaims before a memory limit kills.
   */
  peakAnonMiB: number;
}

async function readStatus(pid: number): Promise<{ rss: number; hwm: number; anon: number } | undefined> {
  const text = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => undefined);
  if (!text) return undefined;
  const kb = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(text)?.[1] ?? NaN);
  return { rss: kb('VmRSS') / 1024, hwm: kb('VmHWM') / 1024, anon: kb('RssAnon') / 1024 };
}

/** Samples /proc/<pid>/status every 100 ms; lap() returns the peak since the last lap, stop() ends sampling. */
export function sampleRss(pid: number): { lap(): Promise<number>; anonPeak(): number; stop(): Promise<RssSample> } {
  let peak = 0;
  let lapPeak = 0;
  let anonPeak = 0;
  let busy = false;
  const sample = async () => {
    const s = await readStatus(pid);
    // A process killed but not yet reaped has a status without VmRSS.
    if (s && Number.isFinite(s.rss)) {
      peak = Math.max(peak, s.rss);
      lapPeak = Math.max(lapPeak, s.rss);
      if (Number.isFinite(s.anon)) anonPeak = Math.max(anonPeak, s.anon);
    }
    return s;
  };
  const timer = setInterval(() => {
    if (busy) return;
    busy = true;
    void sample().finally(() => (busy = false));
  }, 100);
  return {
    lap: async () => {
      await sample();
      const p = lapPeak;
      lapPeak = 0;
      return p;
    },
    anonPeak: () => anonPeak,
    stop: async () => {
      clearInterval(timer);
      const s = await sample();
      return { peakRssMiB: peak, hwmMiB: s?.hwm ?? NaN, peakAnonMiB: anonPeak };
    },
  };
}
