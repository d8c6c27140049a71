// The status page: a mirror that has served some pulls shows its hit ratio, the upstream's
// budget, the store and the top images as server-rendered tables; headless Chromium draws
// the plots from the mirror alone (every request it makes goes through a recording proxy);
// with client auth an anonymous browser gets no numbers.
import assert from 'node:assert/strict';
import { readFile, mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { largeBlobImage, MediaTypes, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import type { Digest } from '../src/oci/digest.js';
import { renderPage, type Dashboard } from '../src/http/status-page.js';
import { MAX_SUBJECTS, OTHER_SUBJECT, PendingWrites } from '../src/store/pending-writes.js';
import { downloadsSettled, get, pull, startMirror, until, type Mirror } from './helpers.js';
import { haveChromium, runChromium, startRecordingProxy, type RecordingProxy } from './support/chromium.js';

const TOKEN = 'client-token-18';
// Under CI a missing browser fails the tests that need it; elsewhere they are skipped, saying why.
const browser = haveChromium || process.env.CI === 'true' ? {} : { skip: 'needs chromium: not installed' };

describe('status page', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let guarded: Mirror;
  let image: FixtureImage;
  let other: FixtureImage;
  let proxy: RecordingProxy;
  let shots: string;

  async function pullImage(img: FixtureImage): Promise<void> {
    const res = await get(`${m.url}/v2/${img.name}/manifests/${img.tag}`, { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(res.status, 200);
    for (const digest of img.blobs.keys()) {
      const blob = await pull(`${m.url}/v2/${img.name}/blobs/${digest}`);
      assert.ok(blob.status === 200 && blob.complete, digest);
    }
    await downloadsSettled(m);
  }

  before(async () => {
    up = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 100 } });
    image = await singleImage({ name: 'library/alpine', tag: '3', seed: 'alpine' });
    other = await singleImage({ name: 'team/tool', tag: 'v1', seed: 'tool' });
    up.addImage(image);
    up.addImage(other);
    const upstream = { name: 'docker.io', url: up.url, budgetFloor: 20 };
    m = await startMirror({ upstreams: [upstream], defaultUpstream: 'docker.io', storage: { maxSize: 1024 ** 3 } });
    guarded = await startMirror({ upstreams: [upstream], defaultUpstream: 'docker.io', auth: { tokens: [TOKEN] } });
    // alpine three times (one upstream pull, two from cache), the tool once.
    for (let i = 0; i < 3; i++) await pullImage(image);
    await pullImage(other);
    proxy = await startRecordingProxy(new URL(m.url).host);
    shots = await mkdtemp(join(tmpdir(), 'regmirror-shots-'));
  });
  after(async () => {
    await proxy?.close();
    await m?.stop();
    await guarded?.stop();
    await up?.close();
    if (shots) await rm(shots, { recursive: true, force: true });
  });

  test('18.1 GET / answers the numbers as HTML tables: hit ratios, the budget and its floor, the store, top images', async () => {
    for (const path of ['/', '/_regmirror/ui']) {
      const res = await get(`${m.url}${path}`);
      assert.equal(res.status, 200, path);
      assert.match(String(res.headers['content-type']), /^text\/html/);
      assert.match(String(res.headers['content-security-policy']), /default-src 'self'/);
      const html = res.body.toString();
      // 4 manifest GETs served, 2 fetched upstream (alpine once, the tool once): 2 of 4 from cache.
      assert.match(html, /<td id="hit-requests">50\.0%<\/td>/);
      const bytes = (img: FixtureImage) => [...img.blobs.values()].reduce((n, b) => n + b.length, 0);
      const byBytes = (2 * bytes(image)) / (3 * bytes(image) + bytes(other));
      assert.match(html, new RegExp(`<td id="hit-bytes">${(byBytes * 100).toFixed(1)}%</td>`));
      assert.match(html, /<td id="budget-docker.io">98 \/ 100<\/td><td>20<\/td>/, 'budget left and the floor');
      assert.match(html, /<section id="top-pulls">.*<td>library\/alpine<\/td><td>3<\/td>.*<td>team\/tool<\/td><td>1<\/td>/s);
      assert.match(html, /<th>Limit \(storage\.maxSize\)<\/th><td>1\.0 GiB<\/td>/);
      assert.match(html, /<meter min="0" max="1073741824" value="\d+"/, 'the store against its limit');
      assert.match(html, /<section id="events"><h2>Recent events<\/h2>\s*<p class="empty">No events recorded\.<\/p>/);
      assert.doesNotMatch(html, /<script>/, 'no inline script');
    }
  });

  test('18.1 headless Chromium draws the plots from the mirror alone and the DOM holds the numbers', browser, async () => {
    const shot = join(shots, 'status.png');
    await runChromium(`${m.url}/`, proxy.port, { screenshot: shot });
    const png = await readFile(shot);
    assert.equal(png.subarray(1, 4).toString(), 'PNG');
    assert.ok(png.length > 10_000, `a screenshot of a page, not a blank (${png.length} bytes)`);

    // An event, as the cache records one: the page lists it in its server-rendered table.
    m.events.record({ kind: 'digest_mismatch', upstream: 'docker.io', repository: 'library/alpine', digest: `sha256:${'d'.repeat(64)}`, message: 'blob from the upstream did not match its digest' });
    const visit = await runChromium(`${m.url}/`, proxy.port, { dumpDom: true });
    const dom = visit.output;
    assert.match(dom, /<section id="events"><h2>Recent events<\/h2>\s*<table>.*<td>\d{4}-\d\d-\d\dT[^<]+Z<\/td><td>digest_mismatch<\/td><td>docker\.io\/library\/alpine@sha256:dddddddddddd<\/td><td>blob from the upstream did not match its digest<\/td>/s);
    assert.match(dom, /<td id="hit-requests">50\.0%<\/td>/);
    assert.match(dom, /<td id="budget-docker.io">98 \/ 100<\/td>/);
    for (const id of ['plot-pulls', 'plot-budget']) {
      assert.match(dom, new RegExp(`<div class="plot" id="${id}" data-drawn="1"><div class="uplot[^"]*">.*?<canvas`, 's'), `${id} drawn`);
    }
    const origin = `http://${new URL(m.url).host}/`;
    const forPage = visit.requests.filter((r) => r.site === 'http://127.0.0.1');
    assert.ok(forPage.length >= 4, `the page's requests are in the net log (${JSON.stringify(visit.requests)})`);
    assert.deepEqual(forPage.filter((r) => !r.url.startsWith(origin)), [], 'the page asked nothing of any other server');
    for (const path of ['', '_regmirror/ui/uplot.js', '_regmirror/ui/page.js', '_regmirror/ui/data']) {
      assert.ok(forPage.some((r) => r.url === `${origin}${path}`), `${path} was requested for the page`);
      assert.ok(proxy.seen.includes(`GET ${origin}${path}`), `${path} reached the mirror through the proxy`);
    }
  });

  test('18.1 with client auth the page refuses an anonymous browser and shows no numbers', async () => {
    const res = await get(`${guarded.url}/`);
    assert.equal(res.status, 401);
    assert.doesNotMatch(res.body.toString(), /hit-requests/);
    assert.equal((await get(`${guarded.url}/_regmirror/ui/data`)).status, 401);
    assert.equal((await get(`${guarded.url}/`, { headers: { authorization: `Bearer ${TOKEN}` } })).status, 200);
    // A browser signs in through the challenge of the login link, then sends Basic with a token.
    const login = await get(`${guarded.url}/_regmirror/ui/login`);
    assert.equal(login.status, 401);
    assert.match(String(login.headers['www-authenticate']), /^Basic /);
    const basic = { authorization: `Basic ${Buffer.from(`any:${TOKEN}`).toString('base64')}` };
    assert.equal((await get(`${guarded.url}/_regmirror/ui/login`, { headers: basic })).status, 303);
    assert.equal((await get(`${guarded.url}/_regmirror/ui/`, { headers: basic })).status, 200);
    assert.equal((await get(`${guarded.url}/_regmirror/ui/data`, { headers: basic })).status, 200);

    if (browser.skip) return;
    const guardedProxy = await startRecordingProxy(new URL(guarded.url).host);
    try {
      const dom = (await runChromium(`${guarded.url}/`, guardedProxy.port, { dumpDom: true })).output;
      assert.match(dom, /Access refused/);
      assert.doesNotMatch(dom, /hit-requests|budget-|plot-/);
    } finally {
      await guardedProxy.close();
    }
  });

  test('18.1 a download in flight is listed with its progress, in the page and in its data', async () => {
    const big = largeBlobImage('team/big', 'v1', 4 * 1024 * 1024);
    up.addImage(big);
    const layer = [...big.blobs].find(([, b]) => b.length === 4 * 1024 * 1024)![0];
    up.faults.blobBytesPerSecond = 512 * 1024;
    const pulling = pull(`${m.url}/v2/team/big/blobs/${layer}`);
    try {
      await until('the download under way', () => (m.blobs.progress(layer as Digest) ?? 0) > 0);
      const html = (await get(`${m.url}/`)).body.toString();
      assert.match(html, new RegExp(`<section id="downloads">.*<td>team/big</td><td>${layer.slice(0, 19)}</td><td><progress max="${4 * 1024 * 1024}" value="\\d+"></progress>`, 's'));
      const data = JSON.parse((await get(`${m.url}/_regmirror/ui/data`)).body.toString()) as Dashboard;
      assert.equal(data.downloads.length, 1);
      assert.deepEqual({ ...data.downloads[0], received: 0 }, { digest: layer, upstream: 'docker.io', repository: 'team/big', received: 0, size: 4 * 1024 * 1024 });
      assert.ok(data.downloads[0].received > 0);
    } finally {
      up.faults.blobBytesPerSecond = undefined;
      assert.equal((await pulling).status, 200);
      await downloadsSettled(m);
    }
  });

  test('18.1 strings a client chose are escaped in the page', () => {
    const hostile = 'x"><script>alert(1)</script>';
    const empty = { hours: [], pullsServed: [], upstreamPulls: [], bytesCache: [], bytesUpstream: [], staleServed: [], upstreamFailed: [], upstreamRequests: [], budgets: [] };
    const d: Dashboard = {
      generatedAt: 'now',
      hitRatio: { requests: null, bytes: null },
      totals: { pullsServed: 0, upstreamPulls: 0, pullsSaved: 0, bytesFromCache: 0, bytesFromUpstream: 0, staleServed: 0, upstreamFailed: 0 },
      upstreams: [{ name: hostile, floor: 0, budget: { credential: hostile, remaining: 1 }, pullsServed: 0, upstreamPulls: 0, pullsSaved: 0, staleServed: 0, failed: 0 }],
      store: { blobs: 0, bytes: 0, pinnedBytes: 0, last24h: { evicted: 0, verifyFailed: 0, passthrough: 0 } },
      topByPulls: [{ upstream: 'docker.io', repository: hostile, value: 1 }],
      topByBytes: [],
      downloads: [{ digest: 'sha256:0', upstream: 'docker.io', repository: hostile, received: 1, size: 2 }],
      events: [],
      series: empty,
    };
    const html = renderPage(d);
    assert.doesNotMatch(html, /<script>alert/);
    assert.match(html, /x&#34;&#62;&#60;script&#62;alert\(1\)&#60;\/script&#62;/);
  });
});

describe('status page roll-ups', () => {
  test('18.1 a flush holds at most MAX_SUBJECTS repositories: the rest count as one, and a budget keeps its lowest', () => {
    const p = new PendingWrites();
    for (let i = 0; i < MAX_SUBJECTS + 10; i++) p.addSubject(0, 'docker.io', `r/${i}`, 'image_pulls', 1);
    p.addSubject(0, 'docker.io', 'anonymous', 'budget_low', 50);
    p.addSubject(0, 'docker.io', 'anonymous', 'budget_low', 70);
    const b = p.take()!;
    assert.equal(b.subjectRollups!.size, MAX_SUBJECTS + 2, 'the repositories, the rest as one, the budget');
    assert.equal(b.subjectRollups!.get('0\ndocker.io\nanonymous\nbudget_low'), 50);
    assert.equal(b.subjectRollups!.get(`0\ndocker.io\n${OTHER_SUBJECT}\nimage_pulls`), 10);
    assert.equal(b.subjectRollups!.get('0\ndocker.io\nr/0\nimage_pulls'), 1);
    // A failed write puts the batch back under what came since, merged by the same rules.
    p.addSubject(0, 'docker.io', 'r/0', 'image_pulls', 2);
    p.addSubject(0, 'docker.io', 'anonymous', 'budget_low', 60);
    p.restore(b);
    const again = p.take()!;
    assert.equal(again.subjectRollups!.get('0\ndocker.io\nr/0\nimage_pulls'), 3);
    assert.equal(again.subjectRollups!.get('0\ndocker.io\nanonymous\nbudget_low'), 50);
  });
});
