// Summarises a V8 .cpuprofile (from `node --cpu-prof`): self and inclusive time of the top
// frames, and self time by area (regmirror's src/, each node_modules package, node
// internals, GC, idle), so a run can say where the server spends its time.
import { readFile } from 'node:fs/promises';
import { REPO_ROOT } from './peers.js';

interface CallFrame {
  functionName: string;
  url: string;
  lineNumber: number;
}

interface ProfileNode {
  id: number;
  callFrame: CallFrame;
  children?: number[];
}

interface CpuProfile {
  nodes: ProfileNode[];
  samples: number[];
  timeDeltas: number[];
  startTime: number;
  endTime: number;
}

export interface FrameTime {
  frame: string;
  selfMs: number;
  selfPct: number;
  totalMs: number;
  totalPct: number;
}

export interface ProfileSummary {
  wallMs: number;
  /** Sampled time excluding (idle). */
  busyMs: number;
  topSelf: FrameTime[];
  topTotal: FrameTime[];
  areas: Array<{ area: string; selfMs: number; pct: number }>;
}

function shortUrl(url: string): string {
  let u = url.replace(/^file:\/\//, '');
  if (u.startsWith(REPO_ROOT + '/')) u = u.slice(REPO_ROOT.length + 1);
  const nm = u.lastIndexOf('node_modules/');
  return nm >= 0 ? u.slice(nm + 'node_modules/'.length) : u;
}

function frameKey(cf: CallFrame): string {
  const name = cf.functionName || '(anonymous)';
  if (!cf.url) return name;
  return `${name} ${shortUrl(cf.url)}:${cf.lineNumber + 1}`;
}

function areaOf(cf: CallFrame): string {
  const u = cf.url;
  if (!u) return cf.functionName.startsWith('(') ? cf.functionName : '(native)';
  if (u.startsWith('node:')) return 'node internals';
  const nm = u.lastIndexOf('node_modules/');
  if (nm >= 0) {
    const parts = u.slice(nm + 'node_modules/'.length).split('/');
    return parts[0].startsWith('@') ? `${parts[0]}/${parts[1]}` : parts[0];
  }
  const short = shortUrl(u);
  const parts = short.split('/');
  if (parts[0] === 'src' || parts[0] === 'dist') return `regmirror ${parts.length > 2 ? parts[1] + '/' : parts[1]}`;
  return short;
}

/** A span of CLOCK_MONOTONIC time in µs, the clock both V8's profile and process.hrtime() use on Linux. */
export interface Window {
  fromUs: number;
  toUs: number;
}

/** Now, on the profile's clock. */
export function monotonicUs(): number {
  return Number(process.hrtime.bigint() / 1000n);
}

/** Summarises the samples taken inside `window` (the whole profile when absent). */
export async function summarizeProfile(path: string, window?: Window, top = 15): Promise<ProfileSummary> {
  const p = JSON.parse(await readFile(path, 'utf8')) as CpuProfile;
  const byId = new Map(p.nodes.map((n) => [n.id, n]));
  const parent = new Map<number, number>();
  for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);

  const self = new Map<string, number>();
  const total = new Map<string, number>();
  const areas = new Map<string, number>();
  let sampled = 0;
  let idle = 0;
  let at = p.startTime;
  for (let i = 0; i < p.samples.length; i++) {
    const us = p.timeDeltas[i] ?? 0;
    at += us;
    if (window && (at < window.fromUs || at > window.toUs)) continue;
    const node = byId.get(p.samples[i]);
    if (!node) continue;
    sampled += us;
    if (node.callFrame.functionName === '(idle)') {
      idle += us;
      continue;
    }
    const key = frameKey(node.callFrame);
    self.set(key, (self.get(key) ?? 0) + us);
    const area = areaOf(node.callFrame);
    areas.set(area, (areas.get(area) ?? 0) + us);
    // Inclusive: every distinct frame on the stack once.
    const seen = new Set<string>();
    for (let id: number | undefined = node.id; id !== undefined; id = parent.get(id)) {
      const k = frameKey(byId.get(id)!.callFrame);
      if (k === '(root)' || seen.has(k)) continue;
      seen.add(k);
      total.set(k, (total.get(k) ?? 0) + us);
    }
  }
  const busy = sampled - idle;
  const row = (frame: string): FrameTime => ({
    frame,
    selfMs: (self.get(frame) ?? 0) / 1000,
    selfPct: (100 * (self.get(frame) ?? 0)) / busy,
    totalMs: (total.get(frame) ?? 0) / 1000,
    totalPct: (100 * (total.get(frame) ?? 0)) / busy,
  });
  const sortedBy = (m: Map<string, number>) => [...m.entries()].sort((a, b) => b[1] - a[1]).map(([k]) => k);
  return {
    wallMs: window ? (window.toUs - window.fromUs) / 1000 : (p.endTime - p.startTime) / 1000,
    busyMs: busy / 1000,
    topSelf: sortedBy(self).slice(0, top).map(row),
    topTotal: sortedBy(total)
      .filter((k) => !/^\((program|garbage collector)\)$/.test(k))
      .slice(0, top)
      .map(row),
    areas: sortedBy(areas).map((a) => ({ area: a, selfMs: areas.get(a)! / 1000, pct: (100 * areas.get(a)!) / busy })),
  };
}

export function formatProfile(title: string, s: ProfileSummary): string {
  const pct = (x: number) => `${x.toFixed(1).padStart(5)} %`;
  const lines = [`${title}\n  ${(s.busyMs / 1000).toFixed(1)} s on the CPU of ${(s.wallMs / 1000).toFixed(1)} s wall (the rest idle, waiting on I/O)`, '  self time by area:'];
  for (const a of s.areas.slice(0, 12)) lines.push(`    ${pct(a.pct)}  ${a.area}`);
  lines.push('  top frames by self time:');
  for (const f of s.topSelf) lines.push(`    ${pct(f.selfPct)}  ${f.frame}`);
  lines.push('  top frames by inclusive time:');
  for (const f of s.topTotal) lines.push(`    ${pct(f.totalPct)}  ${f.frame}`);
  return lines.join('\n');
}
