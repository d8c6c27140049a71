// Where an upstream may send the mirror: token realms and redirects on loopback, private
// or link-local addresses are refused unless the operator configured them. Every server
// here listens on a loopback address; 127.0.0.2 stands for "somewhere else on the inside".
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream, type FakeUpstreamOptions } from '../fixtures/upstream.js';
import { classifyAddress, EgressPolicy } from '../src/upstream/egress.js';
import { errorCode, get, sha256, startMirror, type Mirror } from './helpers.js';
import type { TestContext } from 'node:test';

async function setup(t: TestContext, opts: FakeUpstreamOptions, listed: { tokenRealms?: string[]; redirectHosts?: string[] } = {}): Promise<{ up: FakeUpstream; m: Mirror; img: FixtureImage }> {
  const img = await singleImage({ name: 'library/egress', tag: 'v1', seed: 'egress' });
  const up = await FakeUpstream.start(opts);
  up.addImage(img);
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url, ...listed }], defaultUpstream: 'docker.io' });
  t.after(async () => {
    await m.stop();
    await up.close();
  });
  return { up, m, img };
}

function refusedCount(metrics: string): number {
  return [...metrics.matchAll(/^regmirror_upstream_egress_refused_total\{[^}]*upstream="docker\.io"[^}]*\} (\d+)/gm)].reduce((n, x) => n + Number(x[1]), 0);
}

test('13.9 a token realm on a loopback address the operator never configured gets no request', async (t) => {
  const { up, m } = await setup(t, { tokenHost: '127.0.0.2' });
  const r = await get(`${m.url}/v2/library/egress/manifests/v1`);
  assert.equal(r.status, 502);
  assert.equal(errorCode(r), 'UNAVAILABLE');
  assert.match(r.body.toString(), /127\.0\.0\.2.*loopback.*tokenRealms/);
  assert.equal(up.requests.filter((x) => x.origin === 'token').length, 0, 'the realm received nothing');
  assert.equal(up.counters.manifestGet, 0);
  assert.equal(refusedCount((await get(`${m.url}/metrics`)).body.toString()), 1);
  // The refusal is the upstream's doing, not an outage: the next request is refused the same way, not backed off.
  const again = await get(`${m.url}/v2/library/egress/manifests/v1`);
  assert.match(again.body.toString(), /loopback/);
});

test('13.9 a token realm on another loopback address works once listed in tokenRealms', async (t) => {
  const { up, m, img } = await setup(t, { tokenHost: '127.0.0.2' }, { tokenRealms: ['127.0.0.2'] });
  const r = await get(`${m.url}/v2/library/egress/manifests/v1`);
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, img.root.bytes);
  assert.equal(up.counters.token, 1);
});

test('13.9 a redirect to a loopback address the operator never configured is not followed', async (t) => {
  const { up, m, img } = await setup(t, { cdnHost: '127.0.0.2' });
  const layer = [...img.blobs.keys()][0];
  const r = await get(`${m.url}/v2/library/egress/blobs/${layer}`);
  assert.equal(r.status, 502);
  assert.match(r.body.toString(), /127\.0\.0\.2.*loopback.*redirectHosts/);
  assert.equal(up.counters.blobGet, 1, 'the registry was asked');
  assert.equal(up.requests.filter((x) => x.origin === 'cdn').length, 0, 'the redirect target received nothing');
  assert.equal(refusedCount((await get(`${m.url}/metrics`)).body.toString()), 1);
});

test('13.9 a redirect to another loopback address is followed once listed in redirectHosts', async (t) => {
  const { up, m, img } = await setup(t, { cdnHost: '127.0.0.2' }, { redirectHosts: ['127.0.0.2'] });
  const layer = [...img.blobs.keys()][0];
  const r = await get(`${m.url}/v2/library/egress/blobs/${layer}`);
  assert.equal(r.status, 200);
  assert.equal(sha256(r.body), layer);
  assert.equal(up.counters.cdnGet, 1);
});

test('13.9 a name that resolves to a loopback address other than the upstream\'s is refused at connect time', async (t) => {
  // The registry is on 127.0.0.2; its redirects name `localhost`, which resolves to 127.0.0.1.
  const { up, m, img } = await setup(t, { registryHost: '127.0.0.2', cdnHost: '127.0.0.1', cdnHostname: 'localhost' });
  const layer = [...img.blobs.keys()][0];
  const r = await get(`${m.url}/v2/library/egress/blobs/${layer}`);
  assert.equal(r.status, 502);
  assert.match(r.body.toString(), /localhost.*loopback/);
  assert.equal(up.requests.filter((x) => x.origin === 'cdn').length, 0);
});

test('13.9 a name listed in redirectHosts may resolve to a loopback address', async (t) => {
  const { up, m, img } = await setup(t, { registryHost: '127.0.0.2', cdnHost: '127.0.0.1', cdnHostname: 'localhost' }, { redirectHosts: ['localhost'] });
  const layer = [...img.blobs.keys()][0];
  const r = await get(`${m.url}/v2/library/egress/blobs/${layer}`);
  assert.equal(r.status, 200);
  assert.equal(sha256(r.body), layer);
  assert.equal(up.counters.cdnGet, 1);
});

test('13.9 the address classifier: link-local is never allowed, loopback and private only for the upstream\'s own address or listed hosts', () => {
  for (const [ip, kind] of [
    ['169.254.169.254', 'link-local'],
    ['169.254.0.1', 'link-local'],
    ['fe80::1', 'link-local'],
    ['febf::1', 'link-local'],
    ['::ffff:169.254.169.254', 'link-local'],
    ['127.0.0.1', 'loopback'],
    ['127.255.0.9', 'loopback'],
    ['::1', 'loopback'],
    ['0.0.0.0', 'loopback'],
    ['::', 'loopback'],
    ['::ffff:127.0.0.1', 'loopback'],
    ['10.1.2.3', 'private'],
    ['172.16.0.1', 'private'],
    ['172.31.255.255', 'private'],
    ['192.168.1.1', 'private'],
    ['100.64.0.1', 'private'],
    ['fd00::1', 'private'],
    ['172.32.0.1', 'public'],
    ['8.8.8.8', 'public'],
    ['2606:4700::1111', 'public'],
  ] as const) {
    assert.equal(classifyAddress(ip), kind, ip);
  }
  const policy = new EgressPolicy({ upstreamUrl: 'http://10.0.0.5:5000', listed: ['auth.internal', '169.254.169.254'] });
  assert.equal(policy.refusal('10.0.0.5', '10.0.0.5'), undefined, 'the upstream\'s own address');
  assert.equal(policy.refusal('cdn.example.com', '104.16.0.1'), undefined, 'public addresses');
  assert.equal(policy.refusal('auth.internal', '10.9.9.9'), undefined, 'a listed host on a private address');
  assert.match(policy.refusal('storage.internal', '10.9.9.9')?.message ?? '', /private/);
  assert.match(policy.refusal('metadata', '169.254.169.254')?.message ?? '', /link-local/);
  assert.match(policy.refusal('169.254.169.254', '169.254.169.254')?.message ?? '', /link-local/, 'link-local even when listed');
  assert.match(policy.refusal('10.0.0.5', 'fe80::1')?.message ?? '', /link-local/);
});
