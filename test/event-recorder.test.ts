// The recorder and the webhook on their own, against a real SQLite store and real HTTP
// receivers that misbehave: floods folded into one row with a count, rows kept through a
// store that fails, receivers that answer 500, hang or cut the connection.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import { describe, test, type TestContext } from 'node:test';
import { parseConfig } from '../src/config.js';
import { MetadataUnavailable } from '../src/errors.js';
import type { MirrorEvent } from '../src/events/event.js';
import { EventRecorder } from '../src/events/recorder.js';
import { Webhook } from '../src/events/webhook.js';
import { createLogger } from '../src/log.js';
import { Metrics } from '../src/metrics.js';
import type { EventRow, EventStore } from '../src/store/events.js';
import { tempSqliteStore, until } from './helpers.js';

const quiet = createLogger('error', () => undefined);
const stale = (tag: string): Omit<MirrorEvent, 'at'> => ({ kind: 'stale_served', upstream: 'docker.io', repository: 'library/nginx', tag, message: `served nginx:${tag} stale` });

/** A receiver whose answer to each request is up to the test. */
async function receiver(t: TestContext, answer: (n: number, req: IncomingMessage, res: ServerResponse) => void): Promise<{ url: string; bodies: string[]; tries: () => number }> {
  const bodies: string[] = [];
  let n = 0;
  const server: Server = createServer((req, res) => {
    const chunks: Buffer[] = [];
    req.on('data', (c: Buffer) => chunks.push(c));
    req.on('end', () => {
      const i = n++;
      res.on('finish', () => {
        if (res.statusCode >= 200 && res.statusCode < 300) bodies.push(Buffer.concat(chunks).toString());
      });
      answer(i, req, res);
    });
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', () => resolve()));
  t.after(() => {
    server.closeAllConnections();
    return new Promise<void>((resolve) => server.close(() => resolve()));
  });
  return { url: `http://127.0.0.1:${(server.address() as { port: number }).port}/`, bodies, tries: () => n };
}

/** A loopback URL nothing listens on. */
function closedUrl(): Promise<string> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(`http://127.0.0.1:${port}/`));
    });
  });
}

describe('event recorder', () => {
  test('a flood of one kind and subject is stored once at once, then once per window with its count; every occurrence is counted', async (t) => {
    const store = await tempSqliteStore(t, 'regmirror-events-');
    const metrics = new Metrics();
    const r = new EventRecorder({ store: store.events, config: { queueSize: 10, retentionMs: 86_400_000 }, log: quiet, metrics, flushEveryMs: 50, coalesceMs: 400 });
    t.after(() => r.close());
    for (let i = 0; i < 10; i++) r.record(stale('latest'));
    r.record(stale('1.27'));
    await r.flush();
    assert.deepEqual((await store.events.list()).map((e) => [e.tag, e.count]), [['1.27', 1], ['latest', 1]]);
    await until('the window closed', async () => (await store.events.list()).length === 3, 5000);
    const [folded] = await store.events.list();
    assert.equal(folded.tag, 'latest');
    assert.equal(folded.count, 9);
    assert.deepEqual(folded.details, { count: 9 });
    assert.deepEqual(await store.events.countByKind(0), { stale_served: 11 });
    assert.match(await metrics.registry.metrics(), /regmirror_events_total\{kind="stale_served"\} 11\b/);
  });

  test('the server\'s recorder deletes rows past the retention now and then; a command\'s does not', async (t) => {
    const store = await tempSqliteStore(t, 'regmirror-events-');
    const old = Date.now() - 10_000;
    await store.events.append([{ ...stale('old'), at: old }, { ...stale('new'), at: Date.now() + 60_000 }]);
    const command = new EventRecorder({ store: store.events, config: { queueSize: 10, retentionMs: 5_000 }, log: quiet, pruneEveryMs: 50 });
    await new Promise((r) => setTimeout(r, 300));
    await command.close();
    assert.equal((await store.events.list()).length, 2, 'a command leaves the retention to the server');
    const server = new EventRecorder({ store: store.events, config: { queueSize: 10, retentionMs: 5_000 }, log: quiet, pruneEveryMs: 50, prune: true });
    t.after(() => server.close());
    await until('the old row pruned', async () => (await store.events.list()).length === 1, 5000);
    assert.deepEqual((await store.events.list()).map((e) => e.tag), ['new']);
  });

  test('rows the store refuses are kept and land, in order, once it takes them; close writes what is left', async (t) => {
    const store = await tempSqliteStore(t, 'regmirror-events-');
    let refusals = 2;
    const flaky: EventStore = {
      append: async (rows: readonly EventRow[]) => {
        if (refusals-- > 0) throw new MetadataUnavailable('ECONNREFUSED');
        return store.events.append(rows);
      },
      list: (q) => store.events.list(q),
      countByKind: (s) => store.events.countByKind(s),
      prune: (b) => store.events.prune(b),
    };
    const r = new EventRecorder({ store: flaky, config: { queueSize: 10, retentionMs: 86_400_000 }, log: quiet, flushEveryMs: 60_000 });
    r.record(stale('a'));
    await r.flush();
    r.record(stale('b'));
    await r.flush();
    assert.deepEqual(await store.events.list(), [], 'refused twice');
    r.record(stale('c'));
    await r.close();
    assert.deepEqual((await store.events.list()).map((e) => e.tag), ['c', 'b', 'a']);
    r.record(stale('after close'));
    await r.close();
    assert.equal((await store.events.list()).length, 3, 'nothing is recorded once closed, and closing twice is harmless');
  });
});

