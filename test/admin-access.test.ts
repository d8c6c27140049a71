// Who may use the admin endpoints: with client auth configured, status and prewarm need a
// client credential or the admin token (prewarm the admin token when one is set); the
// probes and /metrics stay open and say nothing secret; a prewarm through the server obeys
// allow/deny and is bounded in body size, image count and images resolved at once.
import assert from 'node:assert/strict';
import { after, before, beforeEach, describe, test } from 'node:test';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, startMirror, type Mirror } from './helpers.js';

const CLIENT = 'client-token-1';
const ADMIN = 'admin-token-1';
const USER = 'robot-user-xyz';
const PASSWORD = 'upstream-pass-xyz';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

async function post(url: string, body: string, headers: Record<string, string> = {}): Promise<{ status: number; text: string }> {
  const res = await fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body, signal: AbortSignal.timeout(20_000) });
  return { status: res.status, text: await res.text() };
}

describe('admin access', () => {
  let up: FakeUpstream;
  let guarded: Mirror;
  let clientsOnly: Mirror;

  before(async () => {
    up = await FakeUpstream.start({ credentials: { username: USER, password: PASSWORD } });
    for (const name of ['library/alpine', 'library/evil']) up.addImage(await singleImage({ name, tag: 'v1', seed: name }));
    const upstream = { name: 'docker.io', url: up.url, credentials: { username: USER, password: PASSWORD }, deny: ['library/evil'] };
    guarded = await startMirror({ upstreams: [upstream], defaultUpstream: 'docker.io', auth: { tokens: [CLIENT] }, adminToken: ADMIN });
    clientsOnly = await startMirror({ upstreams: [upstream], defaultUpstream: 'docker.io', auth: { tokens: [CLIENT] } });
  });
  after(async () => {
    await guarded.stop();
    await clientsOnly.stop();
    await up.close();
  });
  beforeEach(() => up.resetCounters());

  test('13.3 with client auth, status needs a client credential or the admin token', async () => {
    for (const m of [guarded, clientsOnly]) {
      const anonymous = await get(`${m.url}/_regmirror/status`);
      assert.equal(anonymous.status, 401);
      assert.ok(!anonymous.body.toString().includes(USER));
      assert.equal((await get(`${m.url}/_regmirror/status`, { headers: bearer(CLIENT) })).status, 200);
    }
    assert.equal((await get(`${guarded.url}/_regmirror/status`, { headers: bearer(ADMIN) })).status, 200);
  });

  test('13.3 prewarm needs the admin token when one is set, else a client credential', async () => {
    const body = JSON.stringify({ images: ['library/alpine:v1'] });
    assert.equal((await post(`${guarded.url}/_regmirror/prewarm`, body)).status, 401);
    assert.equal((await post(`${guarded.url}/_regmirror/prewarm`, body, bearer(CLIENT))).status, 401, 'a client token is not the admin token');
    assert.equal((await post(`${guarded.url}/_regmirror/prewarm`, body, bearer(ADMIN))).status, 200);
    assert.equal((await post(`${clientsOnly.url}/_regmirror/prewarm`, body)).status, 401);
    assert.equal((await post(`${clientsOnly.url}/_regmirror/prewarm`, body, bearer(CLIENT))).status, 200);
  });

  test('13.3 /metrics, /healthz and /readyz stay open and name no credential or path', async () => {
    assert.equal((await get(`${guarded.url}/v2/library/alpine/manifests/v1`, { headers: bearer(CLIENT) })).status, 200);
    for (const path of ['/metrics', '/healthz', '/readyz']) {
      const r = await get(guarded.url + path);
      assert.equal(r.status, 200, path);
      const text = r.body.toString();
      for (const secret of [USER, PASSWORD, CLIENT, ADMIN, guarded.dataDir]) assert.ok(!text.includes(secret), `${path} shows ${secret}`);
    }
  });

  test('13.3 a prewarm through the server obeys deny, with no upstream request', async () => {
    const r = await post(`${guarded.url}/_regmirror/prewarm`, JSON.stringify({ images: ['library/evil:v1'] }), bearer(ADMIN));
    assert.equal(r.status, 200);
    const summary = JSON.parse(r.text.trim().split('\n').at(-1)!) as { results: Array<{ error?: string }> };
    assert.match(summary.results[0].error ?? '', /^DENIED/);
    assert.equal(up.counters.total + up.counters.token, 0);
  });

  test('13.3 a prewarm body and its image list are bounded', async () => {
    const huge = JSON.stringify({ images: ['library/alpine:v1'], pad: 'x'.repeat(2 * 1024 * 1024) });
    assert.equal((await post(`${guarded.url}/_regmirror/prewarm`, huge, bearer(ADMIN))).status, 413);
    const many = JSON.stringify({ images: Array.from({ length: 1001 }, (_, i) => `library/img${i}:v1`) });
    const r = await post(`${guarded.url}/_regmirror/prewarm`, many, bearer(ADMIN));
    assert.equal(r.status, 400);
    assert.match(r.text, /images: at most 1000/);
    assert.equal(up.counters.total + up.counters.token, 0);
  });
});

test('13.3 a prewarm resolves a bounded number of images at once', async () => {
  const up = await FakeUpstream.start({ auth: 'none' });
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
  try {
    up.faults = { hang: true };
    const images = Array.from({ length: 40 }, (_, i) => `library/img${i}:v1`);
    const res = await fetch(`${m.url}/_regmirror/prewarm`, { method: 'POST', body: JSON.stringify({ images }) });
    assert.equal(res.status, 200);
    // The first images' manifest requests arrive and hang; no more may follow them.
    while (up.counters.total < 8) await new Promise((r) => setTimeout(r, 20));
    // Nothing to await for "no more": give a ninth request time it would have had.
    await new Promise((r) => setTimeout(r, 500));
    assert.equal(up.counters.total, 8, 'images resolved at once');
    await res.body?.cancel();
  } finally {
    await up.close();
    await m.stop();
  }
});
