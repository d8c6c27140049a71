// Serving through upstream trouble: the pull-budget floor, 429 with Retry-After, an
// upstream that is down or hangs, negative caching, and the figures in status and
// /metrics. Time is an injected clock; nothing sleeps to pass time.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { after, afterEach, before, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, sha256, startMirror, type Mirror } from './helpers.js';

const TTL = 60_000;
const exec = promisify(execFile);

async function images(prefix: string, n: number): Promise<FixtureImage[]> {
  return Promise.all(Array.from({ length: n }, (_, i) => singleImage({ name: `library/${prefix}${i}`, tag: 'v1', seed: `${prefix}${i}` })));
}

describe('pull budget floor', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let clock = 5_000_000;
  let imgs: FixtureImage[];

  before(async () => {
    up = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 8, windowSeconds: 21600 } });
    imgs = await images('budget', 5);
    for (const img of imgs) up.addImage(img);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: TTL, budgetFloor: 3 }], defaultUpstream: 'docker.io', now: () => clock });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('at the floor, stale tags are served as cached and the upstream hears nothing', async () => {
    for (const img of imgs) assert.equal((await get(`${m.url}/v2/${img.name}/manifests/v1`)).status, 200);
    // 8 - 5 pulls = 3 left: at the floor.
    clock += TTL + 1;
    up.resetCounters();
    for (const img of imgs) {
      const r = await get(`${m.url}/v2/${img.name}/manifests/v1`);
      assert.equal(r.status, 200);
      assert.equal(r.headers['docker-content-digest'], img.root.digest);
      assert.match(r.headers.warning ?? '', /^110 /);
    }
    assert.equal(up.counters.manifestGet + up.counters.manifestHead, 0);
    assert.ok(m.logs.some((l) => l.includes('pull budget at its floor')), 'the reason is logged');
  });

  test('a miss still goes upstream under the floor', async () => {
    const img = await singleImage({ name: 'library/budget-miss', tag: 'v1', seed: 'budget-miss' });
    up.addImage(img);
    const r = await get(`${m.url}/v2/${img.name}/manifests/v1`);
    assert.equal(r.status, 200);
    assert.equal(up.counters.manifestGet, 1);
  });

  test('/metrics and regmirror status show the budget the upstream reported', async () => {
    const metrics = (await get(`${m.url}/metrics`)).body.toString();
    assert.match(metrics, /regmirror_upstream_ratelimit_remaining\{upstream="docker\.io"\} 2\b/);
    assert.match(metrics, /regmirror_upstream_ratelimit_limit\{upstream="docker\.io"\} 100\b/);
    assert.match(metrics, /regmirror_stale_served_total\{upstream="docker\.io",reason="budget"\} 5\b/);
    const cli = ['--import', 'tsx', new URL('../src/main.ts', import.meta.url).pathname, 'status', '--server', m.url];
    const json = JSON.parse((await exec(process.execPath, [...cli, '--json'])).stdout);
    const hub = json.upstreams.find((u: { name: string }) => u.name === 'docker.io');
    assert.equal(hub.budget.remaining, 2);
    assert.equal(hub.budget.limit, 100);
    assert.equal(hub.budget.windowSeconds, 21600);
    assert.equal(hub.last24h.upstreamPulls, 6);
    assert.equal(hub.last24h.pullsServed, 11);
    assert.equal(hub.last24h.pullsSaved, 5);
    const text = (await exec(process.execPath, cli)).stdout;
    assert.match(text, /docker\.io\s+2\/100/);
    assert.match(text, /pulls saved: 5/);
  });
});

describe('429 with Retry-After', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let clock = 9_000_000;
  let cached: FixtureImage;

  before(async () => {
    up = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 1, windowSeconds: 30 } });
    cached = (await images('limited', 1))[0];
    up.addImage(cached);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: 5_000 }], defaultUpstream: 'docker.io', now: () => clock });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('cached content is served, a miss gets TOOMANYREQUESTS with Retry-After, nothing goes upstream until then', async () => {
    assert.equal((await get(`${m.url}/v2/${cached.name}/manifests/v1`)).status, 200);
    const [layer] = [...cached.blobs.keys()];
    assert.equal((await get(`${m.url}/v2/${cached.name}/blobs/${layer}`)).status, 200);
    const fresh = await singleImage({ name: 'library/limited-new', tag: 'v1', seed: 'limited-new' });
    up.addImage(fresh);
    const first = await get(`${m.url}/v2/${fresh.name}/manifests/v1`);
    assert.equal(first.status, 429);
    assert.equal(errorCode(first), 'TOOMANYREQUESTS');
    assert.equal(first.headers['retry-after'], '30');

    up.resetCounters();
    clock += 10_000;
    const again = await get(`${m.url}/v2/${fresh.name}/manifests/v1`);
    assert.equal(again.status, 429);
    assert.equal(again.headers['retry-after'], '20');
    // Past the tag's TTL but still limited: served as cached, with the Warning.
    const hit = await get(`${m.url}/v2/${cached.name}/manifests/v1`);
    assert.equal(hit.status, 200);
    assert.match(hit.headers.warning ?? '', /^110 /);
    assert.equal(sha256((await get(`${m.url}/v2/${cached.name}/blobs/${layer}`)).body), layer);
    assert.equal(up.counters.total + up.counters.token, 0, 'nothing reaches the upstream while limited');

    clock += 21_000;
    up.setRateLimitRemaining(50);
    const after = await get(`${m.url}/v2/${fresh.name}/manifests/v1`);
    assert.equal(after.status, 200);
    assert.equal(up.counters.manifestGet, 1);
  });
});

