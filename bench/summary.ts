// The shapes of a round's results and the rows of the table printed from them (scenarios
// 1-4 here, scenario 5 from scale.ts).
import { mbps, type LoopResult, type Transfer } from './load.js';
import type { RssSample } from './machine.js';
import { stat, type Column, type Row, type Stat, type TableLayout } from './report.js';
import { scaleRows, type ScaleResult } from './scale.js';
import type { ScaleInfo } from './scale-images.js';

/** The run's fixed shape, for the rows' labels. */
export interface TableSettings {
  REPEAT: number;
  WARM_CLIENTS: number;
  BURST_CLIENTS: number;
  MANY_LAYERS: number;
  MANY_LAYER_BYTES: number;
  MANIFEST_CONNECTIONS: number;
  MANIFEST_MS: number;
}

/** What a round measures: regmirror on SQLite metadata, regmirror on PostgreSQL metadata, distribution. */
export type Kind = 'regmirror' | 'regmirror-postgres' | 'distribution';

const COLUMNS: Record<Kind, Omit<Column, 'key'>> = {
  regmirror: { label: 'regmirror', short: 'rm' },
  'regmirror-postgres': { label: 'regmirror (postgres)', short: 'pg' },
  distribution: { label: 'distribution', short: 'dist' },
};

/**
 * The table's columns: the regmirror backends measured, then distribution (shown as
 * `distributionNote` when it was not run). With no PostgreSQL this is the table as it
 * always was: regmirror, distribution, rm÷dist.
 */
export function tableLayout(regmirrors: Kind[], distributionNote?: string): TableLayout {
  const keys: Kind[] = [...regmirrors, 'distribution'];
  const columns = keys.map((key) => ({ key, ...COLUMNS[key], ...(key === 'distribution' && distributionNote ? { missing: distributionNote } : {}) }));
  const has = (k: Kind) => keys.includes(k);
  const pairs: TableLayout['pairs'] = [];
  if (has('regmirror-postgres') && has('regmirror')) pairs.push({ a: 'regmirror-postgres', b: 'regmirror', label: 'pg÷sqlite' });
  pairs.push({ a: has('regmirror') ? 'regmirror' : 'regmirror-postgres', b: 'distribution' });
  return { columns, pairs };
}

export interface ManifestRun extends LoopResult {
  /** Registry requests (401s included) plus token requests the upstream saw during the measured part. */
  upstreamRequests: number;
}

export interface ProxyRound {
  cold: Transfer & { upstreamBlobGets: number; cdnGets: number; peakRssMiB: number };
  warm1: Transfer;
  warmN: Transfer;
  /** VmRSS after start-up, before any request, MiB. */
  idleRssMiB: number;
  /** VmRSS 12 s after the spawn, still before any request, MiB. */
  restRssMiB: number;
  /** Peak VmRSS during the warm pulls alone, MiB. */
  warmPeakRssMiB: number;
  rss: RssSample;
  burst: { ms: number; requests: number; failures: number; failureSamples: string[]; perDigestMin: number; perDigestMean: number; perDigestMax: number; blobGets: number; blobHeads: number; cdnGets: number };
  manifestTag: ManifestRun;
  manifestDigest: ManifestRun;
  /** CPU-seconds other processes on the machine used during each phase. */
  otherCpuS: Record<string, number | undefined>;
  /** Scenario 5, on a proxy process of its own. */
  scale?: ScaleResult;
}

export interface RoundResult {
  round: number;
  order: Kind[];
  direct: Transfer;
  fsWrite: Transfer;
  fs1: Transfer;
  fsN: Transfer;
  nginx1?: Transfer;
  nginxN?: Transfer;
  proxies: Partial<Record<Kind, ProxyRound>>;
}

