// Proves the fake Docker Hub behaves as documented, so a failing proxy test can be blamed
// on the proxy and not on its upstream.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { fetch, type Headers, type RequestInit } from 'undici';
import { largeBlobImage, MediaTypes, multiPlatformImage, sha256, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream, type FakeUpstreamOptions } from '../fixtures/upstream.js';

const alpine = await multiPlatformImage({
  name: 'library/alpine',
  tag: 'latest',
  seed: 'fixture-upstream',
  platforms: [
    { os: 'linux', architecture: 'amd64' },
    { os: 'linux', architecture: 'arm64', variant: 'v8' },
  ],
});
// A name ending in a route keyword checks that the path parser takes the last keyword.
const small = largeBlobImage('team/sub/blobs', 'v1', 100_000, 'fixture-upstream-small');

function largestBlob(img: FixtureImage): [string, Buffer] {
  return [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
}
const [layerDigest, layer] = largestBlob(small);
const smallBlobUrl = (up: FakeUpstream) => `${up.url}/v2/${small.name}/blobs/${layerDigest}`;

async function start(t: TestContext, opts: FakeUpstreamOptions = {}): Promise<FakeUpstream> {
  const up = await FakeUpstream.start(opts);
  t.after(() => up.close());
  up.addImage(alpine);
  up.addImage(small);
  return up;
}

/** fetch that always drains the body, so no connection is left busy. */
async function call(url: string, init: RequestInit = {}) {
  const res = await fetch(url, init);
  const body = Buffer.from(await res.arrayBuffer());
  return { status: res.status, headers: res.headers, body, json: () => JSON.parse(body.toString()) };
}

async function token(up: FakeUpstream, names: string[], headers: Record<string, string> = {}) {
  const scopes = names.map((n) => `scope=repository:${n}:pull`).join('&');
  return call(`${up.url}/token?service=fake-registry&${scopes}`, { headers });
}

async function bearer(up: FakeUpstream, ...names: string[]): Promise<Record<string, string>> {
  const res = await token(up, names);
  assert.equal(res.status, 200);
  return { authorization: `Bearer ${res.json().token}` };
}

const basic = (user: string, pass: string) => ({ authorization: `Basic ${Buffer.from(`${user}:${pass}`).toString('base64')}` });

/** Reads a body until it ends or breaks; returns what arrived and whether it broke. */
async function readAll(url: string, init: RequestInit = {}): Promise<{ bytes: Buffer; broken: boolean; status: number }> {
  const res = await fetch(url, init);
  const chunks: Buffer[] = [];
  let broken = false;
  try {
    for await (const c of res.body!) chunks.push(Buffer.from(c));
  } catch {
    broken = true;
  }
  return { bytes: Buffer.concat(chunks), broken, status: res.status };
}

test('token auth: challenge, token, retry, like Docker Hub', async (t) => {
  const up = await start(t);
  const ping = await call(`${up.url}/v2/`);
  assert.equal(ping.status, 401);
  assert.equal(ping.headers.get('docker-distribution-api-version'), 'registry/2.0');
  assert.equal(ping.headers.get('www-authenticate'), `Bearer realm="${up.url}/token",service="fake-registry"`);

  const manifestUrl = `${up.url}/v2/library/alpine/manifests/latest`;
  const anon = await call(manifestUrl);
  assert.equal(anon.status, 401);
  assert.equal(
    anon.headers.get('www-authenticate'),
    `Bearer realm="${up.url}/token",service="fake-registry",scope="repository:library/alpine:pull"`,
  );
  assert.equal(anon.headers.get('content-type'), 'application/json');
  assert.equal(anon.json().errors[0].code, 'UNAUTHORIZED');

  const tok = await token(up, ['library/alpine']);
  const body = tok.json();
  assert.equal(body.token, body.access_token);
  assert.ok(body.token.length >= 32);
  assert.equal(body.expires_in, 300);
  assert.equal(new Date(body.issued_at).toISOString(), body.issued_at);

  const auth = { authorization: `Bearer ${body.token}` };
  assert.equal((await call(manifestUrl, { headers: auth })).status, 200);
  const authedPing = await call(`${up.url}/v2/`, { headers: auth });
  assert.equal(authedPing.status, 200);
  assert.deepEqual(authedPing.json(), {});

  // The 401 is in total but not in manifestGet; /token is in neither.
  assert.equal(up.counters.total, 4);
  assert.equal(up.counters.manifestGet, 1);
  assert.equal(up.counters.token, 1);
  assert.deepEqual(up.requests.map((r) => r.origin), ['registry', 'registry', 'token', 'registry', 'registry']);

  const counters = up.counters;
  up.resetCounters();
  assert.equal(counters.total, 0);
  assert.equal(counters.token, 0);
  assert.equal(up.requests.length, 0);
});

test('a token only opens the repositories in its scopes', async (t) => {
  const up = await start(t);
  const forAlpine = await bearer(up, 'library/alpine');
  const other = await call(`${up.url}/v2/${small.name}/manifests/v1`, { headers: forAlpine });
  assert.equal(other.status, 401);
  assert.match(other.headers.get('www-authenticate')!, /scope="repository:team\/sub\/blobs:pull",error="insufficient_scope"/);

  const both = await bearer(up, 'library/alpine', small.name);
  assert.equal((await call(`${up.url}/v2/${small.name}/manifests/v1`, { headers: both })).status, 200);
  assert.equal((await call(`${up.url}/v2/library/alpine/manifests/latest`, { headers: both })).status, 200);

  const pushOnly = await call(`${up.url}/token?service=fake-registry&scope=repository:library/alpine:push`);
  const headers = { authorization: `Bearer ${pushOnly.json().token}` };
  assert.equal((await call(`${up.url}/v2/library/alpine/manifests/latest`, { headers })).status, 401);
  assert.equal((await call(`${up.url}/v2/library/alpine/manifests/latest`, { headers: { authorization: 'Bearer made-up' } })).status, 401);
});

test('credentials: token server demands Basic; basic mode guards the registry itself', async (t) => {
  const credentials = { username: 'alice', password: 's3cret' };
  const up = await start(t, { credentials });
  assert.equal((await token(up, ['library/alpine'])).status, 401);
  assert.equal((await token(up, ['library/alpine'], basic('alice', 'wrong'))).status, 401);
  const ok = await token(up, ['library/alpine'], basic('alice', 's3cret'));
  assert.equal(ok.status, 200);
  const headers = { authorization: `Bearer ${ok.json().token}` };
  assert.equal((await call(`${up.url}/v2/library/alpine/manifests/latest`, { headers })).status, 200);

  const b = await start(t, { auth: 'basic', credentials });
  const ping = await call(`${b.url}/v2/`);
  assert.equal(ping.status, 401);
  assert.equal(ping.headers.get('www-authenticate'), 'Basic realm="fake-registry"');
  assert.equal((await call(`${b.url}/v2/`, { headers: basic('alice', 's3cret') })).status, 200);
  assert.equal((await call(`${b.url}/v2/library/alpine/manifests/latest`, { headers: basic('alice', 'nope') })).status, 401);
  assert.equal((await call(`${b.url}/v2/library/alpine/manifests/latest`, { headers: basic('alice', 's3cret') })).status, 200);
});

test('tokens expire on the injected clock', async (t) => {
  let clock = Date.UTC(2030, 0, 1);
  const up = await start(t, { tokenTtlSeconds: 60, now: () => clock });
  const tok = (await token(up, ['library/alpine'])).json();
  assert.equal(tok.expires_in, 60);
  assert.equal(tok.issued_at, '2030-01-01T00:00:00.000Z');
  const url = `${up.url}/v2/library/alpine/manifests/latest`;
  const headers = { authorization: `Bearer ${tok.token}` };
  clock += 59_000;
  assert.equal((await call(url, { headers })).status, 200);
  clock += 2_000;
  const expired = await call(url, { headers });
  assert.equal(expired.status, 401);
  assert.match(expired.headers.get('www-authenticate')!, /error="invalid_token"/);
  assert.equal((await call(url, { headers: await bearer(up, 'library/alpine') })).status, 200);
});

test('manifests: index by tag and digest, GET and HEAD headers, negotiation, unknowns', async (t) => {
  const up = await start(t, { auth: 'none' });
  const root = alpine.root;
  const expectHeaders = (h: Headers) => {
    assert.equal(h.get('content-type'), MediaTypes.ociIndex);
    assert.equal(h.get('content-length'), String(root.bytes.length));
    assert.equal(h.get('docker-content-digest'), root.digest);
    assert.equal(h.get('etag'), `"${root.digest}"`);
    assert.equal(h.get('docker-distribution-api-version'), 'registry/2.0');
  };
  const get = await call(`${up.url}/v2/library/alpine/manifests/latest`);
  assert.equal(get.status, 200);
  expectHeaders(get.headers);
  assert.deepEqual(get.body, root.bytes);

  const head = await call(`${up.url}/v2/library/alpine/manifests/latest`, { method: 'HEAD' });
  assert.equal(head.status, 200);
  expectHeaders(head.headers);
  assert.equal(head.body.length, 0);

  const byDigest = await call(`${up.url}/v2/library/alpine/manifests/${root.digest}`);
  assert.deepEqual(byDigest.body, root.bytes);
  const child = [...alpine.manifests.values()].find((m) => m.digest !== root.digest)!;
  const childRes = await call(`${up.url}/v2/library/alpine/manifests/${child.digest}`);
  assert.equal(childRes.headers.get('content-type'), MediaTypes.ociManifest);

  const url = `${up.url}/v2/library/alpine/manifests/latest`;
  const dockerOnly = await call(url, { headers: { accept: `${MediaTypes.dockerManifest}, ${MediaTypes.dockerList}` } });
  assert.equal(dockerOnly.status, 404);
  assert.equal(dockerOnly.json().errors[0].code, 'MANIFEST_UNKNOWN');
  assert.equal((await call(url, { headers: { accept: `${MediaTypes.ociManifest}, ${MediaTypes.ociIndex};q=0.9` } })).status, 200);
  assert.equal((await call(url, { headers: { accept: '*/*' } })).status, 200);

  assert.equal((await call(`${up.url}/v2/library/alpine/manifests/nope`)).json().errors[0].code, 'MANIFEST_UNKNOWN');
  const noRepo = await call(`${up.url}/v2/library/nothing/manifests/latest`);
  assert.equal(noRepo.status, 404);
  assert.equal(noRepo.json().errors[0].code, 'NAME_UNKNOWN');
  assert.equal((await call(`${up.url}/v2/${small.name}/manifests/v1`)).status, 200);
  assert.deepEqual([up.counters.manifestGet, up.counters.manifestHead], [8, 1]);

  const refs = await call(`${up.url}/v2/library/alpine/referrers/${root.digest}`);
  assert.equal(refs.headers.get('content-type'), MediaTypes.ociIndex);
  assert.deepEqual(refs.json(), { schemaVersion: 2, mediaType: MediaTypes.ociIndex, manifests: [] });
  assert.equal(up.counters.referrers, 1);
});

test('blobs: auth before 307, CDN gets no Authorization, HEAD and unknowns', async (t) => {
  const up = await start(t);
  assert.equal((await call(smallBlobUrl(up), { redirect: 'manual' })).status, 401);
  assert.equal(up.counters.cdnGet, 0);

  const auth = await bearer(up, small.name);
  const redirect = await call(smallBlobUrl(up), { headers: auth, redirect: 'manual' });
  assert.equal(redirect.status, 307);
  const location = redirect.headers.get('location')!;
  assert.ok(location.startsWith(`${up.cdnUrl}/blobs/sha256/${layerDigest.slice(7)}?`));
  assert.match(location, /X-Sig=[0-9a-f]{64}/);

  // undici's fetch drops Authorization when a redirect crosses origins.
  const followed = await call(smallBlobUrl(up), { headers: auth });
  assert.equal(followed.status, 200);
  assert.equal(sha256(followed.body), layerDigest);
  assert.equal(followed.headers.get('content-length'), String(layer.length));
  assert.deepEqual([up.counters.blobGet, up.counters.cdnGet, up.counters.cdnAuthorization], [2, 1, 0]);
  assert.equal(up.counters.blobGetByDigest.get(layerDigest), 2);
  assert.ok(up.requests.filter((r) => r.origin === 'cdn').every((r) => r.headers.authorization === undefined));

  const forged = await call(location.replace(/X-Sig=[0-9a-f]{4}/, 'X-Sig=0000'));
  assert.equal(forged.status, 403);

  const head = await call(smallBlobUrl(up), { method: 'HEAD', headers: auth, redirect: 'manual' });
  assert.equal(head.status, 200);
  assert.equal(head.headers.get('content-length'), String(layer.length));
  assert.equal(head.headers.get('docker-content-digest'), layerDigest);
  assert.equal(up.counters.blobHead, 1);

  // A blob is served only from a repository that holds it.
  const elsewhere = await call(`${up.url}/v2/library/alpine/blobs/${layerDigest}`, { headers: await bearer(up, 'library/alpine') });
  assert.equal(elsewhere.status, 404);
  assert.equal(elsewhere.json().errors[0].code, 'BLOB_UNKNOWN');
  const unknown = await call(`${up.url}/v2/${small.name}/blobs/${sha256('nothing')}`, { headers: auth });
  assert.equal(unknown.json().errors[0].code, 'BLOB_UNKNOWN');
});

test('Range on the CDN, and on the registry when there is no CDN', async (t) => {
  const up = await start(t, { auth: 'none' });
  const location = (await call(smallBlobUrl(up), { redirect: 'manual' })).headers.get('location')!;
  const mid = await call(location, { headers: { range: 'bytes=10-19' } });
  assert.equal(mid.status, 206);
  assert.equal(mid.headers.get('content-range'), `bytes 10-19/${layer.length}`);
  assert.equal(mid.headers.get('content-length'), '10');
  assert.deepEqual(mid.body, layer.subarray(10, 20));
  const tail = await call(location, { headers: { range: `bytes=${layer.length - 5}-` } });
  assert.deepEqual(tail.body, layer.subarray(-5));
  const beyond = await call(location, { headers: { range: `bytes=${layer.length}-` } });
  assert.equal(beyond.status, 416);
  assert.equal(beyond.headers.get('content-range'), `bytes */${layer.length}`);

  const direct = await start(t, { auth: 'none', cdn: false });
  const res = await call(smallBlobUrl(direct), { headers: { range: 'bytes=100-' } });
  assert.equal(res.status, 206);
  assert.equal(res.headers.get('docker-content-digest'), layerDigest);
  assert.deepEqual(res.body, layer.subarray(100));
  assert.deepEqual([direct.counters.blobGet, direct.counters.cdnGet], [1, 0]);
});

test('tags/list paginates lexically with a Link header', async (t) => {
  const up = await start(t, { auth: 'none' });
  for (const tag of ['b', 'a', 'd', 'c']) up.setTag('library/alpine', tag, alpine.root.digest);
  assert.throws(() => up.setTag('library/alpine', 'x', sha256('not there')));

  const pages: string[][] = [];
  let next: string | null = '/v2/library/alpine/tags/list?n=2';
  const links: string[] = [];
  while (next) {
    const res = await call(`${up.url}${next}`);
    pages.push(res.json().tags);
    const link = res.headers.get('link');
    if (link) links.push(link);
    next = link ? /^<([^>]+)>; rel="next"$/.exec(link)![1] : null;
  }
  assert.deepEqual(pages, [['a', 'b'], ['c', 'd'], ['latest']]);
  assert.equal(links[0], '</v2/library/alpine/tags/list?n=2&last=b>; rel="next"');

  up.removeTag('library/alpine', 'c');
  assert.deepEqual((await call(`${up.url}/v2/library/alpine/tags/list`)).json(), { name: 'library/alpine', tags: ['a', 'b', 'd', 'latest'] });
  assert.equal((await call(`${up.url}/v2/library/alpine/tags/list?n=0`)).status, 400);
  assert.equal(up.counters.tagsList, 5);
});

test('rate limit: GETs decrement, HEADs do not, 429 at zero', async (t) => {
  const up = await start(t, { auth: 'none', rateLimit: { limit: 100, remaining: 2 } });
  const url = `${up.url}/v2/library/alpine/manifests/latest`;
  const first = await call(url);
  assert.equal(first.headers.get('ratelimit-limit'), '100;w=21600');
  assert.equal(first.headers.get('ratelimit-remaining'), '1;w=21600');
  assert.equal(first.headers.get('docker-ratelimit-source'), '127.0.0.1');
  assert.equal((await call(url, { method: 'HEAD' })).headers.get('ratelimit-remaining'), '1;w=21600');
  assert.equal((await call(url)).headers.get('ratelimit-remaining'), '0;w=21600');
  const limited = await call(url);
  assert.equal(limited.status, 429);
  assert.equal(limited.json().errors[0].code, 'TOOMANYREQUESTS');
  assert.equal(limited.headers.get('retry-after'), '21600');
  assert.equal((await call(url, { method: 'HEAD' })).status, 200);
});

test('faults: latency, refuse, status', async (t) => {
  const up = await start(t, { auth: 'none' });
  const url = `${up.url}/v2/library/alpine/manifests/latest`;
  up.faults.latencyMs = 150;
  const t0 = performance.now();
  assert.equal((await call(url)).status, 200);
  assert.ok(performance.now() - t0 >= 140);

  up.faults = { refuse: true };
  await assert.rejects(fetch(url));

  up.faults = { status: 503 };
  const failed = await call(url);
  assert.equal(failed.status, 503);
  assert.equal(failed.json().errors[0].code, 'UNAVAILABLE');
  assert.equal((await token(up, ['library/alpine'])).status, 200); // /token is exempt
  assert.equal(up.counters.total, 3);
  assert.equal(up.counters.manifestGet, 1);
});

test('faults: cut, corrupt and throttled blob bodies', async (t) => {
  const up = await start(t, { auth: 'none' });
  up.faults = { cutBlobAfter: 1000 };
  const cut = await readAll(smallBlobUrl(up));
  assert.ok(cut.broken);
  assert.deepEqual(cut.bytes, layer.subarray(0, 1000));

  // Corruption applied on the registry-served path too, at the same offset as on the CDN.
  const direct = await start(t, { auth: 'none', cdn: false });
  for (const u of [up, direct]) {
    u.faults = { corruptBlob: true };
    const bad = await call(smallBlobUrl(u));
    assert.equal(bad.body.length, layer.length);
    const diff = [...bad.body.keys()].filter((i) => bad.body[i] !== layer[i]);
    assert.deepEqual(diff, [layer.length >> 1]);
  }

  up.faults = { blobBytesPerSecond: 400_000 };
  const t0 = performance.now();
  const slow = await call(smallBlobUrl(up));
  assert.ok(performance.now() - t0 >= 200, 'throttled to ~250 ms');
  assert.equal(sha256(slow.body), layerDigest);
});

test('faults: hang never sends headers; close() is prompt with requests open', async (t) => {
  const up = await FakeUpstream.start({ auth: 'none' });
  up.addImage(small);
  up.faults.hang = true;
  const url = `${up.url}/v2/${small.name}/manifests/v1`;
  await assert.rejects(fetch(url, { signal: AbortSignal.timeout(200) }), { name: 'TimeoutError' });

  const hung = fetch(url).then(
    () => 'answered',
    () => 'failed',
  );
  while (up.requests.length < 2) await sleep(5); // switch faults only once it is really hanging
  up.faults = { blobBytesPerSecond: 1000 }; // a 100 KB body that would take 100 s
  const streaming = readAll(smallBlobUrl(up));
  while (!up.requests.some((r) => r.origin === 'cdn')) await sleep(5);
  const t0 = performance.now();
  await up.close();
  assert.ok(performance.now() - t0 < 1000);
  assert.equal(await hung, 'failed');
  assert.ok((await streaming).broken);
});

test('50 MB blob: cut mid-way, resumed with Range, digest intact', async (t) => {
  const big = largeBlobImage('big/image', 'v1', 50 * 1024 * 1024, 'fixture-upstream-big');
  const [digest, blob] = largestBlob(big);
  const up = await FakeUpstream.start({ auth: 'none' });
  t.after(() => up.close());
  up.addImage(big);
  const url = `${up.url}/v2/big/image/blobs/${digest}`;
  const cutAt = 20 * 1024 * 1024 + 123;
  up.faults = { cutBlobAfter: cutAt };
  const first = await readAll(url);
  assert.ok(first.broken);
  assert.equal(first.bytes.length, cutAt);

  up.faults = {};
  const rest = await readAll(url, { headers: { range: `bytes=${cutAt}-` } });
  assert.equal(rest.status, 206);
  assert.equal(sha256(Buffer.concat([first.bytes, rest.bytes])), digest);
  assert.equal(blob.length, 50 * 1024 * 1024);
  assert.equal(up.counters.cdnGet, 2);
});
