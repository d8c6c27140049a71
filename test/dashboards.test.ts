// The Grafana dashboard and the Prometheus alerts under deploy/: they parse, their
// expressions are well formed, every metric they name is exported by a real mirror's
// /metrics after a few pulls, the metrics added for them move as the alerts read them,
// and the Kubernetes objects carry the same rules and scrape the Services.
import assert from 'node:assert/strict';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { parse as parseYaml } from 'yaml';
import { DEFAULTS } from '../src/config.js';
import { largeBlobImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { downloadsSettled, errorCode, get, startMirror, until, type Mirror } from './helpers.js';
import { bracketProblem, family, isDuration, metricNames, parseExposition } from './support/promql.js';
import { type K8sObject, type LabelSelector, canKustomize, docs, find, kustomize } from './support/kubernetes.js';

const ROOT = new URL('..', import.meta.url).pathname;
const DASHBOARD = join(ROOT, 'deploy/grafana/regmirror.json');
const RULES = join(ROOT, 'deploy/prometheus/rules.yaml');
const MONITORING = join(ROOT, 'deploy/kubernetes/monitoring');
const MB = 1024 * 1024;

interface Target { expr: string; refId: string; datasource?: { uid: string } }
interface Panel { id: number; type: string; title: string; gridPos: { x: number; y: number; w: number; h: number }; datasource?: { type: string; uid: string }; targets?: Target[]; panels?: Panel[] }
interface Variable { name: string; type: string; query: string | { query: string }; datasource?: { uid: string } }
interface Dashboard { uid: string; title: string; schemaVersion: number; panels: Panel[]; templating: { list: Variable[] } }
interface Rule { alert: string; expr: string; for?: string; labels?: Record<string, string>; annotations?: Record<string, string> }
interface RuleFile { groups: Array<{ name: string; rules: Rule[] }> }

async function dashboard(): Promise<Dashboard> {
  return JSON.parse(await readFile(DASHBOARD, 'utf8')) as Dashboard;
}

async function rules(): Promise<RuleFile> {
  return parseYaml(await readFile(RULES, 'utf8')) as RuleFile;
}

function panelsOf(d: Dashboard): Panel[] {
  return d.panels.flatMap((p) => [p, ...(p.panels ?? [])]);
}

/** Every PromQL expression of the dashboard: panel targets and the variables' queries. */
function dashboardExprs(d: Dashboard): string[] {
  const targets = panelsOf(d).flatMap((p) => (p.targets ?? []).map((t) => t.expr));
  const variables = d.templating.list.filter((v) => v.type === 'query').map((v) => (typeof v.query === 'string' ? v.query : v.query.query));
  return [...targets, ...variables];
}

function ruleExprs(r: RuleFile): string[] {
  return r.groups.flatMap((g) => g.rules.map((rule) => rule.expr));
}

test('18.2 the dashboard parses and imports as is: a datasource variable, job and instance variables, well-formed panels', async () => {
  const d = await dashboard();
  assert.ok(d.schemaVersion >= 36 && d.uid === 'regmirror' && d.title, 'a current schema and a stable uid');
  const vars = Object.fromEntries(d.templating.list.map((v) => [v.name, v]));
  assert.deepEqual({ type: vars.datasource?.type, query: vars.datasource?.query }, { type: 'datasource', query: 'prometheus' }, 'the datasource is chosen on import, not hard-wired');
  for (const name of ['job', 'instance']) assert.equal(vars[name]?.datasource?.uid, '${datasource}', `$${name} queries the chosen datasource`);

  const panels = panelsOf(d);
  assert.equal(new Set(panels.map((p) => p.id)).size, panels.length, 'panel ids are unique');
  const cells = new Map<string, string>();
  for (const p of panels) {
    const { x, y, w, h } = p.gridPos;
    assert.ok(x >= 0 && w > 0 && x + w <= 24 && h > 0, `${p.title}: inside the 24-column grid`);
    for (let i = x; i < x + w; i++) for (let j = y; j < y + h; j++) {
      const other = cells.get(`${i},${j}`);
      assert.ok(!other, `${p.title} overlaps ${other}`);
      cells.set(`${i},${j}`, p.title);
    }
    if (p.type === 'row') continue;
    assert.equal(p.datasource?.uid, '${datasource}', `${p.title}: on the chosen datasource`);
    assert.ok((p.targets ?? []).length > 0, `${p.title}: has queries`);
    for (const t of p.targets ?? []) {
      assert.equal(bracketProblem(t.expr), undefined, `${p.title}: ${t.expr}`);
      assert.match(t.expr, /job=~"\$job",instance=~"\$instance"/, `${p.title}: filtered by $job and $instance: ${t.expr}`);
      for (const v of t.expr.match(/\$(?!__)\w+/g) ?? []) assert.ok(vars[v.slice(1)], `${p.title}: ${v} is a variable of the dashboard`);
    }
  }
});

test('18.2 the dashboard has a panel for each figure an operator watches', async () => {
  const used = new Set(dashboardExprs(await dashboard()).flatMap(metricNames));
  const wanted = [
    'regmirror_http_requests_total', 'regmirror_cache_results_total', 'regmirror_blob_bytes_served_total',
    'regmirror_upstream_requests_total', 'regmirror_upstream_ratelimit_remaining', 'regmirror_upstream_ratelimit_limit',
    'regmirror_stale_served_total', 'regmirror_downloads_in_flight', 'regmirror_store_bytes', 'regmirror_store_pinned_bytes',
    'regmirror_evicted_blobs_total', 'regmirror_verify_failures_total', 'regmirror_metadata_unavailable_total',
    'regmirror_metadata_flush_failures_total', 'regmirror_parent_fallbacks_total', 'regmirror_blob_redirects_total',
    'regmirror_process_resident_memory_bytes', 'regmirror_process_cpu_seconds_total',
  ];
  assert.deepEqual(wanted.filter((n) => !used.has(n)), []);
});

test('18.2 the alert rules parse: named, well-formed, with a duration, a severity and what to do', async () => {
  const r = await rules();
  const all = r.groups.flatMap((g) => g.rules);
  assert.deepEqual(all.map((rule) => rule.alert), [
    'RegmirrorUpstreamBudgetAtFloor', 'RegmirrorUpstreamDown', 'RegmirrorErrorRatio', 'RegmirrorStoreOverHighWatermark',
    'RegmirrorEvictionStuck', 'RegmirrorVerifyFailures', 'RegmirrorMetadataUnavailable', 'RegmirrorUncaughtErrors',
  ]);
  for (const rule of all) {
    assert.equal(bracketProblem(rule.expr), undefined, `${rule.alert}: ${rule.expr}`);
    assert.match(rule.expr, /[<>]=?|==|!=/, `${rule.alert}: a comparison, or it would fire on every series`);
    assert.ok(isDuration(rule.for), `${rule.alert}: for ${rule.for}`);
    assert.ok(['warning', 'critical'].includes(rule.labels?.severity ?? ''), `${rule.alert}: severity`);
    assert.ok(rule.annotations?.summary && rule.annotations.description, `${rule.alert}: summary and description`);
    for (const text of Object.values(rule.annotations ?? {})) assert.equal(bracketProblem(text.replace(/[^{}]/g, '')), undefined, `${rule.alert}: template braces`);
  }
});

describe('18.2 a mirror after a few pulls', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let img: FixtureImage;

  before(async () => {
    up = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 3, windowSeconds: 21600 } });
    img = await singleImage({ name: 'library/dash', tag: 'v1', seed: 'dash' });
    up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, budgetFloor: 2 }], defaultUpstream: 'docker.io', storage: { maxSize: 1024 * MB } });
    const base = `${m.url}/v2/${img.name}`;
    for (let i = 0; i < 2; i++) {
      assert.equal((await get(`${base}/manifests/v1`)).status, 200);
      for (const digest of img.blobs.keys()) assert.equal((await get(`${base}/blobs/${digest}`)).status, 200);
      await downloadsSettled(m);
    }
    assert.equal((await get(`${base}/blobs/${[...img.blobs.keys()][0]}`, { method: 'HEAD' })).status, 200);
    assert.equal((await get(`${base}/manifests/missing`)).status, 404);
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  const scrape = async () => (await get(`${m.url}/metrics`)).body.toString();

  test('18.2 every metric the dashboard and the rules name is exported by /metrics', async () => {
    const exposition = parseExposition(await scrape());
    const names = [...new Set([...dashboardExprs(await dashboard()), ...ruleExprs(await rules())].flatMap(metricNames))].sort();
    assert.ok(names.length >= 25, names.join(' '));
    assert.deepEqual(names.filter((n) => !family(exposition, n)), [], 'named but not exported');
    // Labelled counters have no series until their event: none of these happened here.
    const eventOnly = new Set([
      'regmirror_stale_served_total', 'regmirror_parent_fallbacks_total', 'regmirror_upstream_egress_refused_total',
      'regmirror_metadata_unavailable_total', 'regmirror_uncaught_errors_total', 'regmirror_eviction_passes_total',
    ]);
    assert.deepEqual(names.filter((n) => !eventOnly.has(n) && !exposition.sampled.has(n)), [], 'exported but without a sample after pulls');
  });

  test('18.2 the budget and its floor are exported side by side, as the floor alert compares them', async () => {
    const text = await scrape();
    // 3 pulls left; the tag's GET and the missing tag's spent two (the second pull was a fresh hit): 1, under the floor of 2.
    assert.match(text, /^regmirror_upstream_ratelimit_remaining\{upstream="docker\.io"\} 1$/m);
    assert.match(text, /^regmirror_upstream_ratelimit_floor\{upstream="docker\.io"\} 2$/m);
    assert.match(text, /^regmirror_upstream_ratelimit_limit\{upstream="docker\.io"\} 100$/m);
  });

  test('18.2 the store limit and watermarks are exported in bytes, beside the store size', async () => {
    const text = await scrape();
    assert.match(text, new RegExp(`^regmirror_store_limit_bytes ${1024 * MB}$`, 'm'));
    const { highWatermark, lowWatermark } = DEFAULTS.storage;
    assert.match(text, new RegExp(`^regmirror_store_high_watermark_bytes ${Math.floor((1024 * MB * highWatermark) / 100)}$`, 'm'));
    assert.match(text, new RegExp(`^regmirror_store_low_watermark_bytes ${Math.floor((1024 * MB * lowWatermark) / 100)}$`, 'm'));
    const stored = Number(/^regmirror_store_bytes (\d+)$/m.exec(text)?.[1]);
    assert.equal(stored, [...img.blobs.values()].reduce((n, b) => n + b.length, 0) + img.root.bytes.length);
  });
});

