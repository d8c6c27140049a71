// Wrong htpasswd passwords cannot stall the mirror: bcrypt runs off the event loop, failed
// attempts per client address are bounded, and an unknown user costs what a known one does.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { FakeUpstream } from '../fixtures/upstream.js';
import { serveChild, type ChildServer } from './helpers.js';

const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');

let up: FakeUpstream;
let dir: string;
let server: ChildServer;
let base: string;

before(async () => {
  up = await FakeUpstream.start();
  dir = await mkdtemp(join(tmpdir(), 'regmirror-auth-dos-'));
  await writeFile(join(dir, 'htpasswd'), `alice:${bcrypt.hashSync('wonderland', 10)}\n`);
  const config = join(dir, 'mirror.yaml');
  await writeFile(
    config,
    `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\nauth:\n  tokens: [valid-token]\n  htpasswd: ${join(dir, 'htpasswd')}\nupstreams:\n  docker.io:\n    url: ${up.url}\n`,
  );
  server = serveChild(config);
  base = await server.url;
});
after(async () => {
  server.kill();
  await server.exited;
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

/** GET with a stopwatch, from a chosen loopback source address. */
function timedGet(path: string, authorization: string, localAddress = '127.0.0.1'): Promise<{ status: number; ms: number }> {
  const { hostname, port } = new URL(base);
  const started = performance.now();
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, localAddress, headers: { authorization }, agent: false, timeout: 30_000 }, (res) => {
      res.resume();
      res.on('end', () => resolve({ status: res.statusCode ?? 0, ms: performance.now() - started }));
    });
    req.on('timeout', () => req.destroy(new Error('timed out')));
    req.on('error', reject);
    req.end();
  });
}

const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[xs.length >> 1];

/** What one cost-10 compare takes on this machine now, in ms (the machine may be busy). */
function compareCost(): number {
  const hash = bcrypt.hashSync('x', 10);
  const times = [0, 1, 2].map(() => {
    const t = performance.now();
    bcrypt.compareSync('y', hash);
    return performance.now() - t;
  });
  return median(times);
}

test('13.6 forty wrong passwords in flight do not stall a valid token, and are bounded per address', async (t) => {
  // On the event loop the forty compares add up (3.1 s when first reproduced); the bound
  // is a quarter of that, measured now, so a loaded machine does not make it flaky.
  const serial = 40 * compareCost();
  const bound = Math.max(300, serial / 4);
  const flood = Promise.all(Array.from({ length: 40 }, (_, i) => timedGet('/v2/', basic('alice', `wrong-${i}`))));
  const latencies: number[] = [];
  for (let i = 0; i < 5; i++) {
    const r = await timedGet('/v2/', 'Bearer valid-token');
    assert.equal(r.status, 200);
    latencies.push(r.ms);
  }
  const statuses = (await flood).map((r) => r.status);
  t.diagnostic(`valid token during the flood: ${latencies.map(Math.round).join(', ')} ms; 40 compares on the event loop would take ~${Math.round(serial)} ms`);
  assert.ok(Math.max(...latencies) < bound, `a valid token waited ${latencies.map(Math.round).join(', ')} ms (bound ${Math.round(bound)} ms)`);
  assert.ok(statuses.every((s) => s === 401 || s === 429), statuses.join(','));
  assert.ok(statuses.filter((s) => s === 429).length >= 20, `failed attempts per address are bounded: ${statuses.join(',')}`);
});

test('13.6 an unknown user is answered in about the time a known user with a wrong password is', async () => {
  const known: number[] = [];
  const unknown: number[] = [];
  for (let i = 0; i < 3; i++) {
    const k = await timedGet('/v2/', basic('alice', `nope-${i}`), '127.0.0.2');
    const u = await timedGet('/v2/', basic('mallory', `nope-${i}`), '127.0.0.3');
    assert.equal(k.status, 401);
    assert.equal(u.status, 401);
    known.push(k.ms);
    unknown.push(u.ms);
  }
  assert.ok(median(unknown) > median(known) / 3, `unknown ${median(unknown).toFixed(1)} ms, known ${median(known).toFixed(1)} ms`);
  assert.equal((await timedGet('/v2/', basic('alice', 'wonderland'), '127.0.0.4')).status, 200);
});
