// Events end to end: a real server serving stale tags through an upstream outage records
// them, POSTs each one, HMAC-signed, to a real receiver (which goes down and comes back on
// the same port), counts them in /metrics, and `regmirror events` and `status` list them
// from the data dir and through --server.
import assert from 'node:assert/strict';
import { createHmac } from 'node:crypto';
import { existsSync } from 'node:fs';
import { writeFile } from 'node:fs/promises';
import { createServer, type IncomingMessage, type Server } from 'node:http';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { FakeUpstream } from '../fixtures/upstream.js';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { SIGNATURE_HEADER, TIMESTAMP_HEADER } from '../src/events/webhook.js';
import { databaseFile } from '../src/store/data-dir.js';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';
import { cli, get, startMirror, until, type Mirror } from './helpers.js';

const SECRET = 'webhook-secret-for-the-test';
const CLIENT = 'client-token-events';
const ADMIN = 'admin-token-events';
const bearer = (t: string) => ({ authorization: `Bearer ${t}` });

interface Delivery {
  headers: IncomingMessage['headers'];
  body: string;
}

/** A webhook receiver on a fixed port, which a test can stop and start again there. */
class Receiver {
  readonly deliveries: Delivery[] = [];
  port = 0;
  #server?: Server;

  async start(): Promise<void> {
    const server = createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (c: Buffer) => chunks.push(c));
      req.on('end', () => {
        this.deliveries.push({ headers: req.headers, body: Buffer.concat(chunks).toString('utf8') });
        res.writeHead(204).end();
      });
    });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen(this.port, '127.0.0.1', () => resolve());
    });
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  async stop(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    if (!server) return;
    server.closeAllConnections();
    await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  events(): Array<Record<string, unknown>> {
    return this.deliveries.map((d) => JSON.parse(d.body) as Record<string, unknown>);
  }
}

/** The events in a data dir's SQLite file, read as another process would. */
async function storedEvents(dataDir: string): Promise<number> {
  const store = new SqliteMetadataStore(databaseFile(dataDir));
  try {
    return (await store.events.list()).length;
  } finally {
    await store.close();
  }
}