test('18.2 regmirror_upstream_up is 0 while an upstream is held back after failing, 1 once a probe gets through', async () => {
  const up = await FakeUpstream.start();
  const img = await singleImage({ name: 'library/flaky', tag: 'v1', seed: 'flaky' });
  up.addImage(img);
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, failureBackoffMs: 60_000 }], defaultUpstream: 'docker.io' });
  const upValue = async () => /^regmirror_upstream_up\{upstream="docker\.io"\} (\d)$/m.exec((await get(`${m.url}/metrics`)).body.toString())?.[1];
  try {
    assert.equal(await upValue(), '1', 'up before anything failed');
    up.faults.refuse = true;
    assert.equal(errorCode(await get(`${m.url}/v2/${img.name}/manifests/v1`)), 'UNAVAILABLE');
    assert.equal(await upValue(), '0');
    up.faults.refuse = false;
    assert.equal((await get(`${m.url}/v2/${img.name}/manifests/v1`)).status, 200, 'the probe');
    assert.equal(await upValue(), '1');
  } finally {
    await m.stop();
    await up.close();
  }
});

test('18.2 an eviction pass that cannot get under the high watermark is counted; one that can is not', async () => {
  const up = await FakeUpstream.start();
  const image = (n: string, mb: number) => largeBlobImage(`library/${n}`, '1', mb * MB, `dash-${n}`);
  const [pinned, old1, old2, spare, held] = [image('pinned', 16), image('old1', 8), image('old2', 8), image('spare', 8), image('held', 16)];
  for (const img of [pinned, old1, old2, spare, held]) up.addImage(img);
  // 40 MiB: eviction starts over 36 MiB and goes down to 24 MiB.
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', storage: { maxSize: 40 * MB, highWatermark: 90, lowWatermark: 60 } });
  const scrape = async () => unlabelled((await get(`${m.url}/metrics`)).body.toString());
  const layerOf = (img: FixtureImage) => [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0][0];
  const settled = (img: FixtureImage) => until(`${img.name} read to the end`, () => [...img.blobs.keys()].every((d) => !m.blobs.inUse(d)));
  const pullWhole = async (img: FixtureImage) => {
    assert.equal((await get(`${m.url}/v2/${img.name}/manifests/1`)).status, 200);
    for (const digest of img.blobs.keys()) assert.equal((await get(`${m.url}/v2/${img.name}/blobs/${digest}`)).status, 200);
    await downloadsSettled(m);
    await settled(img);
  };
  const pin = (img: FixtureImage) => m.metadata.setBlobPins([...img.blobs.keys(), img.root.digest], []);
  try {
    await pullWhole(pinned);
    await pin(pinned);
    for (const img of [old1, old2]) await pullWhole(img);
    // 40 MiB with two older unpinned images: the pass removes them and ends under.
    await pullWhole(spare);
    await m.evictor!.run();
    let metrics = await scrape();
    assert.ok(!(await m.metadata.getBlob(layerOf(old1))) && !(await m.metadata.getBlob(layerOf(old2))), 'the older images were evicted');
    assert.ok(metrics.regmirror_store_bytes <= metrics.regmirror_store_high_watermark_bytes, `${metrics.regmirror_store_bytes} under ${metrics.regmirror_store_high_watermark_bytes}`);
    assert.equal(metrics.regmirror_eviction_stuck_total, 0);

    // Over it again, and all that is not pinned is a blob a client is reading: nothing can go.
    await pin(spare);
    assert.equal((await get(`${m.url}/v2/${held.name}/manifests/1`)).status, 200);
    const res = await request(`${m.url}/v2/${held.name}/blobs/${layerOf(held)}`);
    const body = res.body[Symbol.asyncIterator]();
    await body.next();
    await until('a pass left over the high watermark', async () => (await scrape()).regmirror_eviction_stuck_total >= 1);
    metrics = await scrape();
    assert.ok(metrics.regmirror_store_bytes > metrics.regmirror_store_high_watermark_bytes, 'the store alert\'s comparison holds');
    await until('the stuck pass recorded as an event', async () => (await m.metadata.events.list({ kinds: ['pinned_eviction_refused'] })).length > 0);

    // The reader done, eviction brings the store down.
    while (!(await body.next()).done);
    await settled(held);
    await m.evictor!.run();
    await until('the store under its high watermark', async () => {
      await m.evictor!.run();
      const now = await scrape();
      return now.regmirror_store_bytes <= now.regmirror_store_high_watermark_bytes;
    });
  } finally {
    await m.stop();
    await up.close();
  }
});

