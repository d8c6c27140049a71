// The shapes of a round's results and the rows of the table printed from them (scenarios
// 1-4 here, scenario 5 from scale.ts).
import { mbps, type LoopResult, type Transfer } from './load.js';
import type { RssSample } from './machine.js';
import { stat, type Row } from './report.js';
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

export type Kind = 'regmirror' | 'distribution';

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

export function summaryRows(rounds: RoundResult[], s: TableSettings, largeLabel: string, haveNginx: boolean, scale?: ScaleInfo): Row[] {
  const { REPEAT, WARM_CLIENTS, BURST_CLIENTS, MANY_LAYERS, MANY_LAYER_BYTES, MANIFEST_CONNECTIONS, MANIFEST_MS } = s;
  const p = (k: Kind, f: (r: ProxyRound) => number) => stat(rounds.map((r) => (r.proxies[k] ? f(r.proxies[k]!) : undefined)));
  const both = (metric: string, f: (r: ProxyRound) => number, extra: Partial<Row> = {}): Row => ({
    metric,
    regmirror: p('regmirror', f),
    distribution: p('distribution', f),
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
    both('   peak RSS during the cold pull, MiB (VmRSS every 100 ms)', (r) => r.cold.peakRssMiB, { integer: true }),
    both('   peak RSS during the warm pulls, MiB', (r) => r.warmPeakRssMiB, { integer: true }),
    both('   VmHWM (kernel high-water mark) after 1+2, MiB', (r) => r.rss.hwmMiB, { integer: true }),
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
    ...(scale ? scaleRows({ regmirror: rounds.map((r) => r.proxies.regmirror?.scale), distribution: rounds.map((r) => r.proxies.distribution?.scale) }, scale) : []),
  ];
}

