// The SQLite backend's own schema history (migrations, checked on the file), and the
// Metadata wrapper's batching on it: access times, hit counts, roll-ups and budgets are
// written only by a flush (checked through a second, read-only connection). The row
// semantics every backend shares are in test/contracts/metadata.contract.ts.
import assert from 'node:assert/strict';
import { rmSync } from 'node:fs';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterEach, beforeEach, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { Metadata } from '../src/store/metadata.js';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';
import { MIGRATIONS, SCHEMA_VERSION } from '../src/store/sqlite/migrations.js';

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const HOUR = 3_600_000;

let dir: string;
let path: string;
let clock: number;
const open: Metadata[] = [];

/** Opens the database with the test clock and a flush timer that never fires during a test. */
async function db(): Promise<Metadata> {
  const m = new Metadata(new SqliteMetadataStore(path, { now: () => clock }), { now: () => clock, flushEveryMs: 24 * HOUR });
  open.push(m);
  return m;
}

/** A second, read-only connection, as another process (prewarm, gc) would have. */
function reader<T>(fn: (conn: Database.Database) => T): T {
  const conn = new Database(path, { readonly: true, fileMustExist: true });
  try {
    return fn(conn);
  } finally {
    conn.close();
  }
}

const blobRow = (digest: string) =>
  reader((c) => c.prepare('SELECT size, created_at AS createdAt, last_access AS lastAccess, hits FROM blobs WHERE digest = ?').get(digest)) as
    | { size: number; createdAt: number; lastAccess: number; hits: number }
    | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-meta-'));
  path = join(dir, 'metadata.db');
  clock = 1_700_000_000_000;
});

afterEach(async () => {
  for (const m of open.splice(0)) {
    try {
      await m.close();
    } catch {
      // already closed by the test
    }
  }
  await rm(dir, { recursive: true, force: true });
});