/** `kinds`: the table's columns, in order (see tableLayout). */
export function summaryRows(rounds: RoundResult[], s: TableSettings, largeLabel: string, haveNginx: boolean, kinds: Kind[], scale?: ScaleInfo): Row[] {
  const { REPEAT, WARM_CLIENTS, BURST_CLIENTS, MANY_LAYERS, MANY_LAYER_BYTES, MANIFEST_CONNECTIONS, MANIFEST_MS } = s;
  const p = (k: Kind, f: (r: ProxyRound) => number) => stat(rounds.map((r) => (r.proxies[k] ? f(r.proxies[k]!) : undefined)));
  const both = (metric: string, f: (r: ProxyRound) => number, extra: Partial<Row> = {}): Row => ({
    metric,
    values: Object.fromEntries(kinds.map((k) => [k, p(k, f)])),
    ...extra,
  });
  const ref = (name: string, f: (r: RoundResult) => Transfer | undefined, g: (t: Transfer) => number) => ({
    name,
    stat: stat(rounds.map((r) => {
      const t = f(r);
      return t ? g(t) : undefined;
    })),
  });
  const nginx = (f: (r: RoundResult) => Transfer | undefined) => (haveNginx ? ref('nginx', f, mbps) : { name: 'nginx: skipped' });
  const sec = (t: Transfer) => t.ms / 1000;
  return [
    { metric: `1. cold pull of a ${largeLabel} incompressible layer (fresh cache, 1 client)`, section: true },
    both('   MB/s', (r) => mbps(r.cold), { ref: ref('direct', (r) => r.direct, mbps) }),
    both('', (r) => mbps(r.cold), { ref: ref('fs write+fsync', (r) => r.fsWrite, mbps), continuation: true }),
    both('   wall time, s', (r) => sec(r.cold), { ref: ref('direct', (r) => r.direct, sec) }),
    both('   upstream blob GETs', (r) => r.cold.upstreamBlobGets, { integer: true, ratios: false }),
    { metric: `2. warm pull of the same layer (1 client: median of ${REPEAT} pulls per round)`, section: true },
    both('   1 client, MB/s', (r) => mbps(r.warm1), { ref: nginx((r) => r.nginx1) }),
    both('', (r) => mbps(r.warm1), { ref: ref('fs read', (r) => r.fs1, mbps), continuation: true }),
    both(`   ${WARM_CLIENTS} clients, aggregate MB/s`, (r) => mbps(r.warmN), { ref: nginx((r) => r.nginxN) }),
    both('', (r) => mbps(r.warmN), { ref: ref(`fs read ×${WARM_CLIENTS}`, (r) => r.fsN, mbps), continuation: true }),
    both('   RSS after start-up, before any request, MiB', (r) => r.idleRssMiB, { integer: true }),
    both('   RSS at rest, 12 s after start-up, MiB', (r) => r.restRssMiB, { integer: true }),
    both('   peak RSS during the cold pull, MiB (VmRSS every 100 ms)', (r) => r.cold.peakRssMiB, { integer: true }),
    both('   peak RSS during the warm pulls, MiB', (r) => r.warmPeakRssMiB, { integer: true }),
    both('   VmHWM (kernel high-water mark) after 1+2, MiB', (r) => r.rss.hwmMiB, { integer: true }),
    both('   peak anonymous RSS during 1+2, MiB (RssAnon: no file pages)', (r) => r.rss.peakAnonMiB, { integer: true }),
    { metric: `3. coalescing: ${BURST_CLIENTS} clients × ${MANY_LAYERS} layers of ${MANY_LAYER_BYTES / 1024} KiB at once, cold`, section: true },
    both('   upstream GETs per digest, max (ideal 1)', (r) => r.burst.perDigestMax, { integer: true, ratios: false }),
    both('   upstream GETs per digest, mean', (r) => r.burst.perDigestMean, { ratios: false }),
    both('   upstream blob HEADs', (r) => r.burst.blobHeads, { integer: true, ratios: false }),
    both('   wall time, s', (r) => r.burst.ms / 1000),
    both('   failed or wrong responses', (r) => r.burst.failures, { integer: true, ratios: false }),
    { metric: `4. warm manifest GET, ${MANIFEST_CONNECTIONS} connections, ${MANIFEST_MS / 1000} s`, section: true },
    both('   by tag, req/s', (r) => r.manifestTag.rps),
    both('   by tag, p50 ms', (r) => r.manifestTag.p50),
    both('   by tag, p99 ms', (r) => r.manifestTag.p99),
    both('   by tag, upstream requests during run', (r) => r.manifestTag.upstreamRequests, { integer: true, ratios: false }),
    both('   by digest, req/s', (r) => r.manifestDigest.rps),
    both('   by digest, p50 ms', (r) => r.manifestDigest.p50),
    both('   by digest, p99 ms', (r) => r.manifestDigest.p99),
    both('   by digest, upstream requests during run', (r) => r.manifestDigest.upstreamRequests, { integer: true, ratios: false }),
    both('   errors (tag + digest)', (r) => r.manifestTag.errors + r.manifestDigest.errors, { integer: true, ratios: false }),
    ...(scale ? scaleRows(Object.fromEntries(kinds.map((k) => [k, rounds.map((r) => r.proxies[k]?.scale)])), scale) : []),
  ];
}