describe('events webhook', () => {
  const event = (tag: string): MirrorEvent => ({ ...stale(tag), at: Date.now() });

  test('a receiver answering 500 is tried again, with backoff, and gets the events once each, in order', async (t) => {
    const rx = await receiver(t, (n, _req, res) => res.writeHead(n < 2 ? 500 : 204).end());
    const metrics = new Metrics();
    const hook = new Webhook({ url: rx.url, queueSize: 10, log: quiet, metrics, minBackoffMs: 50, maxBackoffMs: 200 });
    t.after(() => hook.close());
    for (const tag of ['a', 'b', 'c']) hook.send(event(tag));
    await until('all delivered', () => rx.bodies.length === 3, 5000);
    assert.deepEqual(rx.bodies.map((b) => (JSON.parse(b) as { tag: string }).tag), ['a', 'b', 'c']);
    assert.equal(rx.tries(), 5);
    assert.match(await metrics.registry.metrics(), /regmirror_events_webhook_failures_total 2\b/);
  });

  test('a receiver that hangs is timed out, one that cuts the connection is tried again; close() does not wait for either', async (t) => {
    const rx = await receiver(t, (n, req, res) => {
      if (n === 0) return; // never answered
      if (n === 1) return void req.socket.destroy();
      res.writeHead(200, { 'content-type': 'text/plain' }).end('not json, not empty');
    });
    const hook = new Webhook({ url: rx.url, queueSize: 10, log: quiet, timeoutMs: 300, minBackoffMs: 20, maxBackoffMs: 50 });
    hook.send(event('x'));
    await until('delivered on the third try', () => rx.bodies.length === 1, 5000);
    assert.equal(rx.tries(), 3);

    const stuck = await receiver(t, () => undefined);
    const hanging = new Webhook({ url: stuck.url, queueSize: 10, log: quiet, timeoutMs: 30_000 });
    hanging.send(event('y'));
    await until('the request is under way', () => stuck.tries() === 1, 5000);
    const started = Date.now();
    await hanging.close(200);
    assert.ok(Date.now() - started < 2000, `closed in ${Date.now() - started} ms`);
    await hook.close();
  });

  test('an unreachable receiver: the queue keeps the newest queueSize events and counts the rest dropped', async (t) => {
    const metrics = new Metrics();
    const hook = new Webhook({ url: await closedUrl(), queueSize: 2, log: quiet, metrics, minBackoffMs: 10_000 });
    t.after(() => hook.close());
    for (const tag of ['a', 'b', 'c', 'd']) hook.send(event(tag));
    assert.equal(hook.pending, 2);
    assert.match(await metrics.registry.metrics(), /regmirror_events_dropped_total\{where="webhook"\} 2\b/);
  });
});

describe('events config', () => {
  const text = 'events:\n  webhook: http://127.0.0.1:9999/hook\n  secret: ${HOOK_SECRET}\n  queueSize: 3\n  retention: 48h\n';

  test('the webhook, its secret, the queue and the retention are read; a command that cannot resolve the secret sends nothing', () => {
    assert.deepEqual(parseConfig(text, { HOOK_SECRET: 's3cret' }).events, { webhook: { url: 'http://127.0.0.1:9999/hook', secret: 's3cret' }, queueSize: 3, retentionMs: 48 * 3_600_000 });
    assert.throws(() => parseConfig(text, {}), /events\.secret/);
    assert.deepEqual(parseConfig(text, {}, { secrets: 'storage' }).events, { queueSize: 3, retentionMs: 48 * 3_600_000 }, 'no webhook rather than unsigned events');
    assert.throws(() => parseConfig('events:\n  webhook: ftp://x/\n', {}), /events\.webhook: must be an http or https URL/);
  });
});
