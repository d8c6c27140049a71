// The data dir's layout, in one place: every path under it is built in src/store/.
//
//   <data>/mirror.db               SQLite (store/metadata.ts)
//   <data>/blobs/sha256/ab/<hex>   published blobs and manifest bodies (store/fs/)
//   <data>/tmp/<pid>-<random>      the spool: downloads and imports in progress, holds
//                                  (store/spool.ts); swept at start-up unless <pid> runs
import { existsSync } from 'node:fs';
import { join } from 'node:path';

/** The SQLite file of the metadata. */
export function databaseFile(dataDir: string): string {
  return join(dataDir, 'mirror.db');
}

/** Whether a mirror has ever opened its SQLite metadata here: a data dir without it holds no cache yet. */
export function hasDatabase(dataDir: string): boolean {
  return existsSync(databaseFile(dataDir));
}

/** Where the file store keeps published blobs. */
export function blobsDir(dataDir: string): string {
  return join(dataDir, 'blobs');
}

/** Where the spool's files live: on local disk, whatever stores the published blobs. */
export function spoolDir(dataDir: string): string {
  return join(dataDir, 'tmp');
}