/** The unlabelled samples of a /metrics text, by name. */
function unlabelled(text: string): Record<string, number> {
  return Object.fromEntries([...text.matchAll(/^([a-z0-9_]+) (\S+)$/gm)].map((x) => [x[1], Number(x[2])]));
}

test('18.2 the PrometheusRule carries exactly the rules of rules.yaml', async () => {
  const rule = find(await docs(join(MONITORING, 'prometheusrule.yaml')), 'PrometheusRule');
  assert.equal(rule.apiVersion, 'monitoring.coreos.com/v1');
  assert.deepEqual(rule.spec, { groups: (await rules()).groups });
});

test('18.2 kubectl kustomize renders deploy/kubernetes/monitoring: a ServiceMonitor on the base\'s and the replicas\' Service, and the rules', async (t) => {
  if (!(await canKustomize(t))) return;
  const objects = await kustomize(MONITORING);
  assert.deepEqual(objects.map((o) => o.kind).sort(), ['PrometheusRule', 'ServiceMonitor']);
  for (const o of objects) assert.equal(o.metadata.namespace, 'regmirror', `${o.kind} ${o.metadata.name}`);
  assert.deepEqual(find(objects, 'PrometheusRule').spec, { groups: (await rules()).groups });

  const monitor = find(objects, 'ServiceMonitor').spec as { selector: LabelSelector; endpoints: Array<{ port: string; path: string; interval?: string }> };
  for (const dir of ['base', 'ha']) {
    const service = find(await kustomize(join(ROOT, 'deploy/kubernetes', dir)), 'Service') as K8sObject & { spec: { ports: Array<{ name: string }> } };
    const want = Object.entries(monitor.selector.matchLabels ?? {});
    assert.ok(want.length > 0 && want.every(([k, v]) => service.metadata.labels?.[k] === v), `the ServiceMonitor selects the ${dir} Service (labels ${JSON.stringify(service.metadata.labels)})`);
    for (const e of monitor.endpoints) {
      assert.ok(service.spec.ports.some((p) => p.name === e.port), `${dir}: the Service has the port ${e.port}`);
      assert.equal(e.path, '/metrics');
      assert.ok(e.interval === undefined || isDuration(e.interval));
    }
  }
});
