// Start-up with a big store: a data dir holding N blobs (default 100,000: rows and files),
// then the time from starting `regmirror serve` to the first warm manifest answered.
// Run: node --import tsx bench/startup.ts [N]
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { blobsDir, databaseFile, spoolDir } from '../src/store/data-dir.js';
import { FsBlobStore } from '../src/store/fs/fs-blob-store.js';
import { Spool } from '../src/store/spool.js';
import type { ImportRecord } from '../src/store/metadata-store.js';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';
import { parseDigest } from '../src/oci/digest.js';
import { ALL_TYPES, OCI_MANIFEST } from '../src/oci/manifest.js';

const N = Number(process.argv[2] ?? 100_000);
const MAIN = new URL('../src/main.ts', import.meta.url).pathname;

async function fill(dataDir: string): Promise<string> {
  // Written as files straight into the file store's layout: far faster than committing each.
  const store = new FsBlobStore(blobsDir(dataDir), spoolDir(dataDir), new Spool(spoolDir(dataDir)));
  await store.init();
  const db = new SqliteMetadataStore(databaseFile(dataDir));
  const link = { upstream: 'docker.io', repository: 'library/app' };
  let manifestDigest = '';
  const batch: Array<Promise<void>> = [];
  for (let i = 0; i < N; i++) {
    const bytes = Buffer.from(i === 0 ? JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: 'sha256:' + '0'.repeat(64), size: 1 }, layers: [] }) : `blob ${i}`);
    const digest = parseDigest('sha256:' + createHash('sha256').update(bytes).digest('hex'));
    const path = store.pathFor(digest);
    batch.push(mkdir(join(path, '..'), { recursive: true }).then(() => writeFile(path, bytes)));
    if (batch.length >= 256) await Promise.all(batch.splice(0));
    if (i === 0) manifestDigest = digest;
  }
  await Promise.all(batch);
  // One import-shaped transaction; the pins are then taken off again, as pulled content has none.
  const record: ImportRecord = { blobs: [], tags: [{ key: { ...link, tag: 'v1', accept: ALL_TYPES }, digest: manifestDigest, mediaType: OCI_MANIFEST }] };
  for (let i = 0; i < N; i++) {
    const bytes = Buffer.from(i === 0 ? JSON.stringify({ schemaVersion: 2, mediaType: OCI_MANIFEST, config: { digest: 'sha256:' + '0'.repeat(64), size: 1 }, layers: [] }) : `blob ${i}`);
    const digest = 'sha256:' + createHash('sha256').update(bytes).digest('hex');
    record.blobs.push({ digest, size: bytes.length, link, ...(i === 0 ? { mediaType: OCI_MANIFEST } : {}) });
  }
  await db.recordImport(record);
  await db.setBlobPins([], record.blobs.map((b) => b.digest));
  await db.close();
  return manifestDigest;
}

async function main(): Promise<void> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-startup-'));
  try {
    const t0 = performance.now();
    const digest = await fill(join(dir, 'data'));
    console.log(`filled ${N} blobs in ${((performance.now() - t0) / 1000).toFixed(1)} s`);
    const config = join(dir, 'mirror.yaml');
    await writeFile(config, `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\nlog:\n  level: info\nstorage:\n  maxSize: 100GiB\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: http://127.0.0.1:9\n`);
    for (let round = 1; round <= 3; round++) {
      const started = performance.now();
      const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'], env: { ...process.env } });
      let log = '';
      const url = await new Promise<string>((resolve, reject) => {
        child.stderr.on('data', (c: Buffer) => {
          log += c.toString();
          const m = /"url":"([^"]+)"/.exec(log);
          if (m) resolve(m[1]);
        });
        child.once('exit', () => reject(new Error(log)));
      });
      const res = await request(`${url}/v2/library/app/manifests/v1`);
      const got = res.headers['docker-content-digest'];
      await res.body.dump();
      const ms = performance.now() - started;
      console.log(`round ${round}: process start to first warm manifest ${ms.toFixed(0)} ms (status ${res.statusCode}, ${got === digest ? 'right digest' : 'WRONG digest'})`);
      child.kill('SIGKILL');
      await new Promise((r) => child.once('exit', r));
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

await main();
