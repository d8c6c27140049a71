// A data dir holding N small blobs, for the start-up bench: files written straight into the
// file store's layout with bounded concurrency, rows inserted in one transaction. Far faster
// than publishing each (a million blobs in a minute or two, not hours).
import { createHash } from 'node:crypto';
import { mkdir, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import Database from 'better-sqlite3';
import { blobsDir, databaseFile, spoolDir } from '../src/store/data-dir.js';
import { FsBlobStore } from '../src/store/fs/fs-blob-store.js';
import { Spool } from '../src/store/spool.js';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';
import { parseDigest, type Digest } from '../src/oci/digest.js';
import { ALL_TYPES, OCI_MANIFEST } from '../src/oci/manifest.js';

const FILE_CONCURRENCY = 64;
const UPSTREAM = 'docker.io';
const REPOSITORY = 'library/app';

export interface Filled {
  /** The manifest tagged v1 (blob 0): what the bench pulls warm. */
  manifestDigest: string;
  bytes: number;
}

function contentOf(i: number): Buffer {
  if (i > 0) return Buffer.from(`blob ${i}`);
  return Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: 'sha256:' + '0'.repeat(64), size: 1 }, layers: [] }));
}

function digestOf(bytes: Buffer): Digest {
  return parseDigest('sha256:' + createHash('sha256').update(bytes).digest('hex'));
}

async function writeFiles(store: FsBlobStore, n: number): Promise<void> {
  // The 256 prefix directories first, then each worker takes the next index: no mkdir per file.
  for (let p = 0; p < 256; p++) await mkdir(join(store.pathFor(parseDigest('sha256:' + p.toString(16).padStart(2, '0') + '0'.repeat(62))), '..'), { recursive: true });
  let next = 0;
  const worker = async () => {
    for (let i = next++; i < n; i = next++) {
      const bytes = contentOf(i);
      await writeFile(store.pathFor(digestOf(bytes)), bytes);
    }
  };
  await Promise.all(Array.from({ length: FILE_CONCURRENCY }, worker));
}

/** Rows as pulls leave them: unpinned, linked to one repository, last used in index order (blob 0 most recently). */
function insertRows(file: string, n: number): Filled {
  const db = new Database(file);
  const now = Date.now();
  let manifestDigest = '';
  let bytes = 0;
  const blob = db.prepare('INSERT INTO blobs (digest, size, created_at, last_access, hits, pinned) VALUES (?, ?, ?, ?, 0, 0)');
  const link = db.prepare('INSERT INTO links (upstream, repository, digest) VALUES (?, ?, ?)');
  db.transaction(() => {
    for (let i = 0; i < n; i++) {
      const content = contentOf(i);
      const digest = digestOf(content);
      blob.run(digest, content.length, now - n, i === 0 ? now : now - n + i);
      link.run(UPSTREAM, REPOSITORY, digest);
      bytes += content.length;
      if (i === 0) manifestDigest = digest;
    }
    db.prepare('INSERT INTO manifests (digest, media_type) VALUES (?, ?)').run(manifestDigest, OCI_MANIFEST);
    db.prepare('INSERT INTO tags (upstream, repository, tag, accept, digest, media_type, fetched_at, expires_at, pinned) VALUES (?, ?, ?, ?, ?, ?, ?, ?, 1)').run(UPSTREAM, REPOSITORY, 'v1', ALL_TYPES, manifestDigest, OCI_MANIFEST, now, now);
  })();
  db.close();
  return { manifestDigest, bytes };
}

/** Fills `dataDir` (empty) with n blobs, rows and files. */
export async function fill(dataDir: string, n: number): Promise<Filled> {
  const store = new FsBlobStore(blobsDir(dataDir), spoolDir(dataDir), new Spool(spoolDir(dataDir)));
  await store.init();
  // Opened once by the store itself, so the schema is the one regmirror migrates to.
  await new SqliteMetadataStore(databaseFile(dataDir)).close();
  await writeFiles(store, n);
  return insertRows(databaseFile(dataDir), n);
}