describe('upstream down', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let clock = 20_000_000;
  let img: FixtureImage;

  before(async () => {
    up = await FakeUpstream.start();
    img = (await images('down', 1))[0];
    up.addImage(img);
    m = await startMirror({
      upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: TTL, headersTimeoutMs: 1000, failureBackoffMs: 10_000 }],
      defaultUpstream: 'docker.io',
      now: () => clock,
    });
    assert.equal((await get(`${m.url}/v2/${img.name}/manifests/v1`)).status, 200);
  });
  afterEach(() => {
    up.faults = {};
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('refused: a stale cached tag is served with a Warning; a miss fails with an OCI error', async () => {
    up.faults = { refuse: true };
    clock += TTL + 1;
    const r = await get(`${m.url}/v2/${img.name}/manifests/v1`);
    assert.equal(r.status, 200);
    assert.equal(r.headers['docker-content-digest'], img.root.digest);
    assert.equal(r.headers.warning, '110 regmirror "Response is Stale"');
    const miss = await get(`${m.url}/v2/library/not-cached/manifests/v1`);
    assert.equal(miss.status, 502);
    assert.equal(errorCode(miss), 'UNAVAILABLE');
    const metrics = (await get(`${m.url}/metrics`)).body.toString();
    assert.match(metrics, /regmirror_stale_served_total\{upstream="docker\.io",reason="upstream_error"\} [1-9]/);
  });

  test('hanging: a miss fails within the configured timeout, never hangs; then only one probe at a time asks the upstream', async () => {
    clock += 20_000; // past the backoff from the previous test
    up.faults = { hang: true };
    up.resetCounters();
    const started = Date.now();
    const miss = await get(`${m.url}/v2/library/not-cached-either/manifests/v1`, { timeoutMs: 10_000 });
    const took = Date.now() - started;
    assert.equal(miss.status, 502);
    assert.ok(took < 5000, `answered in ${took} ms`);
    const seen = up.requests.length;
    // Within the backoff one miss probes the upstream; the others are answered at once.
    const probe = get(`${m.url}/v2/library/probe/manifests/v1`, { timeoutMs: 10_000 });
    while (up.requests.length === seen) await new Promise((r) => setTimeout(r, 5));
    const quick = Date.now();
    const second = await get(`${m.url}/v2/library/third/manifests/v1`);
    assert.equal(second.status, 502);
    assert.ok(Date.now() - quick < 500);
    assert.equal(up.requests.length, seen + 1, 'only the probe reached the upstream');
    assert.equal((await probe).status, 502);
  });
});

describe('warm pulls and negative caching', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let clock = 30_000_000;

  before(async () => {
    up = await FakeUpstream.start();
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: TTL, negativeTtlMs: 30_000 }], defaultUpstream: 'docker.io', now: () => clock });
  });
  after(async () => {
    await m.stop();
    await up.close();
  });

  test('1000 warm pulls within the TTL cost no upstream request; after it, HEADs only', async () => {
    const img = (await images('warm', 1))[0];
    up.addImage(img);
    const url = `${m.url}/v2/${img.name}/manifests/v1`;
    await get(url);
    up.resetCounters();
    for (let i = 0; i < 1000; i++) assert.equal((await get(url)).status, 200);
    assert.equal(up.counters.total, 0);
    for (let round = 0; round < 3; round++) {
      clock += TTL + 1;
      assert.equal((await get(url)).headers['docker-content-digest'], img.root.digest);
    }
    assert.equal(up.counters.manifestHead, 3);
    assert.equal(up.counters.manifestGet, 0);
  });

  test('an upstream 404 is remembered for negativeTtl', async () => {
    up.addImage(await singleImage({ name: 'library/neg', tag: 'v1', seed: 'neg' }));
    up.resetCounters();
    const url = `${m.url}/v2/library/neg/manifests/missing`;
    assert.equal((await get(url)).status, 404);
    assert.equal((await get(url)).status, 404);
    assert.equal(up.counters.manifestGet, 1);
    clock += 31_000;
    assert.equal((await get(url)).status, 404);
    assert.equal(up.counters.manifestGet, 2);
  });
});