describe('migrations', () => {
  test('an empty file is migrated to SCHEMA_VERSION', async () => {
    assert.equal(SCHEMA_VERSION, MIGRATIONS.length);
    assert.ok(SCHEMA_VERSION >= 1);
    const m = await db();
    assert.equal(await m.schemaVersion(), SCHEMA_VERSION);
    const tables = reader((c) => (c.prepare("SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name").all() as Array<{ name: string }>).map((r) => r.name));
    assert.deepEqual(tables, ['blobs', 'events', 'guarded_tags', 'leases', 'links', 'manifests', 'rate_limits', 'rollups', 'store_totals', 'subject_rollups', 'tags']);
    assert.equal(reader((c) => c.pragma('user_version', { simple: true })), SCHEMA_VERSION);
    assert.equal(reader((c) => c.pragma('journal_mode', { simple: true })), 'wal');
    for (const t of ['blobs', 'manifests', 'links', 'tags'] as const) assert.equal(await m.count(t), 0);
  });

  test('a database at every older version is migrated forward, keeping its rows', async () => {
    for (let version = 1; version < SCHEMA_VERSION; version++) {
      const old = new Database(path);
      for (let v = 0; v < version; v++) old.exec(MIGRATIONS[v]);
      old.pragma(`user_version = ${version}`);
      old.prepare('INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, 7, 1, 1)').run(D1);
      old.close();
      const m = await db();
      assert.equal(await m.schemaVersion(), SCHEMA_VERSION, `from version ${version}`);
      assert.deepEqual(await m.getBlob(D1), { size: 7, pinned: false });
      assert.deepEqual(await m.storeSize(), { blobs: 1, bytes: 7, pinnedBytes: 0 }, `totals from version ${version}`);
      await m.close();
      rmSync(path, { force: true });
      rmSync(path + '-wal', { force: true });
      rmSync(path + '-shm', { force: true });
    }
  });

  test('a blob row from before versions (migration 5) reads its mtime_ms as the version; a new version replaces it', async () => {
    const old = new Database(path);
    for (let v = 0; v < 4; v++) old.exec(MIGRATIONS[v]);
    old.pragma('user_version = 4');
    old.prepare('INSERT INTO blobs (digest, size, created_at, last_access, mtime_ms) VALUES (?, 7, 1, 1, 1733000000123.456)').run(D1);
    old.close();
    const m = await db();
    assert.deepEqual(await m.getBlob(D1), { size: 7, version: '1733000000123.456', pinned: false });
    await m.recordBlob(D1, 7, undefined, 'v2');
    assert.equal((await m.getBlob(D1))?.version, 'v2');
    await m.recordBlob(D1, 7);
    assert.equal((await m.getBlob(D1))?.version, 'v2', 'recording without a version keeps the one known');
  });

  test('the store totals follow every write of a blob row: the sum of the rows, without summing them', async () => {
    const m = await db();
    const sum = () => reader((c) => c.prepare('SELECT count(*) AS blobs, coalesce(sum(size), 0) AS bytes, coalesce(sum(CASE WHEN pinned = 1 THEN size ELSE 0 END), 0) AS pinnedBytes FROM blobs').get());
    await m.recordBlob(D1, 10);
    await m.recordManifest(D2, 'application/vnd.oci.image.manifest.v1+json', 20, { upstream: 'docker.io', repository: 'library/nginx' });
    await m.setBlobPins([D1], []);
    await m.recordBlob(D1, 15);
    m.touch(D2);
    await m.flush();
    assert.deepEqual(await m.storeSize(), { blobs: 2, bytes: 35, pinnedBytes: 15 });
    assert.deepEqual(await m.storeSize(), sum());
    assert.deepEqual(await m.evictBlobs([D1, D2]), [D2]);
    await m.forgetBlobs([D1]);
    assert.deepEqual(await m.storeSize(), { blobs: 0, bytes: 0, pinnedBytes: 0 });
    assert.deepEqual(await m.storeSize(), sum());
  });

  test('reopening a current database is a no-op that keeps the data', async () => {
    const first = await db();
    await first.recordBlob(D1, 10, { upstream: 'docker.io', repository: 'library/nginx' });
    await first.close();
    const schemaBefore = reader((c) => c.prepare('SELECT sql FROM sqlite_master ORDER BY name').all());

    const second = await db();
    assert.equal(await second.schemaVersion(), SCHEMA_VERSION);
    assert.deepEqual(await second.getBlob(D1), { size: 10, pinned: false });
    assert.equal(await second.isLinked('docker.io', 'library/nginx', D1), true);
    await second.close();
    assert.deepEqual(
      reader((c) => c.prepare('SELECT sql FROM sqlite_master ORDER BY name').all()),
      schemaBefore,
    );
  });

  test('a database from a newer regmirror is refused, and left at its version', async () => {
    const newer = new Database(path);
    newer.pragma(`user_version = ${SCHEMA_VERSION + 1}`);
    newer.close();
    await assert.rejects(
      () => db(),
      (err: unknown) =>
        err instanceof Error &&
        err.message.includes(`schema version ${SCHEMA_VERSION + 1}`) &&
        err.message.includes(`(${SCHEMA_VERSION})`) &&
        /newer than this regmirror/.test(err.message) &&
        /upgrade/.test(err.message),
    );
    assert.equal(reader((c) => c.pragma('user_version', { simple: true })), SCHEMA_VERSION + 1);
    assert.deepEqual(
      reader((c) => c.prepare("SELECT name FROM sqlite_master WHERE type = 'table'").all()),
      [],
      'no migration ran on it',
    );
  });
});

