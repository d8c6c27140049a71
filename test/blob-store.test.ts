// Runs the BlobStore contract on FsBlobStore in a temp data dir, plus its on-disk layout.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { parseDigest } from '../src/oci/digest.js';
import { FsBlobStore } from '../src/store/blob-store.js';
import { blobStoreContract } from './contracts/blob-store.contract.js';

async function makeFsStore() {
  const dataDir = await mkdtemp(join(tmpdir(), 'regmirror-blobs-'));
  const store = new FsBlobStore(dataDir);
  await store.init();
  return { store, dataDir, cleanup: () => rm(dataDir, { recursive: true, force: true }) };
}

blobStoreContract('FsBlobStore', makeFsStore);

test('FsBlobStore lays blobs out as blobs/sha256/<first two hex>/<hex>', async (t) => {
  const { store, dataDir, cleanup } = await makeFsStore();
  t.after(cleanup);
  const bytes = Buffer.from('hello');
  const hex = createHash('sha256').update(bytes).digest('hex');
  const d = parseDigest(`sha256:${hex}`);
  assert.equal(store.pathFor(d), join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
  await store.put(d, bytes);
  assert.ok((await readFile(join(dataDir, 'blobs', 'sha256', '2c', hex))).equals(bytes));
});

test('FsBlobStore temp files live in <data>/tmp', async (t) => {
  const { store, dataDir, cleanup } = await makeFsStore();
  t.after(cleanup);
  const tmp = await store.createTemp(parseDigest(`sha256:${'0'.repeat(64)}`));
  assert.equal(join(tmp.path, '..'), join(dataDir, 'tmp'));
  assert.equal(existsSync(tmp.path), true);
  await tmp.discard();
});

test('FsBlobStore.sweepTmp on a data dir without tmp/ removes nothing', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'regmirror-blobs-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  assert.equal(await new FsBlobStore(dataDir).sweepTmp(), 0);
});
