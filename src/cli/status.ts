// `regmirror status`: per upstream the pull budget left and when it refills, pulls served
// against pulls spent upstream over the last 24 h, the hit ratio, store size and downloads
// in flight. Read from a running server (--server) or straight from the data dir.
import { resolve } from 'node:path';
import { request } from '../upstream/undici-core.js';
import { formatBytes } from '../bytes.js';
import { loadConfig, type Config } from '../config.js';
import { FLUSH_EVERY_MS, type Metadata, type RateLimitRow, type RollupMetric } from '../store/metadata.js';
import { noCacheYet, openMetadata } from './context.js';
import { eventView, formatEvents, type EventView } from '../events/view.js';
import type { UpstreamClient } from '../upstream/client.js';
import { configPath, serverOrigin, UsageError, type Values } from './args.js';

export interface UpstreamStatus {
  name: string;
  budget?: { limit?: number; remaining?: number; windowSeconds?: number; source?: string; observedAt: string; refillsBy?: string; credential: string };
  limitedUntil?: string;
  last24h: { pullsServed: number; upstreamPulls: number; upstreamHeads: number; pullsSaved: number; cacheHits: number; bytesFromCache: number; bytesFromUpstream: number };
}

export interface StatusReport {
  generatedAt: string;
  upstreams: UpstreamStatus[];
  totals: { pullsServed: number; upstreamPulls: number; pullsSaved: number; hitRatio: number | null };
  store: { blobs: number; bytes: number; pinnedBytes: number; last24h: { evicted: number; verifyFailed: number; passthrough: number } };
  downloadsInFlight?: number;
  /** The last few events, newest first, and the occurrences of each kind over 24 h. */
  events: { recent: EventView[]; last24h: Record<string, number> };
}

/** Events status shows; `regmirror events` lists more. */
const RECENT_EVENTS = 5;

const DAY = 24 * 3_600_000;
/** Roll-ups about the store as a whole are kept under this name. */
export const STORE = '(store)';

/** Builds the report from the database (and, in a server, the live upstream state). */
export async function gatherStatus(src: { metadata: Metadata; upstreams?: UpstreamClient[]; now: number; inFlight?: number }): Promise<StatusReport> {
  const rollups = await src.metadata.rollupsSince(src.now - DAY);
  const budgets = await src.metadata.rateLimits();
  const size = await src.metadata.storeSize();
  const recent = await src.metadata.events.list({ limit: RECENT_EVENTS });
  const eventCounts = await src.metadata.events.countByKind(src.now - DAY);
  const names = new Set<string>([...(src.upstreams ?? []).map((u) => u.name), ...rollups.map((r) => r.upstream).filter((u) => u !== STORE), ...budgets.map((b) => b.upstream)]);
  const store = (m: RollupMetric) => rollups.find((r) => r.upstream === STORE && r.metric === m)?.value ?? 0;
  const upstreams = [...names].sort().map((name) => upstreamStatus(name, rollups, budgets, src.upstreams?.find((u) => u.name === name)));
  const sum = (k: 'pullsServed' | 'upstreamPulls' | 'pullsSaved') => upstreams.reduce((n, u) => n + u.last24h[k], 0);
  const pullsServed = sum('pullsServed');
  return {
    generatedAt: new Date(src.now).toISOString(),
    upstreams,
    totals: { pullsServed, upstreamPulls: sum('upstreamPulls'), pullsSaved: sum('pullsSaved'), hitRatio: pullsServed ? sum('pullsSaved') / pullsServed : null },
    store: { ...size, last24h: { evicted: store('evicted'), verifyFailed: store('verify_failed'), passthrough: store('passthrough') } },
    ...(src.inFlight === undefined ? {} : { downloadsInFlight: src.inFlight }),
    events: { recent: recent.map(eventView), last24h: eventCounts },
  };
}

function upstreamStatus(name: string, rollups: Array<{ upstream: string; metric: RollupMetric; value: number }>, budgets: RateLimitRow[], live?: UpstreamClient): UpstreamStatus {
  const get = (m: RollupMetric) => rollups.find((r) => r.upstream === name && r.metric === m)?.value ?? 0;
  const pullsServed = get('pulls_served');
  const upstreamPulls = get('manifest_get');
  // The most recently observed budget across credentials is the one in force.
  const b = budgets.filter((r) => r.upstream === name).sort((x, y) => y.observedAt - x.observedAt)[0];
  const limitedUntil = live?.state.limitedUntil;
  return {
    name,
    ...(b
      ? {
          budget: {
            credential: b.credential,
            limit: b.limit,
            remaining: b.remaining,
            windowSeconds: b.windowSeconds,
            source: b.source,
            observedAt: new Date(b.observedAt).toISOString(),
            // Docker Hub's window slides; the budget is whole again at most one window later.
            ...(b.windowSeconds !== undefined ? { refillsBy: new Date(b.observedAt + b.windowSeconds * 1000).toISOString() } : {}),
          },
        }
      : {}),
    ...(limitedUntil ? { limitedUntil: new Date(limitedUntil).toISOString() } : {}),
    last24h: {
      pullsServed,
      upstreamPulls,
      upstreamHeads: get('manifest_head'),
      pullsSaved: Math.max(0, pullsServed - upstreamPulls),
      cacheHits: get('cache_hits'),
      bytesFromCache: get('bytes_cache'),
      bytesFromUpstream: get('bytes_upstream'),
    },
  };
}