describe('pins', () => {
  const key = { upstream: 'docker.io', repository: 'library/nginx', tag: 'latest', accept: 15 };
  const columns = (table: string) => reader((c) => (c.prepare(`SELECT name FROM pragma_table_info('${table}')`).all() as Array<{ name: string }>).map((r) => r.name));
  const pinnedBlob = (digest: string) => reader((c) => (c.prepare('SELECT pinned FROM blobs WHERE digest = ?').get(digest) as { pinned: number } | undefined)?.pinned);

  test('tags and blobs have a pinned column, 0 by default (rows from before migration 3 too)', async () => {
    const old = new Database(path);
    for (let v = 0; v < 2; v++) old.exec(MIGRATIONS[v]);
    old.pragma('user_version = 2');
    old.prepare('INSERT INTO blobs (digest, size, created_at, last_access) VALUES (?, 7, 1, 1)').run(D1);
    old.prepare("INSERT INTO tags VALUES ('docker.io', 'library/nginx', 'latest', 15, ?, 'a', 1, 2)").run(D1);
    old.close();
    const m = await db();
    assert.ok(columns('tags').includes('pinned'));
    assert.ok(columns('blobs').includes('pinned'));
    assert.equal(pinnedBlob(D1), 0);
    assert.deepEqual(await m.getTag(key), { digest: D1, mediaType: 'a', fetchedAt: 1, expiresAt: 2, pinned: false });
  });

});

describe('touch and flush', () => {
  test('touch() writes nothing until flush()', async () => {
    const m = await db();
    const t0 = clock;
    await m.recordBlob(D1, 10);
    await m.recordBlob(D2, 20);

    clock = t0 + 5000;
    m.touch(D1);
    clock = t0 + 7000;
    m.touch(D1);
    m.touch(D2);
    assert.deepEqual(blobRow(D1), { size: 10, createdAt: t0, lastAccess: t0, hits: 0 }, 'nothing written before flush');
    assert.deepEqual(blobRow(D2), { size: 20, createdAt: t0, lastAccess: t0, hits: 0 });

    await m.flush();
    assert.deepEqual(blobRow(D1), { size: 10, createdAt: t0, lastAccess: t0 + 7000, hits: 2 });
    assert.deepEqual(blobRow(D2), { size: 20, createdAt: t0, lastAccess: t0 + 7000, hits: 1 });

    // A second flush with nothing pending changes nothing; new touches add up.
    await m.flush();
    assert.equal(blobRow(D1)?.hits, 2);
    m.touch(D1);
    await m.flush();
    assert.equal(blobRow(D1)?.hits, 3);
  });

  test('close() flushes what is pending', async () => {
    const m = await db();
    await m.recordBlob(D1, 10);
    clock += 1000;
    m.touch(D1);
    assert.equal(blobRow(D1)?.hits, 0);
    await m.close();
    assert.deepEqual(blobRow(D1), { size: 10, createdAt: clock - 1000, lastAccess: clock, hits: 1 });
  });

  test('an older clock never moves last_access back', async () => {
    const m = await db();
    await m.recordBlob(D1, 10);
    const t0 = clock;
    clock -= HOUR;
    m.touch(D1);
    await m.flush();
    assert.deepEqual(blobRow(D1), { size: 10, createdAt: t0, lastAccess: t0, hits: 1 });
  });

  test('touching an unknown digest creates no row', async () => {
    const m = await db();
    m.touch(D2);
    await m.flush();
    assert.equal(await m.getBlob(D2), undefined);
    assert.equal(await m.count('blobs'), 0);
  });
});

describe('roll-ups and rate limits', () => {
  test('counts and budgets are batched, then summed per upstream and metric', async () => {
    const m = await db();
    m.bump('docker.io', 'pulls_served', 3);
    m.request('docker.io', 'manifest_get');
    m.rateLimit('docker.io', 'anonymous', { limit: 100, remaining: 42, windowSeconds: 21600, source: '1.2.3.4' }, clock);
    assert.equal(reader((c) => (c.prepare('SELECT count(*) AS n FROM rollups').get() as { n: number }).n), 0, 'nothing written before the flush');
    clock += HOUR;
    m.bump('docker.io', 'pulls_served', 2);
    m.rateLimit('docker.io', 'anonymous', { limit: 100, remaining: 41, windowSeconds: 21600 }, clock);
    await m.flush();
    assert.deepEqual(await m.rollupsSince(clock - 2 * HOUR), [
      { upstream: 'docker.io', metric: 'manifest_get', value: 1 },
      { upstream: 'docker.io', metric: 'pulls_served', value: 5 },
    ]);
    assert.deepEqual(await m.rollupsSince(clock), [{ upstream: 'docker.io', metric: 'pulls_served', value: 2 }], 'older hours are left out');
    assert.deepEqual(await m.rateLimits(), [{ upstream: 'docker.io', credential: 'anonymous', limit: 100, remaining: 41, windowSeconds: 21600, observedAt: clock }]);
  });
});