/** One figure issue 14 sets a target for, on both backends of the same run. */
export interface BackendFigure {
  metric: string;
  sqlite?: Stat;
  postgres?: Stat;
  /** PostgreSQL ÷ SQLite, of the medians. */
  ratio?: number;
  /** The same ratio in each round that measured both. */
  perRound: number[];
  target: string;
  /** Undefined when the run could not tell (a backend or the scenario not measured). */
  met?: boolean;
}

export interface BackendFigures {
  rounds: number;
  figures: BackendFigure[];
  notes: string[];
}

/** The targets are set for 2,000 images pulled by 32 clients, and warm manifests at 16 connections. */
const TARGET_SCALE_IMAGES = 2000;
const TARGET_MANIFEST_CONNECTIONS = 16;

/** regmirror on PostgreSQL against regmirror on SQLite: warm manifests by tag and scale cold images/s. */
export function backendFigures(rounds: RoundResult[], s: { manifestConnections: number; scale?: { images: number; clients: number } }): BackendFigures {
  const figure = (metric: string, f: (r: ProxyRound) => number | undefined, target: string, met: (ratio: number | undefined, pg: Stat | undefined) => boolean | undefined): BackendFigure => {
    const of = (k: Kind) => rounds.map((r) => (r.proxies[k] ? f(r.proxies[k]!) : undefined));
    const [sq, pg] = [of('regmirror'), of('regmirror-postgres')];
    const sqlite = stat(sq);
    const postgres = stat(pg);
    const ratio = sqlite && postgres && sqlite.median !== 0 ? postgres.median / sqlite.median : undefined;
    const perRound = sq.flatMap((a, i) => {
      const b = pg[i];
      return a !== undefined && b !== undefined && a !== 0 ? [b / a] : [];
    });
    return { metric, sqlite, postgres, ratio, perRound, target, met: met(ratio, postgres) };
  };
  const c = s.manifestConnections;
  const notes: string[] = [];
  if (c !== TARGET_MANIFEST_CONNECTIONS) notes.push(`the manifest targets are set at ${TARGET_MANIFEST_CONNECTIONS} connections; this run used ${c}`);
  if (s.scale && s.scale.images !== TARGET_SCALE_IMAGES) notes.push(`the scale target is set at ${TARGET_SCALE_IMAGES} images; this run pulled ${s.scale.images}`);
  if (!rounds.some((r) => r.proxies.regmirror)) notes.push('SQLite was not measured (--metadata both measures both): no ratios');
  const figures = [
    figure(`warm manifest GET by tag, ${c} connections, req/s`, (r) => r.manifestTag.rps, '≥ 0.90× SQLite', (x) => (x === undefined ? undefined : x >= 0.9)),
    figure(`warm manifest GET by tag, ${c} connections, p99 ms`, (r) => r.manifestTag.p99, 'PostgreSQL < 10 ms', (_, pg) => (pg === undefined ? undefined : pg.median < 10)),
  ];
  if (s.scale) {
    figures.push(figure(`scale, ${s.scale.images} images, ${s.scale.clients} clients: cold images/s`, (r) => r.scale?.cold.imagesPerS, '≥ 0.80× SQLite', (x) => (x === undefined ? undefined : x >= 0.8)));
  } else {
    notes.push('the scale scenario did not run (BENCH_SCALE_IMAGES=0): no cold images/s');
  }
  return { rounds: rounds.length, figures, notes };
}

export function formatBackendFigures(b: BackendFigures): string {
  const n = (x: number) => (x >= 100 ? x.toFixed(0) : x >= 10 ? x.toFixed(1) : x.toFixed(2));
  const lines = b.figures.map((f) => [
    `  ${f.metric}`,
    `sqlite ${f.sqlite ? n(f.sqlite.median) : '—'}`,
    `postgres ${f.postgres ? n(f.postgres.median) : '—'}`,
    `pg÷sqlite ${f.ratio === undefined ? '—' : `${f.ratio.toFixed(2)}×`}`,
    `target ${f.target}:`,
    f.met === undefined ? 'n/a' : f.met ? 'met' : 'NOT met',
  ]);
  const widths = lines[0].map((_, i) => Math.max(...lines.map((l) => l[i].length)));
  return [
    `regmirror metadata on PostgreSQL against SQLite, same run (issue 14's targets; medians of ${b.rounds} round(s)):`,
    ...lines.map((l) => l.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : i < 4 ? c.padStart(widths[i]) : c)).join('   ').trimEnd()),
    ...b.notes.map((x) => `  note: ${x}`),
  ].join('\n');
}
