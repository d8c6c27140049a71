// The status page: the numbers as server-rendered tables (nothing needs JavaScript), and
// the plots drawn by a script served from here with uPlot, which regmirror serves itself
// so that a site without internet access gets the same page. Every string that reaches the
// HTML is escaped: repository names come from clients.
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { formatBytes } from '../bytes.js';

/** The last 24 h hour by hour, oldest first; `hours` are the hours' starts in Unix seconds. */
export interface HourSeries {
  hours: number[];
  pullsServed: number[];
  upstreamPulls: number[];
  bytesCache: number[];
  bytesUpstream: number[];
  staleServed: number[];
  upstreamFailed: number[];
  upstreamRequests: Array<{ name: string; values: number[] }>;
  /** The lowest budget an hour saw per credential; null where nothing was observed. */
  budgets: Array<{ upstream: string; credential: string; floor: number; values: Array<number | null> }>;
}

export interface TopImage {
  upstream: string;
  repository: string;
  value: number;
}

export interface Dashboard {
  generatedAt: string;
  hitRatio: { requests: number | null; bytes: number | null };
  totals: { pullsServed: number; upstreamPulls: number; pullsSaved: number; bytesFromCache: number; bytesFromUpstream: number; staleServed: number; upstreamFailed: number };
  upstreams: Array<{
    name: string;
    floor: number;
    budget?: { credential: string; remaining?: number; limit?: number; refillsBy?: string };
    limitedUntil?: string;
    pullsServed: number;
    upstreamPulls: number;
    pullsSaved: number;
    staleServed: number;
    failed: number;
  }>;
  store: { blobs: number; bytes: number; pinnedBytes: number; maxBytes?: number; last24h: { evicted: number; verifyFailed: number; passthrough: number } };
  topByPulls: TopImage[];
  topByBytes: TopImage[];
  downloads: Array<{ digest: string; upstream: string; repository: string; received: number; size?: number }>;
  /** Recent events, newest first. */
  events: Array<{ time: string; kind: string; image: string; message: string }>;
  series: HourSeries;
}

export const UI_PREFIX = '/_regmirror/ui';

/** Scripts and styles only from this origin; no inline code, no frames, no form posts elsewhere. */
export const PAGE_CSP = "default-src 'self'; img-src 'self' data:; frame-ancestors 'none'; base-uri 'none'; form-action 'none'";

/** The files the page loads, read once at start-up. */
export function uiAssets(): Map<string, { body: string; type: string }> {
  const require = createRequire(import.meta.url);
  const read = (path: string | URL) => readFileSync(path, 'utf8');
  return new Map([
    ['uplot.js', { body: read(require.resolve('uplot/dist/uPlot.iife.min.js')), type: 'text/javascript; charset=utf-8' }],
    ['uplot.css', { body: read(require.resolve('uplot/dist/uPlot.min.css')), type: 'text/css; charset=utf-8' }],
    ['page.js', { body: read(new URL('./status-page-script.js', import.meta.url)), type: 'text/javascript; charset=utf-8' }],
    ['page.css', { body: PAGE_STYLE, type: 'text/css; charset=utf-8' }],
  ]);
}