/** The report as a person reads it. */
export function formatStatus(r: StatusReport): string {
  const lines = [`regmirror status at ${r.generatedAt}`, ''];
  const rows = [['UPSTREAM', 'BUDGET LEFT', 'REFILLS BY', 'PULLS SERVED (24h)', 'UPSTREAM PULLS', 'SAVED', 'LIMITED UNTIL']];
  for (const u of r.upstreams) {
    const b = u.budget;
    rows.push([
      u.name,
      b?.remaining !== undefined ? `${b.remaining}${b.limit !== undefined ? `/${b.limit}` : ''}` : '-',
      b?.refillsBy ?? '-',
      String(u.last24h.pullsServed),
      String(u.last24h.upstreamPulls),
      String(u.last24h.pullsSaved),
      u.limitedUntil ?? '-',
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  for (const row of rows) lines.push(row.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd());
  const ratio = r.totals.hitRatio === null ? '-' : `${(r.totals.hitRatio * 100).toFixed(1)}%`;
  lines.push('', `hit ratio (pulls served from cache, 24h): ${ratio}   pulls saved: ${r.totals.pullsSaved}`);
  const s = r.store;
  lines.push(`store: ${s.blobs} blobs, ${formatBytes(s.bytes)} (${formatBytes(s.pinnedBytes)} pinned)`);
  lines.push(`last 24h: ${s.last24h.evicted} blobs evicted, ${s.last24h.verifyFailed} failed verification, ${s.last24h.passthrough} streamed without caching (store full)`);
  if (r.downloadsInFlight !== undefined) lines.push(`downloads in flight: ${r.downloadsInFlight}`);
  const counts = Object.entries(r.events.last24h).map(([kind, n]) => `${kind} ${n}`);
  lines.push(`events (24h): ${counts.length ? counts.join(', ') : 'none'}`);
  if (r.events.recent.length) lines.push(`recent events (regmirror events lists more):`, formatEvents(r.events.recent).replace(/^/gm, '  '));
  return lines.join('\n');
}

/** Asks a running regmirror for its report; with client auth it needs a client token or the admin token. */
export async function fetchStatus(server: string, token = process.env.REGMIRROR_ADMIN_TOKEN): Promise<StatusReport> {
  const headers = token ? { authorization: `Bearer ${token}` } : {};
  const res = await request(new URL('/_regmirror/status', server), { headers, signal: AbortSignal.timeout(10_000) });
  if (res.statusCode !== 200) {
    await res.body.dump();
    throw new Error(`${server} answered ${res.statusCode} to its status request`);
  }
  return (await res.body.json()) as StatusReport;
}

/** `regmirror status`. */
export async function statusCommand(values: Values): Promise<number> {
  if (values.server !== undefined) {
    const server = serverOrigin(values.server, 'status');
    const report = await fetchStatus(server).catch((err: Error) => {
      throw new UsageError(`regmirror status: cannot reach ${server}: ${err.message}`);
    });
    console.log(values.json ? JSON.stringify(report, null, 2) : formatStatus(report));
    return 0;
  }
  const config = loadConfig(configPath(values), process.env, { secrets: 'storage' });
  if (noCacheYet(config)) {
    const empty = { generatedAt: new Date().toISOString(), upstreams: [], totals: { pullsServed: 0, upstreamPulls: 0, pullsSaved: 0, hitRatio: null }, store: { blobs: 0, bytes: 0, pinnedBytes: 0, last24h: { evicted: 0, verifyFailed: 0, passthrough: 0 } }, events: { recent: [], last24h: {} } };
    if (values.json) console.log(JSON.stringify(empty satisfies StatusReport, null, 2));
    (values.json ? console.error : console.log)(noCacheLine(config));
    return 0;
  }
  const metadata = await openMetadata(config);
  let report;
  try {
    report = await gatherStatus({ metadata, now: Date.now() });
  } finally {
    await metadata.close();
  }
  if (values.json) console.log(JSON.stringify(report, null, 2));
  else console.log(`${formatStatus(report)}\n${freshness(config)}`);
  return 0;
}

/** What the admin commands say of a data dir no mirror has used yet. */
export function noCacheLine(config: Config): string {
  return `no cache yet at ${resolve(config.dataDir)}: nothing has been pulled through a mirror using this data dir`;
}

/**
 * How old figures read from the database can be: a running server counts in memory and
 * writes every few seconds, so they trail it by up to that, or end where a stopped one did.
 */
function freshness(config: Config): string {
  const where = config.metadata.kind === 'sqlite' ? `the data dir ${resolve(config.dataDir)}` : 'the shared database';
  return `figures read from ${where}, as of the server's last write: a running server writes its counts every ${FLUSH_EVERY_MS / 1000} s (status --server HOST:PORT asks it for live ones)`;
}
