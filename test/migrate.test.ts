// `regmirror migrate --to postgres://…`: a SQLite mirror filled by real pulls (a
// multi-platform index, a pinned image, repeated hits for access times and roll-ups) is
// copied into PostgreSQL by the command as a user runs it; a mirror on the same data dir
// with the PostgreSQL config then serves every image with its upstream unreachable, and
// `cache ls` and `status` read what they read before. The refusals (a non-empty target,
// a password in the url, a config already on PostgreSQL, no SQLite file, an unreachable
// server) each exit non-zero with one line, and the password is never printed.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { multiPlatformImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { parseConfig, type Config } from '../src/config.js';
import { databaseFile } from '../src/store/data-dir.js';
import type { RowBatch } from '../src/store/metadata-store.js';
import { openMetadataStore, type MetadataBackend } from '../src/store/open-metadata.js';
import { MANIFEST_TYPES } from '../src/oci/manifest.js';
import { cli, get, sha256, startMirror, type CliResult } from './helpers.js';
import { startPostgres, type PgServer } from './support/postgres.js';

const ALL_ACCEPT = MANIFEST_TYPES.join(', ');
const HOUR = 3_600_000;
const PLATFORMS = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64', variant: 'v8' },
];

/** A TCP port that counts connections and drops them: an upstream nobody may reach. */
async function tripwire(): Promise<{ url: string; connections: () => number; close: () => Promise<void> }> {
  let connections = 0;
  const server: Server = createServer((socket) => {
    connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  return { url: `http://127.0.0.1:${port}`, connections: () => connections, close: () => new Promise<void>((resolve) => server.close(() => resolve())) };
}

/** A loopback port nothing listens on. */
async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** Every row of a store, table by table (what "the same metadata" means). */
async function rowsOf(backend: MetadataBackend): Promise<Record<string, unknown[]>> {
  const store = await openMetadataStore(backend);
  try {
    const rows: Record<string, unknown[]> = {};
    for await (const b of store.exportRows()) (rows[b.table] ??= []).push(...b.rows);
    return rows;
  } finally {
    await store.close();
  }
}

/** A refusal: non-zero, one line on stderr matching `re`, nothing on stdout. */
function refused(r: CliResult, re: RegExp): void {
  assert.notEqual(r.code, 0, r.stdout);
  assert.equal(r.stdout, '');
  assert.equal(r.stderr.trimEnd().split('\n').length, 1, r.stderr);
  assert.match(r.stderr.trimEnd(), re);
}

describe('regmirror migrate', () => {
  let pg: PgServer;
  let work: string;
  let dataDir: string;
  let sqliteConfig: string;
  let wire: Awaited<ReturnType<typeof tripwire>>;
  const images: FixtureImage[] = [];
  /** What `cache ls` and `status` said on SQLite, before any copy. */
  const onSqlite: { ls?: unknown; status?: Record<string, unknown> } = {};
  const sqlite = (): MetadataBackend => ({ kind: 'sqlite', path: databaseFile(dataDir) });
  const postgres = (url: string): MetadataBackend => ({ kind: 'postgres', url, password: pg.password, pool: 2 });
  const withPassword = (): Record<string, string> => ({ PGPASSWORD: pg.password });
  /** Every CLI run here: the password must never show, whatever the outcome. */
  const run = async (args: string[], env: Record<string, string> = {}): Promise<CliResult> => {
    const r = await cli(args, { PGPASSWORD: '', ...env });
    assert.ok(!r.stdout.includes(pg.password) && !r.stderr.includes(pg.password), `the password was printed by ${args.join(' ')}`);
    return r;
  };

  before(async () => {
    pg = await startPostgres();
    work = await mkdtemp(join(tmpdir(), 'regmirror-migrate-'));
    dataDir = join(work, 'data');
    wire = await tripwire();
    images.push(await multiPlatformImage({ name: 'library/multi', tag: '1', seed: 'migrate-multi', platforms: PLATFORMS, layerSizes: [200_000, 3000] }));
    images.push(await singleImage({ name: 'library/single', tag: '2', seed: 'migrate-single', layerSizes: [50_000] }));
    images.push(await multiPlatformImage({ name: 'team/dlist', tag: 'v3', seed: 'migrate-dlist', platforms: PLATFORMS, format: 'docker' }));
    await fillSqliteMirror();
    sqliteConfig = join(work, 'sqlite.yaml');
    await writeFile(sqliteConfig, `dataDir: ${dataDir}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${wire.url}\n`);
    assert.match((await run(['cache', 'pin', 'library/single:2', '--config', sqliteConfig])).stdout, /^pinned docker\.io\/library\/single:2 sha256:/);
    onSqlite.ls = JSON.parse((await run(['cache', 'ls', '--json', '--config', sqliteConfig])).stdout);
    onSqlite.status = JSON.parse((await run(['status', '--json', '--config', sqliteConfig])).stdout);
  });

  /** The way clients fill it: tag, every manifest by digest, every blob, then the tags again (hits). */
  async function fillSqliteMirror(): Promise<void> {
    const up = await FakeUpstream.start({ rateLimit: { limit: 100, remaining: 100 } });
    for (const img of images) up.addImage(img);
    const mirror = await startMirror({ dataDir, metadata: { kind: 'sqlite' }, upstreams: [{ name: 'docker.io', url: up.url, tagTtlMs: HOUR }], defaultUpstream: 'docker.io' });
    try {
      for (const img of images) {
        assert.equal((await get(`${mirror.url}/v2/${img.name}/manifests/${img.tag}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
        for (const d of img.manifests.keys()) assert.equal((await get(`${mirror.url}/v2/${img.name}/manifests/${d}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
        for (const d of img.blobs.keys()) assert.equal((await get(`${mirror.url}/v2/${img.name}/blobs/${d}`)).status, 200);
      }
      for (const img of images) {
        assert.equal((await get(`${mirror.url}/v2/${img.name}/manifests/${img.tag}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
        const [first] = img.blobs.keys();
        assert.equal((await get(`${mirror.url}/v2/${img.name}/blobs/${first}`)).status, 200);
      }
    } finally {
      await mirror.stop();
      await up.close();
    }
  }

  after(async () => {
    await wire?.close();
    await pg?.destroy();
    if (work) await rm(work, { recursive: true, force: true });
  });

  test('copies every row into an empty database; a mirror on it serves every image with no upstream request', async () => {
    const db = await pg.createDatabase('migrated');
    const source = await rowsOf(sqlite());
    assert.ok(source.blobs.length > 0 && source.tags.length > 0 && source.links.length > 0 && source.manifests.length > 0);
    assert.ok(source.rollups.length > 0 && source.rateLimits.length > 0, 'the pulls left roll-ups and a budget');
    assert.ok(source.subjectRollups.length > 0, 'and roll-ups per repository');

    const r = await run(['migrate', '--to', db.url, '--config', sqliteConfig], withPassword());
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stderr, '');
    const lines = r.stdout.trimEnd().split('\n');
    const names = { blobs: 'blobs', manifests: 'manifests', links: 'links', tags: 'tags', rateLimits: 'rate_limits', rollups: 'rollups', subjectRollups: 'subject_rollups' } as const;
    assert.deepEqual(
      lines.slice(0, -1).map((l) => l.replace(/\s+/g, ' ')),
      Object.entries(names).map(([k, n]) => `${n}: ${source[k].length} row${source[k].length === 1 ? '' : 's'} copied`),
    );
    assert.deepEqual(await rowsOf(postgres(db.url)), source, 'PostgreSQL holds exactly the SQLite rows');

    // The last line says what to put in the config, without the password; it parses as such.
    const last = lines.at(-1)!;
    assert.match(last, /^copied \d+ rows? to 127\.0\.0\.1:\d+\/migrated; /);
    const suggested = /(metadata: \{.*\})$/.exec(last)?.[1];
    assert.ok(suggested, last);
    const pgConfig = join(work, 'postgres.yaml');
    await writeFile(pgConfig, `dataDir: ${dataDir}\n${suggested}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${wire.url}\n`);
    const parsed: Config = parseConfig(`dataDir: ${dataDir}\n${suggested}\n`, { PGPASSWORD: pg.password });
    assert.deepEqual(parsed.metadata, { kind: 'postgres', url: db.url, password: pg.password, pool: 10, ssl: false });

    // The commands read the same images, pins and roll-ups from PostgreSQL.
    const ls = JSON.parse((await run(['cache', 'ls', '--json', '--config', pgConfig], withPassword())).stdout) as Array<{ image: string; pinned: boolean }>;
    assert.deepEqual(ls, onSqlite.ls);
    assert.deepEqual(ls.filter((i) => i.pinned).map((i) => i.image), ['docker.io/library/single:2']);
    const status = JSON.parse((await run(['status', '--json', '--config', pgConfig], withPassword())).stdout) as Record<string, unknown>;
    assert.deepEqual({ ...status, generatedAt: undefined }, { ...onSqlite.status, generatedAt: undefined });
    assert.ok((status.totals as { pullsServed: number }).pullsServed > 0, 'status shows the pulls served before the move');

    const mirror = await startMirror({
      dataDir,
      metadata: { kind: 'postgres', url: db.url, password: pg.password, pool: 4, ssl: false },
      upstreams: [{ name: 'docker.io', url: wire.url, tagTtlMs: HOUR }],
      defaultUpstream: 'docker.io',
    });
    try {
      for (const img of images) await assertServed(mirror.url, img);
    } finally {
      await mirror.stop();
    }
    assert.equal(wire.connections(), 0, 'the mirror on PostgreSQL asked no upstream');
    assert.ok(existsSync(databaseFile(dataDir)), 'the SQLite file is left as it was');
  });

  async function assertServed(url: string, img: FixtureImage): Promise<void> {
    const tag = await get(`${url}/v2/${img.name}/manifests/${img.tag}`, { headers: { accept: ALL_ACCEPT } });
    assert.equal(tag.status, 200, `${img.name}:${img.tag}`);
    assert.equal(tag.headers['docker-content-digest'], img.root.digest);
    assert.deepEqual(tag.body, img.root.bytes);
    for (const m of img.manifests.values()) {
      const r = await get(`${url}/v2/${img.name}/manifests/${m.digest}`, { headers: { accept: ALL_ACCEPT } });
      assert.equal(r.status, 200);
      assert.equal(r.headers['content-type'], m.mediaType);
      assert.equal(sha256(r.body), m.digest);
    }
    for (const [d, b] of img.blobs) {
      const r = await get(`${url}/v2/${img.name}/blobs/${d}`);
      assert.equal(r.status, 200, d);
      assert.equal(sha256(r.body), d);
      const h = await get(`${url}/v2/${img.name}/blobs/${d}`, { method: 'HEAD' });
      assert.equal(h.headers['content-length'], String(b.length));
    }
  }

  test('--json gives the counts; --password-file gives the password', async () => {
    const db = await pg.createDatabase('as_json');
    const file = join(work, 'pg-password');
    await writeFile(file, `${pg.password}\n`);
    const source = await rowsOf(sqlite());
    const r = await run(['migrate', '--to', db.url, '--password-file', file, '--json', '--config', sqliteConfig]);
    assert.equal(r.code, 0, r.stderr);
    const report = JSON.parse(r.stdout) as { target: string; tables: Record<string, number>; rows: number; metadata: { postgres: { url: string; password: string } } };
    assert.deepEqual(report.tables, {
      blobs: source.blobs.length,
      manifests: source.manifests.length,
      links: source.links.length,
      tags: source.tags.length,
      rate_limits: source.rateLimits.length,
      rollups: source.rollups.length,
      subject_rollups: source.subjectRollups.length,
    });
    assert.equal(report.rows, Object.values(source).reduce((n, rows) => n + rows.length, 0));
    assert.deepEqual(report.metadata, { postgres: { url: db.url, password: `file:${file}` } });
  });

  test('refuses a non-empty target in one line, and writes nothing to it', async () => {
    const db = await pg.createDatabase('taken');
    assert.equal((await run(['migrate', '--to', db.url, '--config', sqliteConfig], withPassword())).code, 0);
    const held = await rowsOf(postgres(db.url));
    const r = await run(['migrate', '--to', db.url, '--config', sqliteConfig], withPassword());
    refused(r, /^regmirror migrate: 127\.0\.0\.1:\d+\/taken already holds regmirror metadata \(blobs has \d+ rows?\); migrate copies only into an empty database, and wrote nothing$/);
    assert.deepEqual(await rowsOf(postgres(db.url)), held);
  });

  test('refuses a url with a password in it, without showing it', async () => {
    const db = await pg.createDatabase('no_password_in_url');
    const withSecret = db.url.replace('regmirror@', `regmirror:${pg.password}@`);
    const r = await run(['migrate', '--to', withSecret, '--config', sqliteConfig], withPassword());
    refused(r, /^regmirror migrate: --to must not hold a password/);
  });

  test('refuses a config already on PostgreSQL', async () => {
    const db = await pg.createDatabase('already');
    const config = join(work, 'on-postgres.yaml');
    await writeFile(config, `dataDir: ${dataDir}\nmetadata:\n  postgres:\n    url: ${db.url}\n    password: \${PGPASSWORD}\n`);
    const r = await run(['migrate', '--to', db.url, '--config', config], withPassword());
    refused(r, /^regmirror migrate: the config already keeps its metadata in PostgreSQL \(127\.0\.0\.1:\d+\/already\)/);
  });

  test('refuses a data dir with no SQLite database, and creates none', async () => {
    const empty = join(work, 'empty');
    const config = join(work, 'empty.yaml');
    await writeFile(config, `dataDir: ${empty}\n`);
    const r = await run(['migrate', '--to', pg.url, '--config', config], withPassword());
    refused(r, /^regmirror migrate: no SQLite metadata to copy: .*mirror\.db does not exist/);
    assert.equal(existsSync(databaseFile(empty)), false);
  });

  test('an unreachable database: one line naming its host and port', async () => {
    const port = await closedPort();
    const r = await run(['migrate', '--to', `postgres://regmirror@127.0.0.1:${port}/regmirror`, '--config', sqliteConfig], withPassword());
    refused(r, new RegExp(`^regmirror migrate: cannot connect to PostgreSQL at 127\\.0\\.0\\.1:${port}/regmirror: `));
  });

  test('refuses to run without a password', async () => {
    const r = await run(['migrate', '--to', pg.url, '--config', sqliteConfig]);
    refused(r, /^regmirror migrate: no password for the target: set PGPASSWORD or give --password-file FILE$/);
  });
});

describe('SQLite exportRows', () => {
  const D = (n: number) => `sha256:${String(n).repeat(64)}`;
  const key = (tag: string) => ({ upstream: 'docker.io', repository: 'library/x', tag, accept: 1 });
  const INDEX = 'application/vnd.oci.image.index.v1+json';

  test('reads one snapshot: rows written by another process mid-export are not in it', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-snapshot-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const backend: MetadataBackend = { kind: 'sqlite', path: join(dir, 'm.db') };
    const exporter = await openMetadataStore(backend);
    const writer = await openMetadataStore(backend);
    t.after(async () => {
      await exporter.close();
      await writer.close();
    });
    await writer.recordBlob(D(1), 10);
    await writer.putTag(key('a'), D(1), INDEX, HOUR);

    const seen: RowBatch[] = [];
    for await (const b of exporter.exportRows()) {
      seen.push(b);
      if (b.table === 'blobs') {
        // Between the blobs and the tags, as a server beside the copy would.
        await writer.recordBlob(D(2), 20);
        await writer.putTag(key('b'), D(2), INDEX, HOUR);
      }
    }
    assert.deepEqual(seen.map((b) => [b.table, b.rows.length]), [['blobs', 1], ['tags', 1]]);
    assert.equal(await exporter.count('tags'), 2, 'the snapshot ended with the export');
  });

  test('a reader that stops early ends the read transaction', async (t) => {
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-snapshot-'));
    t.after(() => rm(dir, { recursive: true, force: true }));
    const backend: MetadataBackend = { kind: 'sqlite', path: join(dir, 'm.db') };
    const exporter = await openMetadataStore(backend);
    const other = await openMetadataStore(backend);
    t.after(async () => {
      await exporter.close();
      await other.close();
    });
    await exporter.recordBlob(D(1), 10);
    const reader = exporter.exportRows()[Symbol.asyncIterator]();
    assert.equal((await reader.next()).done, false);
    await reader.return?.();
    // Inside a transaction still open this write would stay uncommitted, unseen by another connection.
    await exporter.recordBlob(D(2), 20);
    assert.equal(await other.count('blobs'), 2);
  });
});