export function escapeHtml(s: string): string {
  return s.replace(/[&<>"']/g, (ch) => `&#${ch.charCodeAt(0)};`);
}

/** The whole page. */
export function renderPage(d: Dashboard): string {
  return `<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>regmirror status</title>
<link rel="stylesheet" href="${UI_PREFIX}/uplot.css">
<link rel="stylesheet" href="${UI_PREFIX}/page.css">
<script src="${UI_PREFIX}/uplot.js" defer></script>
<script src="${UI_PREFIX}/page.js" defer></script>
</head>
<body>
<header><h1>regmirror</h1><p>Last 24 hours, as of <time id="generated" datetime="${escapeHtml(d.generatedAt)}">${escapeHtml(d.generatedAt)}</time></p></header>
<main>
${summary(d)}
${upstreams(d)}
<section id="traffic"><h2>Traffic per hour</h2>
<noscript><p>The plots need JavaScript; every number on this page is in its tables without it.</p></noscript>
<div class="plots">
<figure><figcaption>Pulls served and upstream pulls</figcaption><div class="plot" id="plot-pulls"></div></figure>
<figure><figcaption>Bytes served from cache and from upstream</figcaption><div class="plot" id="plot-bytes"></div></figure>
<figure><figcaption>Upstream requests</figcaption><div class="plot" id="plot-requests"></div></figure>
<figure><figcaption>Stale serves and upstream failures</figcaption><div class="plot" id="plot-trouble"></div></figure>
</div></section>
${store(d)}
${topImages('Top images by pulls', 'top-pulls', d.topByPulls, String)}
${topImages('Top images by bytes served', 'top-bytes', d.topByBytes, formatBytes)}
${downloads(d)}
<section id="events"><h2>Recent events</h2>
${d.events.length === 0 ? '<p class="empty">No events recorded.</p>' : table(['Time', 'Kind', 'Image', 'What happened'], d.events.map((e) => [e.time, e.kind, e.image, e.message]))}
</section>
</main>
</body>
</html>
`;
}

/** The page for a caller the access rule refuses: no numbers. */
export function renderRefused(reason: string, signIn?: string): string {
  const link = signIn ? `<p><a href="${escapeHtml(signIn)}">Sign in</a> (any user name; a client token as the password, or an htpasswd user)</p>` : '';
  return `<!doctype html>\n<html lang="en"><head><meta charset="utf-8"><title>regmirror status: access refused</title></head>\n<body><h1>Access refused</h1><p id="refused">${escapeHtml(reason)}</p>${link}</body></html>\n`;
}

function summary(d: Dashboard): string {
  const t = d.totals;
  return `<section id="summary"><h2>Summary</h2>
${table(['', 'Last 24 h'], [
    ['Hit ratio by requests (pulls served from cache)', cell(ratio(d.hitRatio.requests), 'hit-requests')],
    ['Hit ratio by bytes', cell(ratio(d.hitRatio.bytes), 'hit-bytes')],
    ['Pulls served', cell(String(t.pullsServed), 'pulls-served')],
    ['Pulls saved', cell(String(t.pullsSaved), 'pulls-saved')],
    ['Upstream pulls', String(t.upstreamPulls)],
    ['Bytes from cache', formatBytes(t.bytesFromCache)],
    ['Bytes from upstream', formatBytes(t.bytesFromUpstream)],
    ['Stale serves', String(t.staleServed)],
    ['Upstream failures', String(t.upstreamFailed)],
  ], true)}
</section>`;
}

function upstreams(d: Dashboard): string {
  const rows = d.upstreams.map((u) => [
    u.name,
    u.budget?.credential ?? '-',
    u.budget?.remaining !== undefined ? cell(`${u.budget.remaining}${u.budget.limit !== undefined ? ` / ${u.budget.limit}` : ''}`, `budget-${u.name}`) : '-',
    String(u.floor),
    u.budget?.refillsBy ?? '-',
    u.limitedUntil ?? '-',
    String(u.pullsServed),
    String(u.upstreamPulls),
    String(u.pullsSaved),
    String(u.staleServed),
    String(u.failed),
  ]);
  return `<section id="upstreams"><h2>Upstreams and their budget</h2>
${table(['Upstream', 'Credential', 'Budget left', 'Floor', 'Refills by', 'Limited until', 'Pulls served', 'Upstream pulls', 'Saved', 'Stale serves', 'Failures'], rows)}
<figure><figcaption>Budget left (lowest per hour; dashed: the floor)</figcaption><div class="plot" id="plot-budget"></div></figure>
</section>`;
}

function store(d: Dashboard): string {
  const s = d.store;
  const rows: Array<Array<string | Cell>> = [
    ['Size', cell(formatBytes(s.bytes), 'store-bytes')],
    ['Limit (storage.maxSize)', s.maxBytes === undefined ? 'none' : formatBytes(s.maxBytes)],
    ['Pinned', formatBytes(s.pinnedBytes)],
    ['Blobs', String(s.blobs)],
    ['Evicted (24 h)', String(s.last24h.evicted)],
    ['Failed verification (24 h)', String(s.last24h.verifyFailed)],
    ['Streamed without caching (24 h)', String(s.last24h.passthrough)],
  ];
  const meter = s.maxBytes ? `<p><meter min="0" max="${s.maxBytes}" value="${s.bytes}" title="store size against its limit">${escapeHtml(formatBytes(s.bytes))}</meter> ${percent(s.bytes / s.maxBytes)} of the limit, ${percent(s.pinnedBytes / s.maxBytes)} pinned</p>` : '';
  return `<section id="store"><h2>Store</h2>\n${table(['', ''], rows, true)}\n${meter}</section>`;
}

function topImages(title: string, id: string, rows: TopImage[], format: (n: number) => string): string {
  const body = rows.length === 0 ? '<p class="empty">Nothing served yet.</p>' : table(['Upstream', 'Repository', title.includes('bytes') ? 'Bytes' : 'Pulls'], rows.map((r) => [r.upstream, r.repository, format(r.value)]));
  return `<section id="${id}"><h2>${escapeHtml(title)}</h2>\n${body}\n</section>`;
}

function downloads(d: Dashboard): string {
  const rows = d.downloads.map((x) => [
    x.upstream,
    x.repository,
    x.digest.slice(0, 19),
    x.size ? { html: `<progress max="${x.size}" value="${x.received}"></progress> ${escapeHtml(`${formatBytes(x.received)} of ${formatBytes(x.size)}`)}` } : formatBytes(x.received),
  ]);
  const body = rows.length === 0 ? '<p class="empty">None.</p>' : table(['Upstream', 'Repository', 'Digest', 'Progress'], rows);
  return `<section id="downloads"><h2>Downloads in flight</h2>\n${body}\n</section>`;
}

type Cell = string | { text: string; id: string } | { html: string };

function cell(text: string, id: string): Cell {
  return { text, id };
}

/** A table; every cell is escaped unless it is HTML this module built. */
function table(head: string[], rows: Cell[][], firstIsHeader = false): string {
  const td = (c: Cell, i: number) => {
    const tag = firstIsHeader && i === 0 ? 'th' : 'td';
    if (typeof c === 'string') return `<${tag}>${escapeHtml(c)}</${tag}>`;
    if ('html' in c) return `<${tag}>${c.html}</${tag}>`;
    return `<${tag} id="${escapeHtml(c.id)}">${escapeHtml(c.text)}</${tag}>`;
  };
  const thead = head.some((h) => h !== '') ? `<thead><tr>${head.map((h) => `<th>${escapeHtml(h)}</th>`).join('')}</tr></thead>` : '';
  return `<table>${thead}<tbody>${rows.map((r) => `<tr>${r.map(td).join('')}</tr>`).join('')}</tbody></table>`;
}

function ratio(r: number | null): string {
  return r === null ? '-' : percent(r);
}

function percent(r: number): string {
  return `${(r * 100).toFixed(1)}%`;
}


const PAGE_STYLE = `
body { font: 14px/1.4 system-ui, sans-serif; margin: 0 auto; max-width: 1200px; padding: 0 1rem 2rem; color: #1b1f24; }
header { display: flex; align-items: baseline; gap: 1rem; border-bottom: 1px solid #ccd; }
h1 { font-size: 1.4rem; } h2 { font-size: 1.1rem; margin-top: 1.6rem; }
table { border-collapse: collapse; margin: .4rem 0; }
th, td { text-align: left; padding: .2rem .7rem .2rem 0; border-bottom: 1px solid #eee; font-variant-numeric: tabular-nums; }
thead th { border-bottom: 1px solid #99a; }
.plots { display: grid; grid-template-columns: repeat(auto-fill, minmax(520px, 1fr)); gap: 1rem; }
figure { margin: .4rem 0; } figcaption { font-weight: 600; margin-bottom: .3rem; }
.plot { min-height: 200px; }
.empty { color: #667; }
meter { width: 20rem; }
`;
