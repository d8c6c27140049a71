// The metadata backend the tests run against: SQLite, or PostgreSQL when
// REGMIRROR_TEST_METADATA=postgres (npm test runs the end-to-end, crash, eviction,
// export/import and rate-limit files a second time that way). On PostgreSQL one cluster
// serves the whole test process, and each data dir gets a database of its own, so that a
// mirror restarted on the same data dir finds its metadata, as it would on SQLite.
import { after } from 'node:test';
import type { MetadataConfig } from '../../src/config.js';
import { databaseFile } from '../../src/store/data-dir.js';
import type { MetadataStore } from '../../src/store/metadata-store.js';
import { openMetadataStore } from '../../src/store/open-metadata.js';
import { startPostgres, type PgServer } from './postgres.js';

export const TEST_METADATA: 'sqlite' | 'postgres' = process.env.REGMIRROR_TEST_METADATA === 'postgres' ? 'postgres' : 'sqlite';

let cluster: Promise<PgServer> | undefined;
const databases = new Map<string, Promise<{ url: string }>>();

// The cluster would keep the test process alive: it goes when the file's tests are done.
after(async () => {
  if (cluster) await (await cluster.catch(() => undefined))?.destroy();
});

/** The one cluster of this test process, started on first use. */
export function testPostgres(): Promise<PgServer> {
  cluster ??= startPostgres();
  return cluster;
}

/** The metadata config for a mirror on `dataDir`, on the backend under test. */
export async function metadataConfigFor(dataDir: string): Promise<MetadataConfig> {
  if (TEST_METADATA === 'sqlite') return { kind: 'sqlite' };
  const pg = await testPostgres();
  let db = databases.get(dataDir);
  if (!db) {
    db = pg.createDatabase(`m${databases.size + 1}`);
    databases.set(dataDir, db);
  }
  return { kind: 'postgres', url: (await db).url, password: pg.password, pool: 4, ssl: false };
}

/** The same as YAML lines for a config file (nothing on SQLite, the default). */
export async function metadataYamlFor(dataDir: string): Promise<string> {
  const m = await metadataConfigFor(dataDir);
  if (m.kind === 'sqlite') return '';
  return `metadata:\n  postgres:\n    url: ${m.url}\n    password: ${JSON.stringify(m.password)}\n    pool: ${m.pool}\n`;
}

/** A second connection to the metadata of `dataDir`, as another process would open it. */
export async function openTestStore(dataDir: string): Promise<MetadataStore> {
  const m = await metadataConfigFor(dataDir);
  return openMetadataStore(m.kind === 'sqlite' ? { kind: 'sqlite', path: databaseFile(dataDir) } : m);
}
