// Opens the blob side of a data dir: the spool and the content store. The composition
// root gets both from here, so that nothing above store/ names a backend.
import { mkdir } from 'node:fs/promises';
import type { ContentStore } from './content-store.js';
import { blobsDir, spoolDir } from './data-dir.js';
import { FsBlobStore } from './fs/fs-blob-store.js';
import type { S3StoreOptions } from './s3/s3-content-store.js';
import { Spool } from './spool.js';

export type { S3StoreOptions } from './s3/s3-content-store.js';

export interface BlobStorage {
  /** Published blobs. */
  content: ContentStore;
  /** Local files for blobs being written and verified. */
  spool: Spool;
  /** Lets go of what the store holds open (an S3 client's connections). */
  close(): Promise<void>;
}

export interface BlobStorageOptions {
  /** The data dir: the spool is always in it, and so are the published blobs of the file store. */
  dataDir: string;
  /** Published blobs in this bucket instead of the data dir. */
  s3?: S3StoreOptions;
}

/** Creates what is missing and opens both. */
export async function openBlobStorage(opts: BlobStorageOptions): Promise<BlobStorage> {
  await mkdir(opts.dataDir, { recursive: true });
  const spool = new Spool(spoolDir(opts.dataDir));
  await spool.init();
  if (opts.s3) {
    // Loaded only when configured: the AWS SDK is a tenth of a node-local mirror's memory.
    const { S3ContentStore } = await import('./s3/s3-content-store.js');
    const content = new S3ContentStore(opts.s3, spool);
    return { content, spool, close: async () => content.close() };
  }
  const content = new FsBlobStore(blobsDir(opts.dataDir), spoolDir(opts.dataDir), spool);
  await content.init();
  return { content, spool, close: async () => undefined };
}
