// PostgreSQL stopped and started again under a running mirror: warm pulls go on from
// memory, the writes of pulls made meanwhile wait and land once the database is back,
// nothing waits longer than its timeout; and a database down at start-up is one line.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import type { Config } from '../src/config.js';
import { cli, get, sha256, startMirror, until, type Mirror } from './helpers.js';
import { testPostgres } from './support/metadata-backend.js';
import type { PgServer } from './support/postgres.js';

/** No request may take longer than this while the database is down (its connect and statement timeouts are 3 s and 5 s). */
const REQUEST_DEADLINE_MS = 6_000;

async function rows(server: PgServer, url: string, sql: string): Promise<Array<Record<string, unknown>>> {
  const u = new URL(url);
  const c = new pg.Client({ host: u.hostname, port: Number(u.port), user: server.user, password: server.password, database: u.pathname.slice(1) });
  await c.connect();
  try {
    return (await c.query(sql)).rows;
  } finally {
    await c.end();
  }
}

/** A GET that must answer within the deadline. */
async function timely(url: string): Promise<{ status: number; body: Buffer; ms: number }> {
  const started = Date.now();
  const r = await get(url, { timeoutMs: REQUEST_DEADLINE_MS });
  return { status: r.status, body: r.body, ms: Date.now() - started };
}

async function pullImage(m: Mirror, img: FixtureImage): Promise<void> {
  const manifest = await timely(`${m.url}/v2/${img.name}/manifests/${img.tag}`);
  assert.equal(manifest.status, 200, `${img.name} manifest`);
  for (const [d] of img.blobs) {
    const blob = await timely(`${m.url}/v2/${img.name}/blobs/${d}`);
    assert.equal(blob.status, 200, `${img.name} blob ${d}`);
    assert.equal(sha256(blob.body), d);
  }
}

describe('PostgreSQL restarted while regmirror serves', () => {
  let server: PgServer;
  let up: FakeUpstream;
  let m: Mirror;
  let metadata: Config['metadata'];
  let url: string;
  let warm: FixtureImage;
  let cold: FixtureImage;

  before(async () => {
    server = await testPostgres();
    ({ url } = await server.createDatabase('outage'));
    metadata = { kind: 'postgres', url, password: server.password, pool: 4, ssl: false };
    up = await FakeUpstream.start();
    warm = await singleImage({ name: 'library/warm', tag: 'v1', seed: 'pg-warm' });
    cold = await singleImage({ name: 'library/cold', tag: 'v1', seed: 'pg-cold' });
    up.addImage(warm);
    up.addImage(cold);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', metadata });
  });
  after(async () => {
    await m?.stop();
    await up?.close();
  });

  test('warm pulls are served from memory, new pulls are served and their writes land when the database is back', async () => {
    await pullImage(m, warm);
    await m.metadata.flush();
    up.resetCounters();

    await server.stop();
    // Past the one-second memo: every row is read again, fails, and is answered from memory.
    await new Promise((r) => setTimeout(r, 1200));
    for (let i = 0; i < 3; i++) await pullImage(m, warm);
    assert.equal(up.counters.manifestGet + up.counters.manifestHead + up.counters.blobGet, 0, 'warm pulls asked the upstream nothing');

    // Still ready: taking the mirror out of service would stop the pulls it can serve.
    const ready = await get(`${m.url}/readyz`);
    assert.equal(ready.status, 200, ready.body.toString());
    assert.match(ready.body.toString(), /"database":"failed: METADATA_UNAVAILABLE"/);

    // A pull the cache has never seen is fetched and served; what it records waits.
    await pullImage(m, cold);
    assert.ok(m.metadata.queuedWrites > 0, 'the new rows wait for the database');
    const metrics = (await get(`${m.url}/metrics`)).body.toString();
    assert.match(metrics, /regmirror_metadata_unavailable_total\{what="write"\} [1-9]/);
    assert.match(metrics, /regmirror_metadata_unavailable_total\{what="read"\} [1-9]/);

    await server.start();
    await until('the queued writes to land', () => m.metadata.queuedWrites === 0, 20_000);
    const tag = await rows(server, url, "SELECT digest FROM tags WHERE repository = 'library/cold' AND tag = 'v1'");
    assert.ok(tag.length > 0 && tag.every((r) => r.digest === cold.root.digest), 'the tag pulled during the outage is recorded');
    const blobs = await rows(server, url, 'SELECT digest FROM blobs');
    for (const d of [...cold.blobs.keys(), cold.root.digest]) assert.ok(blobs.some((r) => r.digest === d), `blob ${d} recorded`);
    const links = await rows(server, url, "SELECT digest FROM links WHERE repository = 'library/cold'");
    for (const d of cold.blobs.keys()) assert.ok(links.some((r) => r.digest === d), `blob ${d} linked`);

    // The counters gathered during the outage are written too: 1 + 3 warm pulls and 1 cold one.
    await until('the counters to be flushed', async () => {
      await m.metadata.flush().catch(() => {});
      const [r] = await rows(server, url, "SELECT coalesce(sum(value), 0)::int AS n FROM rollups WHERE metric = 'pulls_served'");
      return r.n === 5;
    });

    // And the mirror reads the database again: a tag forgotten there is fetched again.
    up.resetCounters();
    await pullImage(m, cold);
    assert.equal(up.counters.manifestGet + up.counters.blobGet, 0, 'the cold image is now a hit');
  });
});

describe('PostgreSQL down at start-up', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'regmirror-pgdown-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('serve fails at once with one line naming the database', async () => {
    const server = await testPostgres();
    const { url } = await server.createDatabase('down');
    const config = join(dir, 'mirror.yaml');
    // A port nothing listens on: the database "is down".
    const downUrl = url.replace(`:${server.port}/`, ':9/');
    await writeFile(config, `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\nmetadata:\n  postgres:\n    url: ${downUrl}\n    password: ${JSON.stringify(server.password)}\n`);
    const started = Date.now();
    const r = await cli(['serve', '--config', config]);
    assert.notEqual(r.code, 0);
    assert.ok(Date.now() - started < 15_000, 'it does not wait');
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(lines[0], /127\.0\.0\.1:9/);
    assert.ok(!r.stderr.includes(server.password), 'the password is not printed');
  });
});
