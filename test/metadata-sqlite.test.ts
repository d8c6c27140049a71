// SqliteMetadataStore on a real SQLite file in a temp dir: the MetadataStore contract,
// the same suite PostgreSQL runs.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';
import { metadataContract } from './contracts/metadata.contract.js';

metadataContract('SqliteMetadataStore', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-meta-contract-'));
  const clock = { now: 1_700_000_000_000 };
  const store = new SqliteMetadataStore(join(dir, 'mirror.db'), { now: () => clock.now });
  return {
    store,
    clock,
    close: async () => {
      await store.close();
      await rm(dir, { recursive: true, force: true });
    },
  };
});
