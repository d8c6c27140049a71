// What the status page shows, gathered from the roll-ups, the budgets and the live cache.
// Everything comes from grouped reads of the roll-up tables and the store's size row, so
// opening the page costs a few small queries whatever the size of the cache: it never
// lists the store or its rows.
import type { Dashboard, HourSeries } from '../http/status-page.js';
import type { HourRow, Metadata } from '../store/metadata.js';
import type { UpstreamClient } from '../upstream/client.js';
import { gatherStatus, STORE } from './status.js';
import { imageOf, messageOf } from '../events/view.js';

const HOUR = 3_600_000;
/** As `regmirror status`: the last 24 h in whole hours, so the hour 24 h ago and the current one. */
const HOURS = 25;
/** Rows in each top-images table. */
const TOP = 10;

export interface DashboardSource {
  metadata: Metadata;
  upstreams: UpstreamClient[];
  now: number;
  downloads: () => Dashboard['downloads'];
  /** storage.maxSize in bytes, when set. */
  maxBytes?: number;
}

export async function gatherDashboard(src: DashboardSource): Promise<Dashboard> {
  const { metadata, now } = src;
  const since = now - 24 * HOUR;
  const [status, hours, lows, byPulls, byBytes] = await Promise.all([
    gatherStatus({ metadata, upstreams: src.upstreams, now }),
    metadata.rollupHours(since),
    metadata.subjectHours('budget_low', since),
    metadata.topSubjects('image_pulls', since, TOP),
    metadata.topSubjects('image_bytes', since, TOP),
  ]);
  const slots = hourSlots(now);
  const sum = (metric: string, upstream?: string) => series(slots, hours.filter((r) => r.key === metric && r.upstream !== STORE && (upstream === undefined || r.upstream === upstream)));
  const total = (metric: string) => sum(metric).reduce((a, b) => a + (b ?? 0), 0);
  const bytesCache = total('bytes_cache');
  const bytesUpstream = total('bytes_upstream');
  const floors = new Map(src.upstreams.map((u) => [u.name, u.config.budgetFloor]));
  return {
    generatedAt: status.generatedAt,
    hitRatio: { requests: status.totals.hitRatio, bytes: bytesCache + bytesUpstream > 0 ? bytesCache / (bytesCache + bytesUpstream) : null },
    totals: { ...status.totals, bytesFromCache: bytesCache, bytesFromUpstream: bytesUpstream, staleServed: total('stale_served'), upstreamFailed: total('upstream_failed') },
    upstreams: status.upstreams.map((u) => ({
      name: u.name,
      floor: floors.get(u.name) ?? 0,
      ...(u.budget ? { budget: { credential: u.budget.credential, remaining: u.budget.remaining, limit: u.budget.limit, refillsBy: u.budget.refillsBy } } : {}),
      ...(u.limitedUntil ? { limitedUntil: u.limitedUntil } : {}),
      pullsServed: u.last24h.pullsServed,
      upstreamPulls: u.last24h.upstreamPulls,
      pullsSaved: u.last24h.pullsSaved,
      staleServed: hours.filter((r) => r.upstream === u.name && r.key === 'stale_served').reduce((n, r) => n + r.value, 0),
      failed: hours.filter((r) => r.upstream === u.name && r.key === 'upstream_failed').reduce((n, r) => n + r.value, 0),
    })),
    store: { ...status.store, ...(src.maxBytes === undefined ? {} : { maxBytes: src.maxBytes }) },
    topByPulls: byPulls.map((r) => ({ upstream: r.upstream, repository: r.subject, value: r.value })),
    topByBytes: byBytes.map((r) => ({ upstream: r.upstream, repository: r.subject, value: r.value })),
    downloads: src.downloads(),
    events: status.events.recent.map((e) => ({ time: e.time, kind: e.kind, image: imageOf(e), message: messageOf(e) })),
    series: {
      hours: slots.map((h) => h / 1000),
      pullsServed: sum('pulls_served'),
      upstreamPulls: sum('manifest_get'),
      bytesCache: sum('bytes_cache'),
      bytesUpstream: sum('bytes_upstream'),
      staleServed: sum('stale_served'),
      upstreamFailed: sum('upstream_failed'),
      upstreamRequests: status.upstreams.map((u) => ({ name: u.name, values: upstreamRequests(slots, hours, u.name) })),
      budgets: budgetSeries(slots, lows, floors),
    },
  };
}

/** The start of each of the last HOURS hours, oldest first, the current one last. */
function hourSlots(now: number): number[] {
  const current = Math.floor(now / HOUR) * HOUR;
  return Array.from({ length: HOURS }, (_, i) => current - (HOURS - 1 - i) * HOUR);
}

/** Values per slot, summed over the rows given; an hour without a row is 0. */
function series(slots: number[], rows: HourRow[]): number[] {
  const at = new Map<number, number>();
  for (const r of rows) at.set(r.hour, (at.get(r.hour) ?? 0) + r.value);
  return slots.map((h) => at.get(h) ?? 0);
}

function upstreamRequests(slots: number[], hours: HourRow[], upstream: string): number[] {
  const kinds = new Set(['manifest_get', 'manifest_head', 'blob_get', 'blob_head', 'other']);
  return series(slots, hours.filter((r) => r.upstream === upstream && kinds.has(r.key)));
}

/** The lowest budget per hour and credential; an hour with no observation is a gap, not 0. */
function budgetSeries(slots: number[], lows: HourRow[], floors: Map<string, number>): HourSeries['budgets'] {
  const byCredential = new Map<string, HourRow[]>();
  for (const r of lows) {
    const k = `${r.upstream}\n${r.key}`;
    byCredential.set(k, [...(byCredential.get(k) ?? []), r]);
  }
  return [...byCredential].map(([k, rows]) => {
    const [upstream, credential] = k.split('\n');
    const at = new Map(rows.map((r) => [r.hour, r.value]));
    return { upstream, credential, floor: floors.get(upstream) ?? 0, values: slots.map((h) => at.get(h) ?? null) };
  });
}
