// Picks the metadata backend a config names. The only module above the backends that
// knows their classes: everything else gets a MetadataStore (wrapped in Metadata).
import type { MetadataStore, StoreOptions } from './metadata-store.js';
import { SqliteMetadataStore } from './sqlite/metadata-sqlite.js';

export type MetadataBackend = { kind: 'sqlite'; path: string };

export async function openMetadataStore(backend: MetadataBackend, opts: StoreOptions = {}): Promise<MetadataStore> {
  return new SqliteMetadataStore(backend.path, opts);
}
