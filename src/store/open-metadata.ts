// Picks the metadata backend a config names. The only module above the backends that
// knows their classes: everything else gets a MetadataStore (wrapped in Metadata).
import type { MetadataStore, StoreOptions } from './metadata-store.js';
import type { PostgresOptions } from './postgres/metadata-postgres.js';
import { SqliteMetadataStore } from './sqlite/metadata-sqlite.js';

export type { PostgresOptions } from './postgres/metadata-postgres.js';
/** host:port/database of a postgres:// url, for messages. */
export { describeTarget } from './postgres/describe-target.js';

export type MetadataBackend = { kind: 'sqlite'; path: string } | ({ kind: 'postgres' } & PostgresOptions);

/** Opens (and migrates) the backend; a database that cannot be reached fails here, in one line naming it. */
export async function openMetadataStore(backend: MetadataBackend, opts: StoreOptions = {}): Promise<MetadataStore> {
  if (backend.kind === 'sqlite') return new SqliteMetadataStore(backend.path, opts);
  const { kind: _, ...pg } = backend;
  // Loaded only when configured: a node-local mirror on SQLite does not hold pg in memory.
  const { PostgresMetadataStore } = await import('./postgres/metadata-postgres.js');
  return PostgresMetadataStore.connect({ ...pg, ...opts });
}
