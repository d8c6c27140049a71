// PostgresMetadataStore on a real PostgreSQL 15 (one throwaway cluster for this file, a
// fresh database per test): the MetadataStore contract, then what only a server brings —
// start-up failures, schema versions shared by replicas, a server that stops, restarts or
// hangs under a running store, and a password that must never show.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join, relative } from 'node:path';
import { after, before, describe, test } from 'node:test';
import pg from 'pg';
import { MetadataUnavailable } from '../src/errors.js';
import { PostgresMetadataStore, type PostgresOptions } from '../src/store/postgres/metadata-postgres.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../src/store/postgres/migrations.js';
import { BLOBS } from '../src/store/postgres/queries.js';
import { metadataContract } from './contracts/metadata.contract.js';
import { startPostgres, type PgServer } from './support/postgres.js';

const D1 = `sha256:${'1'.repeat(64)}`;

let server: PgServer;
let databases = 0;

before(async () => {
  server = await startPostgres();
});
after(async () => {
  await server?.destroy();
});

/** A fresh database and a store connected to it. */
async function freshStore(extra: Partial<PostgresOptions> & { now?: () => number } = {}): Promise<{ store: PostgresMetadataStore; url: string }> {
  const { url } = await server.createDatabase(`t${++databases}`);
  return { store: await PostgresMetadataStore.connect({ url, password: server.password, ...extra }), url };
}

/** A plain client on the test database, as a DBA would have. */
async function sql<R extends pg.QueryResultRow>(url: string, text: string, values: unknown[] = []): Promise<R[]> {
  const u = new URL(url);
  const client = new pg.Client({ host: u.hostname, port: Number(u.port), user: server.user, password: server.password, database: u.pathname.slice(1) });
  await client.connect();
  try {
    return (await client.query<R>(text, values)).rows;
  } finally {
    await client.end();
  }
}

