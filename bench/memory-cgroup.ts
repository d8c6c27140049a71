// BENCH_MEMORY_LIMIT=128Mi: every regmirror child runs in a memory cgroup of its own with
// that limit, as in a pod with resources.limits.memory. It matters for more than the kill
// line: node reads the limit at start and sizes V8's heap from it (under 128 MiB the young
// generation stays at 2 MiB instead of growing to 32), and the kernel reclaims the page
// cache and the node binary's pages before it kills. RSS measured outside the limit is not
// what the pod would see. BENCH_NODE_LOCAL=1 takes the node-local DaemonSet's limit.
import { mkdir, readFile, rmdir, writeFile } from 'node:fs/promises';
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** What the kernel counted for one cgroup. */
export interface CgroupMemory {
  limitMiB: number;
  /** Highest usage the kernel charged: anonymous memory and page cache together. */
  peakMiB: number;
  /** Times an allocation met the limit and the kernel had to reclaim (v1: failcnt; v2: events max). */
  limitHits: number;
  oomKills: number;
}

/** `128Mi`, `128M`, `134217728`: a Kubernetes-style quantity in bytes; throws on anything else. */
export function parseQuantity(q: string, name = 'BENCH_MEMORY_LIMIT'): number {
  const m = /^(\d+)(Ki|Mi|Gi|K|M|G)?$/.exec(q.trim());
  if (!m) throw new Error(`${name}: "${q}" is not a memory quantity such as 128Mi`);
  const unit = { Ki: 1024, Mi: 1024 ** 2, Gi: 1024 ** 3, K: 1e3, M: 1e6, G: 1e9 }[m[2] ?? ''] ?? 1;
  return Number(m[1]) * unit;
}

type Flavour = { v: 1; root: string } | { v: 2; root: string };

/** The cgroup hierarchy that has the memory controller: v1's memory mount, or v2's root with memory delegated. */
async function findHierarchy(): Promise<Flavour> {
  if (existsSync('/sys/fs/cgroup/memory/memory.limit_in_bytes')) return { v: 1, root: '/sys/fs/cgroup/memory' };
  const controllers = await readFile('/sys/fs/cgroup/cgroup.controllers', 'utf8').catch(() => '');
  if (controllers.split(/\s+/).includes('memory')) {
    await writeFile('/sys/fs/cgroup/cgroup.subtree_control', '+memory').catch(() => undefined);
    return { v: 2, root: '/sys/fs/cgroup' };
  }
  throw new Error(`BENCH_MEMORY_LIMIT: no cgroup hierarchy with the memory controller (${RUN_WITHOUT})`);
}

const RUN_WITHOUT = 'needs root and /sys/fs/cgroup; BENCH_MEMORY_LIMIT=0 runs without a limit';
let made = 0;

/** A fresh cgroup with `limitBytes`; a child joins it by writing its pid to `procs` before it execs. */
export class MemoryCgroup {
  private constructor(
    readonly path: string,
    private readonly flavour: Flavour,
    private readonly limitBytes: number,
  ) {}

  static async create(limitBytes: number): Promise<MemoryCgroup> {
    const flavour = await findHierarchy();
    const path = join(flavour.root, `regmirror-bench-${process.pid}-${++made}`);
    try {
      await mkdir(path);
      await writeFile(join(path, flavour.v === 1 ? 'memory.limit_in_bytes' : 'memory.max'), String(limitBytes));
    } catch (err) {
      await rmdir(path).catch(() => undefined);
      throw new Error(`BENCH_MEMORY_LIMIT: cannot make ${path}: ${(err as Error).message} (${RUN_WITHOUT})`);
    }
    if (flavour.v === 2) await writeFile(join(path, 'memory.swap.max'), '0').catch(() => undefined);
    return new MemoryCgroup(path, flavour, limitBytes);
  }

  get procs(): string {
    return join(this.path, 'cgroup.procs');
  }

  /** `command args…` wrapped so that it starts inside this cgroup (same pid: the shell execs it). */
  wrap(command: string, args: string[]): [string, string[]] {
    return ['/bin/sh', ['-c', 'echo $$ > "$1" && shift && exec "$@"', 'sh', this.procs, command, ...args]];
  }

  async read(): Promise<CgroupMemory> {
    const get = (f: string) => readFile(join(this.path, f), 'utf8');
    const field = (text: string, key: string) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(text)?.[1] ?? 0);
    const mib = (b: number) => b / 1048576;
    if (this.flavour.v === 1) {
      const [peak, fail, oom] = await Promise.all([get('memory.max_usage_in_bytes'), get('memory.failcnt'), get('memory.oom_control')]);
      return { limitMiB: mib(this.limitBytes), peakMiB: mib(Number(peak)), limitHits: Number(fail), oomKills: field(oom, 'oom_kill') };
    }
    const [peak, events] = await Promise.all([get('memory.peak').catch(() => 'NaN'), get('memory.events')]);
    return { limitMiB: mib(this.limitBytes), peakMiB: mib(Number(peak)), limitHits: field(events, 'max'), oomKills: field(events, 'oom_kill') };
  }

  /** Removes the cgroup once its processes are gone. */
  async remove(): Promise<void> {
    await rmdir(this.path).catch(() => undefined);
  }
}

/** One line for the log: what the kernel saw of a child run under a limit. */
export function describeCgroup(m: CgroupMemory): string {
  return `memory limit ${m.limitMiB.toFixed(0)} MiB: peak charged ${m.peakMiB.toFixed(0)} MiB (page cache included), limit reached ${m.limitHits} times, OOM kills ${m.oomKills}`;
}