describe('hot rows', () => {
  test("a remembered row answers without a query for a second; another process's write shows after it", async () => {
    const m = await db();
    const key = { upstream: 'docker.io', repository: 'library/nginx', tag: 'latest', accept: 15 };
    await m.putTag(key, D1, 'a', HOUR);
    assert.equal((await m.getTag(key))?.digest, D1);
    // Another process repoints the tag.
    const other = new SqliteMetadataStore(path, { now: () => clock });
    await other.putTag(key, D2, 'a', HOUR);
    await other.close();
    const remembered = m.getTag(key);
    assert.ok(!(remembered instanceof Promise), 'a remembered row is answered synchronously');
    assert.equal((remembered as { digest: string }).digest, D1, 'within the second: the remembered row');
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await m.getTag(key))?.digest, D2, 'after it: read again');
  });

  test('with nothing committed since, a row older than a second is kept without a query; a write shows within the second after it', async () => {
    const key = { upstream: 'docker.io', repository: 'library/nginx', tag: 'latest', accept: 15 };
    const seed = new SqliteMetadataStore(path, { now: () => clock });
    await seed.putTag(key, D1, 'a', HOUR);
    await seed.close();
    let queries = 0;
    const store = new SqliteMetadataStore(path, { now: () => clock });
    const getTag = store.getTag.bind(store);
    store.getTag = (k) => (queries++, getTag(k));
    const m = new Metadata(store, { now: () => clock, flushEveryMs: 24 * HOUR });
    open.push(m);
    assert.equal((await m.getTag(key))?.digest, D1);
    await new Promise((r) => setTimeout(r, 1100));
    assert.equal((await m.getTag(key))?.digest, D1);
    assert.equal(queries, 1, 'a second later, nothing committed: the row is kept');
    const other = new SqliteMetadataStore(path, { now: () => clock });
    await other.putTag(key, D2, 'a', HOUR);
    await other.close();
    const started = Date.now();
    while ((await m.getTag(key))?.digest !== D2) {
      assert.ok(Date.now() - started < 1500, 'the write shows within the second');
      await new Promise((r) => setTimeout(r, 50));
    }
    assert.equal(queries, 2);
  });

  test("the SQLite write mark moves with this connection's commits and another's, and only with them", async () => {
    const store = new SqliteMetadataStore(path, { now: () => clock });
    const before = store.writeMark();
    assert.ok(before);
    await store.getBlob(D1);
    assert.equal(store.writeMark(), before, 'a read commits nothing');
    await store.recordBlob(D1, 10, undefined, 'v1');
    const own = store.writeMark();
    assert.notEqual(own, before);
    const other = new SqliteMetadataStore(path, { now: () => clock });
    await other.recordBlob(D2, 10, undefined, 'v1');
    await other.close();
    assert.notEqual(store.writeMark(), own);
    await store.close();
  });

  test('what this process writes is read back at once', async () => {
    const m = await db();
    assert.equal(await m.getBlob(D1), undefined);
    assert.equal(await m.isLinked('docker.io', 'library/nginx', D1), false);
    await m.recordManifest(D1, 'application/vnd.oci.image.manifest.v1+json', 10, { upstream: 'docker.io', repository: 'library/nginx' }, 'v1');
    assert.deepEqual(await m.getBlob(D1), { size: 10, version: 'v1', pinned: false });
    assert.equal(await m.isLinked('docker.io', 'library/nginx', D1), true);
    assert.deepEqual(await m.getManifest(D1), { mediaType: 'application/vnd.oci.image.manifest.v1+json', size: 10 });
    await m.forgetBlobs([D1]);
    assert.equal(await m.getBlob(D1), undefined);
    assert.equal(await m.getManifest(D1), undefined);
  });
});