function closedPort(): Promise<number> {
  return new Promise((resolve) => {
    const srv = createServer().listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

/** Every way an error can be shown: message, stack, and its own fields. */
const shown = (err: unknown) => [String(err), (err as Error)?.stack ?? '', JSON.stringify(err, Object.getOwnPropertyNames(err ?? {}))].join('\n');

metadataContract('postgres', async () => {
  const clock = { now: 0 };
  const { store } = await freshStore({ now: () => clock.now });
  return { store, clock, close: () => store.close() };
});

describe('PostgresMetadataStore', () => {
  test('backend and schema version', async (t) => {
    const { store, url } = await freshStore();
    t.after(() => store.close());
    assert.equal(store.backend, 'postgres');
    assert.equal(await store.schemaVersion(), SCHEMA_VERSION);
    assert.equal(SCHEMA_VERSION, MIGRATIONS.length);
    const tables = await sql<{ tablename: string }>(url, "SELECT tablename FROM pg_tables WHERE schemaname = 'public' ORDER BY tablename");
    assert.deepEqual(tables.map((r) => r.tablename), ['blobs', 'events', 'guarded_tags', 'leases', 'links', 'manifests', 'rate_limits', 'regmirror_schema', 'rollups', 'subject_rollups', 'tags']);
  });

  test('connecting to a server that is not there fails at once, in one line naming host and port', async () => {
    const port = await closedPort();
    const started = performance.now();
    await assert.rejects(PostgresMetadataStore.connect({ url: `postgres://regmirror@127.0.0.1:${port}/regmirror`, password: 'x' }), (err: Error) => {
      assert.ok(err instanceof MetadataUnavailable, String(err));
      assert.match(err.message, new RegExp(`127\\.0\\.0\\.1:${port}`));
      assert.match(err.message, /ECONNREFUSED/);
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
    assert.ok(performance.now() - started < 3500, 'within the connect timeout');
  });

  test('a wrong password or database is refused at connect, in one line naming the server', async () => {
    const { url } = await server.createDatabase(`t${++databases}`);
    await assert.rejects(PostgresMetadataStore.connect({ url, password: 'not-the-password' }), (err: Error) => {
      assert.match(err.message, new RegExp(`^metadata: PostgreSQL at 127\\.0\\.0\\.1:${server.port}/t${databases}: password authentication failed`));
      assert.doesNotMatch(err.message, /\n/);
      return true;
    });
    await assert.rejects(PostgresMetadataStore.connect({ url: url.replace(/\/t\d+$/, '/nowhere'), password: server.password }), /^Error: metadata: PostgreSQL at .*\/nowhere: database "nowhere" does not exist$/);
  });

  test('a database migrated by a newer regmirror is refused and left as it is', async () => {
    const { store, url } = await freshStore();
    await store.close();
    await sql(url, 'UPDATE regmirror_schema SET version = $1', [SCHEMA_VERSION + 1]);
    await assert.rejects(
      PostgresMetadataStore.connect({ url, password: server.password }),
      (err: Error) => err.message === `metadata: database schema version ${SCHEMA_VERSION + 1} is newer than this regmirror (${SCHEMA_VERSION}); upgrade regmirror`,
    );
    assert.deepEqual(await sql(url, 'SELECT version FROM regmirror_schema'), [{ version: SCHEMA_VERSION + 1 }]);
  });

  test('replicas connecting at once migrate once (the others wait, then find the schema current)', async (t) => {
    const { url } = await server.createDatabase(`t${++databases}`);
    // Without the advisory lock, concurrent CREATE TABLEs fail on each other.
    const stores = await Promise.all(Array.from({ length: 4 }, () => PostgresMetadataStore.connect({ url, password: server.password })));
    t.after(() => Promise.all(stores.map((s) => s.close())));
    for (const s of stores) assert.equal(await s.schemaVersion(), SCHEMA_VERSION);
    await stores[0].recordBlob(D1, 5);
    assert.deepEqual(await stores[3].getBlob(D1), { size: 5, pinned: false });
  });

  test('a stopped server: calls throw MetadataUnavailable at once; after start() the same store works again', async (t) => {
    const idleErrors: Error[] = [];
    const { store } = await freshStore({ onIdleError: (err) => idleErrors.push(err) });
    t.after(async () => {
      await server.start();
      await store.close();
    });
    await store.recordBlob(D1, 5);
    await server.stop();
    for (const call of [() => store.getBlob(D1), () => store.recordManifest(D1, 'a', 5, { upstream: 'u', repository: 'r' }), () => store.writeBatch({ touches: new Map([[D1, { at: 1, hits: 1 }]]), rollups: new Map(), rateLimits: new Map() })]) {
      const started = performance.now();
      await assert.rejects(call(), (err: Error) => err instanceof MetadataUnavailable && err.code === 'METADATA_UNAVAILABLE');
      assert.ok(performance.now() - started < 3500, `failed after ${Math.round(performance.now() - started)} ms`);
    }
    assert.ok(idleErrors.length > 0, 'the idle connection the shutdown cut was reported, not thrown');
    await server.start();
    assert.deepEqual(await store.getBlob(D1), { size: 5, pinned: false });
    await store.recordManifest(D1, 'a', 5, { upstream: 'u', repository: 'r' });
    assert.deepEqual(await store.getManifest(D1), { mediaType: 'a', size: 5 });
  });

  test('a hung server: calls throw MetadataUnavailable within the statement and connect timeouts', async (t) => {
    const { store, url } = await freshStore({ queryTimeoutMs: 800, connectTimeoutMs: 500 });
    t.after(() => store.close());
    await store.recordBlob(D1, 5);
    const backends = (await sql<{ pid: number }>(url, "SELECT pid FROM pg_stat_activity WHERE application_name = 'regmirror' AND datname = $1", [new URL(url).pathname.slice(1)])).map((r) => r.pid);
    assert.ok(backends.length > 0);
    // Frozen, not gone: the sockets stay open and nothing answers on them.
    const frozen = [server.pid, ...backends];
    for (const pid of frozen) process.kill(pid, 'SIGSTOP');
    try {
      for (let i = 0; i < 2; i++) {
        const started = performance.now();
        await assert.rejects(store.getBlob(D1), MetadataUnavailable);
        assert.ok(performance.now() - started < 2000, `failed after ${Math.round(performance.now() - started)} ms`);
      }
    } finally {
      for (const pid of frozen) process.kill(pid, 'SIGCONT');
    }
    assert.deepEqual(await store.getBlob(D1), { size: 5, pinned: false });
  });

  test('the password shows in no error: wrong password, server down, server back', async () => {
    const secret = 'pw-' + 'unmistakable-7f3a9c';
    const { url } = await server.createDatabase(`t${++databases}`);
    const errors: unknown[] = [];
    await PostgresMetadataStore.connect({ url, password: secret }).catch((e: unknown) => errors.push(e));
    const port = await closedPort();
    await PostgresMetadataStore.connect({ url: `postgres://regmirror@127.0.0.1:${port}/x`, password: secret }).catch((e: unknown) => errors.push(e));
    const { store } = await freshStore();
    await server.stop();
    try {
      await store.getBlob(D1).catch((e: unknown) => errors.push(e));
    } finally {
      await server.start();
      await store.close();
    }
    assert.equal(errors.length, 3);
    for (const e of errors) {
      assert.ok(!shown(e).includes(secret), shown(e));
      assert.ok(!shown(e).includes(server.password), shown(e));
    }
  });

  test('a budget observed earlier (another replica, flushed later) does not replace a newer one', async (t) => {
    const { store } = await freshStore();
    t.after(() => store.close());
    const row = (remaining: number, observedAt: number) => ({ upstream: 'docker.io', credential: 'anonymous', limit: 100, remaining, observedAt });
    const limits = (r: ReturnType<typeof row>) => ({ touches: new Map(), rollups: new Map(), rateLimits: new Map([['docker.io\nanonymous', r]]) });
    await store.writeBatch(limits(row(40, 2000)));
    await store.writeBatch(limits(row(41, 1000)));
    assert.deepEqual(await store.rateLimits(), [row(40, 2000)]);
  });

  test('evictionCandidates walks the blobs_lru index, with no sort', async (t) => {
    const { store, url } = await freshStore();
    t.after(() => store.close());
    const rows = Array.from({ length: 20_000 }, (_, i) => ({ digest: `sha256:${i.toString(16).padStart(64, '0')}`, size: 1, createdAt: 0, lastAccess: i % 977, hits: 0, pinned: i % 10 === 0 }));
    await store.importRows(
      (async function* () {
        for (let i = 0; i < rows.length; i += 1000) yield { table: 'blobs' as const, rows: rows.slice(i, i + 1000) };
      })(),
    );
    await sql(url, 'ANALYZE blobs');
    const plan = (await sql<{ 'QUERY PLAN': string }>(url, `EXPLAIN ${BLOBS.lru.text.replace('$1', '256')}`)).map((r) => r['QUERY PLAN']).join('\n');
    assert.match(plan, /Index (Only )?Scan using blobs_lru/, plan);
    assert.doesNotMatch(plan, /Sort/, plan);
    const got = await store.evictionCandidates(3);
    assert.deepEqual(got.map((c) => c.digest), [rows[977].digest, rows[1954].digest, rows[2931].digest].sort());
    const after = (await sql<{ 'QUERY PLAN': string }>(url, `EXPLAIN ${BLOBS.lruAfter.text.replace('$1', '5').replace('$2', `'${rows[5].digest}'`).replace('$3', '256')}`)).map((r) => r['QUERY PLAN']).join('\n');
    assert.match(after, /Index (Only )?Scan using blobs_lru/, after);
    assert.doesNotMatch(after, /Sort/, after);
    const next = await store.evictionCandidates(2, { lastAccess: 0, digest: `sha256:${'f'.repeat(64)}` });
    assert.deepEqual(next.map((c) => c.lastAccess), [1, 1], 'past every blob last used at 0');
  });
});

test('nothing outside src/store/ imports the PostgreSQL backend or pg', () => {
  const src = new URL('../src/', import.meta.url).pathname;
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : /\.[jt]s$/.test(e.name) ? [join(dir, e.name)] : []));
  const offenders = files(src)
    .filter((f) => !relative(src, f).startsWith('store/'))
    .filter((f) => /^import[^'"]*['"](pg|[^'"]*\/postgres\/[^'"]*)['"]/m.test(readFileSync(f, 'utf8')));
  assert.deepEqual(offenders.map((f) => relative(src, f)), []);
});
