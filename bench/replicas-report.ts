// The replicas scenario's results: one round's shape, and the figures printed with their
// goals (medians of the rounds with min–max, goals judged on the medians).
import type { Transfer } from './load.js';
import { cell, stat, type Stat } from './report.js';
import type { BlobInfo } from './upstream-server.js';

export interface ReplicaSettings {
  replicas: number;
  burstClients: number;
  layers: number;
  layerBytes: number;
  coldBytes: number;
  warmClients: number;
  killBytes: number;
  /** Upstream pace (bytes/s) while the killed replica downloads. */
  killPace: number;
}

export interface BurstFigures {
  ms: number;
  failures: number;
  failureSamples: string[];
  perDigestMin: number;
  perDigestMean: number;
  perDigestMax: number;
}

export interface ReplicaRound {
  round: number;
  /** 16 cold clients: round-robin over the replicas, and all on one process on the local disk. */
  burst: { replicas: BurstFigures; single: BurstFigures };
  /** `ratio`: the non-holder's time to its last byte ÷ the holder's. */
  cold: { blob: BlobInfo; holder: Transfer; follower: Transfer; ratio: number; upstreamGets: number };
  /** `ratio`: aggregate MB/s over all replicas ÷ over one. */
  warm: { clients: number; replicas: Transfer; single: Transfer; ratio: number };
  kill: { blob: BlobInfo; recoveredMs: number; attempts: number; upstreamGets: number; holderCompleted: boolean; followerCompleted: boolean };
  /** VmRSS once started, and the max of VmRSS sampled every 100 ms and VmHWM, per replica. */
  rss: Array<{ pid: number; idleMiB: number; peakMiB: number }>;
  /** Each replica's peak VmRSS during each measured phase (a killed one's until it died), MiB. */
  peakRssMiBByPhase: Record<string, number[]>;
  otherCpuS: Record<string, number | undefined>;
}

export interface ReplicaFigure {
  metric: string;
  value?: Stat;
  /** The same metric on one process, where the scenario measures it. */
  single?: Stat;
  goal: string;
  /** Undefined: no goal, only reported. */
  met?: boolean;
}

const mbps = (t: Transfer) => t.bytes / 1e6 / (t.ms / 1000);
const label = (bytes: number) => (bytes % 2 ** 30 === 0 ? `${bytes / 2 ** 30} GiB` : `${bytes / 2 ** 20} MiB`);

export function replicaFigures(rounds: ReplicaRound[], s: ReplicaSettings): ReplicaFigure[] {
  const of = (f: (r: ReplicaRound) => number) => stat(rounds.map(f));
  const exactlyOne = (x: Stat | undefined) => x !== undefined && x.min === 1 && x.max === 1;
  const perBlob = (side: 'replicas' | 'single') => ({
    max: of((r) => r.burst[side].perDigestMax),
    min: of((r) => r.burst[side].perDigestMin),
  });
  const [rb, sb] = [perBlob('replicas'), perBlob('single')];
  const coldRatio = of((r) => r.cold.ratio);
  const recovered = of((r) => r.kill.recoveredMs / 1000);
  const rss = of((r) => Math.max(...r.rss.map((x) => x.peakMiB)));
  const warmRatio = of((r) => r.warm.ratio);
  return [
    { metric: `upstream GETs per blob, ${s.burstClients} cold clients, ${s.layers} × ${label(s.layerBytes)}: most`, value: rb.max, single: sb.max, goal: 'exactly 1', met: exactlyOne(rb.max) && exactlyOne(rb.min) && exactlyOne(sb.max) && exactlyOne(sb.min) },
    { metric: '  fewest', value: rb.min, single: sb.min, goal: '' },
    { metric: '  wall time, s', value: of((r) => r.burst.replicas.ms / 1000), single: of((r) => r.burst.single.ms / 1000), goal: '' },
    { metric: '  failed requests', value: of((r) => r.burst.replicas.failures), single: of((r) => r.burst.single.failures), goal: '0', met: rounds.every((r) => r.burst.replicas.failures === 0 && r.burst.single.failures === 0) },
    { metric: `cold ${label(s.coldBytes)} pull: non-holder ÷ holder, time to last byte`, value: coldRatio, goal: '≤ 1.3', met: coldRatio && coldRatio.median <= 1.3 },
    { metric: '  through the holder, s', value: of((r) => r.cold.holder.ms / 1000), goal: '' },
    { metric: '  through a non-holder, s', value: of((r) => r.cold.follower.ms / 1000), goal: '' },
    { metric: '  upstream GETs of the layer', value: of((r) => r.cold.upstreamGets), goal: '1', met: rounds.every((r) => r.cold.upstreamGets === 1) },
    { metric: `warm ${s.warmClients} clients: ${s.replicas} replicas ÷ 1, aggregate MB/s`, value: warmRatio, goal: 'reported (2 cores: overhead, not scaling)' },
    { metric: `  ${s.replicas} replicas round-robin, MB/s`, value: of((r) => mbps(r.warm.replicas)), goal: '' },
    { metric: '  1 replica, MB/s', value: of((r) => mbps(r.warm.single)), goal: '' },
    { metric: `kill -9 of a ${label(s.killBytes)} download's holder → next complete pull via another, s`, value: recovered, goal: '< 5 s', met: recovered && recovered.median < 5 },
    { metric: '  upstream GETs of that layer', value: of((r) => r.kill.upstreamGets), goal: '≤ 2' , met: rounds.every((r) => r.kill.upstreamGets <= 2) },
    { metric: `peak RSS of the largest of ${s.replicas} replicas, MiB`, value: rss, goal: '< 150 MB', met: rss && rss.median * 2 ** 20 < 150e6 },
    { metric: '  idle, once started (largest)', value: of((r) => Math.max(...r.rss.map((x) => x.idleMiB))), goal: '' },
  ];
}

export function formatReplicaFigures(figures: ReplicaFigure[], rounds: number, notes: string[]): string {
  const rows = [
    ['metric', 'replicas', '1 process, local disk', 'goal', ''],
    ...figures.map((f) => [f.metric, cell(f.value, Number.isInteger(f.value?.median) && Number.isInteger(f.value?.max)), f.single ? cell(f.single, Number.isInteger(f.single.median) && Number.isInteger(f.single.max)) : '', f.goal, f.met === undefined ? '' : f.met ? 'met' : 'NOT met']),
  ];
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  const line = (r: string[]) => r.map((c, i) => (i === 0 || i >= 3 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ').trimEnd();
  return [
    `replicas: 3 regmirror processes on one RGW bucket and one PostgreSQL, clients round-robin; medians of ${rounds} round(s) (min–max), goals judged on the medians`,
    line(rows[0]),
    widths.map((w) => '-'.repeat(w)).join('  '),
    ...rows.slice(1).map(line),
    ...notes.map((n) => `  note: ${n}`),
  ].join('\n');
}