describe('events', () => {
  let up: FakeUpstream;
  let m: Mirror;
  const receiver = new Receiver();
  let config: string;
  const images: FixtureImage[] = [];

  const pull = (tag: string) => get(`${m.url}/v2/library/app/manifests/${tag}`, { headers: bearer(CLIENT) });
  const metrics = async () => (await get(`${m.url}/metrics`)).body.toString();

  before(async () => {
    await receiver.start();
    up = await FakeUpstream.start({ auth: 'none' });
    for (const tag of ['v1', 't1', 't2', 't3', 't4', 't5']) {
      const img = await singleImage({ name: 'library/app', tag, seed: `events-${tag}` });
      up.addImage(img);
      images.push(img);
    }
    m = await startMirror({
      upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: 1, connectTimeoutMs: 500 }],
      defaultUpstream: 'docker.io',
      metadata: { kind: 'sqlite' },
      auth: { tokens: [CLIENT] },
      adminToken: ADMIN,
      events: { webhook: { url: `http://127.0.0.1:${receiver.port}/hook`, secret: SECRET }, queueSize: 3, retentionMs: 30 * 86_400_000 },
    });
    for (const img of images) assert.equal((await pull(img.tag)).status, 200, `${img.tag} cached`);
    config = join(m.dataDir, 'cli.yaml');
    await writeFile(config, `dataDir: ${m.dataDir}\n`);
  });
  after(async () => {
    await m?.stop();
    await up?.close();
    await receiver.stop();
  });

  test('a stale tag served in an outage reaches the webhook once, HMAC-signed; the flood is folded and counted', async () => {
    assert.equal(receiver.deliveries.length, 0, 'pulls with the upstream up told nothing');
    up.faults = { refuse: true };
    for (let i = 0; i < 4; i++) {
      const r = await pull('v1');
      assert.equal(r.status, 200);
      assert.match(r.headers.warning ?? '', /^110 /);
    }
    await until('the webhook got the event', () => receiver.deliveries.length >= 1);
    const [d] = receiver.deliveries;
    const want = `sha256=${createHmac('sha256', SECRET).update(d.body).digest('hex')}`;
    assert.equal(d.headers[SIGNATURE_HEADER], want, 'the signature is the HMAC of the exact body');
    assert.notEqual(createHmac('sha256', 'another secret').update(d.body).digest('hex'), want.slice(7));
    assert.match(String(d.headers[TIMESTAMP_HEADER]), /^\d{13}$/);
    assert.equal(d.headers['content-type'], 'application/json');
    const e = JSON.parse(d.body) as Record<string, unknown>;
    assert.equal(e.kind, 'stale_served');
    assert.equal(e.upstream, 'docker.io');
    assert.equal(e.repository, 'library/app');
    assert.equal(e.tag, 'v1');
    assert.equal(e.digest, images[0].root.digest);
    assert.match(String(e.message), /library\/app:v1/);
    assert.ok(Math.abs(Date.parse(String(e.time)) - Date.now()) < 60_000);
    await new Promise((r) => setTimeout(r, 1500));
    assert.equal(receiver.deliveries.length, 1, 'the other three pulls are folded into the minute, not sent one by one');
    assert.match(await metrics(), /regmirror_events_total\{kind="stale_served"\} 4\b/);
  });

  test('while the receiver is down events queue (the oldest dropped past queueSize) and arrive in order once it is back', async () => {
    const before = receiver.deliveries.length;
    await receiver.stop();
    for (const tag of ['t1', 't2', 't3', 't4', 't5']) assert.equal((await pull(tag)).status, 200);
    await until('two events dropped', async () => /regmirror_events_dropped_total\{where="webhook"\} 2\b/.test(await metrics()));
    assert.match(await metrics(), /regmirror_events_webhook_failures_total [1-9]/);
    await receiver.start();
    await until('three events delivered', () => receiver.deliveries.length >= before + 3, 40_000);
    await new Promise((r) => setTimeout(r, 500));
    const got = receiver.events().slice(before);
    assert.deepEqual(got.map((e) => e.tag), ['t3', 't4', 't5'], 'the 3 newest, in order');
    assert.ok(got.every((e) => e.kind === 'stale_served'));
    assert.equal(receiver.deliveries.length, before + 3);
  });

  test('regmirror events lists them from the data dir, as JSON and as text; --since and --kind filter', async () => {
    // An event from two hours ago, written as another process would.
    const store = new SqliteMetadataStore(databaseFile(m.dataDir));
    await store.events.append([{ at: Date.now() - 2 * 3_600_000, kind: 'digest_mismatch', upstream: 'docker.io', repository: 'library/old', digest: `sha256:${'e'.repeat(64)}`, message: 'an old mismatch' }]);
    await store.close();
    await until('the server wrote its events', async () => (await storedEvents(m.dataDir)) >= 7);

    const all = await cli(['events', '--json', '--config', config]);
    assert.equal(all.code, 0, all.stderr);
    const listed = JSON.parse(all.stdout) as Array<{ kind: string; tag?: string; at: number; time: string }>;
    assert.deepEqual(listed.map((e) => e.tag ?? e.kind), ['t5', 't4', 't3', 't2', 't1', 'v1', 'digest_mismatch'], 'newest first, the dropped ones stored all the same');
    assert.equal(listed[0].time, new Date(listed[0].at).toISOString());

    const recent = JSON.parse((await cli(['events', '--json', '--since', '1h', '--config', config])).stdout) as Array<{ kind: string }>;
    assert.equal(recent.length, 6);
    assert.ok(recent.every((e) => e.kind === 'stale_served'));
    const mismatches = JSON.parse((await cli(['events', '--json', '--since', '3h', '--kind', 'digest_mismatch', '--config', config])).stdout) as Array<{ repository: string }>;
    assert.deepEqual(mismatches.map((e) => e.repository), ['library/old']);

    const text = await cli(['events', '--since', '1h', '--config', config]);
    assert.equal(text.code, 0, text.stderr);
    const lines = text.stdout.trim().split('\n');
    assert.equal(lines.length, 6);
    assert.match(lines[0], /^\d{4}-\d\d-\d\dT\S+Z\s+stale_served\s+docker\.io\/library\/app:t5@sha256:[0-9a-f]{12}\s+served library\/app:t5 as cached/);

    // A data dir no mirror has used: said so, nothing created.
    const fresh = join(m.dataDir, 'fresh.yaml');
    await writeFile(fresh, `dataDir: ${join(m.dataDir, 'never-used')}\n`);
    const none = await cli(['events', '--json', '--config', fresh]);
    assert.equal(none.code, 0, none.stderr);
    assert.equal(none.stdout.trim(), '[]');
    assert.match(none.stderr, /^no cache yet at /);
    assert.equal(existsSync(join(m.dataDir, 'never-used')), false);

    const bad = await cli(['events', '--since', 'yesterday', '--config', config]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--since yesterday: give an age such as 30m, 1h or 7d/);
    const unknown = await cli(['events', '--kind', 'nonsense', '--config', config]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /unknown event kind "nonsense"/);
  });

  test('--server reads them through the admin endpoint with the admin token, and is refused without it', async () => {
    const refused = await cli(['events', '--server', m.url], { REGMIRROR_ADMIN_TOKEN: '' });
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refused \(401\)/);
    assert.equal((await get(`${m.url}/_regmirror/events`)).status, 401);
    const ok = await cli(['events', '--server', m.url, '--json', '--kind', 'stale_served', '--since', '1h'], { REGMIRROR_ADMIN_TOKEN: ADMIN });
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual((JSON.parse(ok.stdout) as Array<{ tag: string }>).map((e) => e.tag), ['t5', 't4', 't3', 't2', 't1', 'v1']);
    const bad = await get(`${m.url}/_regmirror/events?since=tomorrow`, { headers: bearer(ADMIN) });
    assert.equal(bad.status, 400);
  });

  test('status shows the recent events and the counts by kind over 24 h', async () => {
    const r = await cli(['status', '--server', m.url, '--json'], { REGMIRROR_ADMIN_TOKEN: ADMIN });
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { events: { recent: Array<{ tag?: string }>; last24h: Record<string, number> } };
    assert.deepEqual(report.events.recent.map((e) => e.tag), ['t5', 't4', 't3', 't2', 't1']);
    // v1's first pull and t1..t5 are stored now; v1's three folded pulls join once their minute is over.
    assert.deepEqual(report.events.last24h, { digest_mismatch: 1, stale_served: 6 });
    const text = await cli(['status', '--config', config]);
    assert.match(text.stdout, /events \(24h\): digest_mismatch 1, stale_served 6/);
    assert.match(text.stdout, /stale_served\s+docker\.io\/library\/app:t5/);
  });

  test('cache rm of a pinned image without --force is refused and recorded by the command itself, which delivers it on close', async () => {
    const hooked = join(m.dataDir, 'cli-webhook.yaml');
    await writeFile(hooked, `dataDir: ${m.dataDir}\nevents:\n  webhook: http://127.0.0.1:${receiver.port}/hook\n  secret: ${SECRET}\n`);
    const pinned = await cli(['cache', 'pin', 'library/app:t1', '--config', hooked]);
    assert.equal(pinned.code, 0, pinned.stderr);
    const before = receiver.deliveries.length;
    const rm = await cli(['cache', 'rm', 'library/app:t1', '--config', hooked]);
    assert.equal(rm.code, 1);
    assert.match(rm.stderr, /is pinned: unpin first, or pass --force/);
    assert.equal(receiver.deliveries.length, before + 1, 'delivered before the command exited');
    const d = receiver.deliveries[before];
    assert.equal(d.headers[SIGNATURE_HEADER], `sha256=${createHmac('sha256', SECRET).update(d.body).digest('hex')}`);
    assert.equal((JSON.parse(d.body) as { kind: string }).kind, 'pinned_eviction_refused');
    const listed = JSON.parse((await cli(['events', '--json', '--kind', 'pinned_eviction_refused', '--config', config])).stdout) as Array<{ repository: string; tag: string; digest: string }>;
    assert.deepEqual(listed.map((e) => [e.repository, e.tag, e.digest]), [['library/app', 't1', images[1].root.digest]]);
  });
});
