// Runs the ContentStore contract on FsBlobStore in a temp data dir, plus what is the file
// system's own: its layout, and the spool's files in <data>/tmp.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { DigestMismatch } from '../src/errors.js';
import { openBlobStorage } from '../src/store/blob-storage.js';
import { blobsDir, spoolDir } from '../src/store/data-dir.js';
import { FsBlobStore } from '../src/store/fs/fs-blob-store.js';
import { Spool } from '../src/store/spool.js';
import { bytesOf, contentStoreContract, digestOf } from './contracts/blob-store.contract.js';

async function makeFsStore() {
  const dataDir = await mkdtemp(join(tmpdir(), 'regmirror-blobs-'));
  const spool = new Spool(spoolDir(dataDir));
  await spool.init();
  const store = new FsBlobStore(blobsDir(dataDir), spoolDir(dataDir), spool);
  await store.init();
  return { store, spool, dataDir, tmp: spoolDir(dataDir), cleanup: () => rm(dataDir, { recursive: true, force: true }) };
}

contentStoreContract('FsBlobStore', makeFsStore);

test('openBlobStorage opens a file store over the data dir', async (t) => {
  const dataDir = join(await mkdtemp(join(tmpdir(), 'regmirror-blobs-')), 'data');
  t.after(() => rm(join(dataDir, '..'), { recursive: true, force: true }));
  const { content, spool } = await openBlobStorage({ dataDir });
  const bytes = Buffer.from('opened');
  await content.commit(await spool.create(digestOf(bytes)).then(async (f) => (await f.write(bytes), f)));
  assert.ok(content instanceof FsBlobStore);
  assert.ok(existsSync(content.pathFor(digestOf(bytes))));
});

test('FsBlobStore lays blobs out as blobs/sha256/<first two hex>/<hex>', async (t) => {
  const { store, dataDir, cleanup } = await makeFsStore();
  t.after(cleanup);
  const bytes = Buffer.from('hello');
  const d = digestOf(bytes);
  const hex = d.slice('sha256:'.length);
  assert.equal(store.pathFor(d), join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex));
  const { version } = await store.put(d, bytes);
  assert.ok((await readFile(join(dataDir, 'blobs', 'sha256', '2c', hex))).equals(bytes));
  assert.equal(version, String((await stat(store.pathFor(d))).mtimeMs), 'the version is the mtime');
});

test('FsBlobStore gives a blob committed again a new version (its file\'s new mtime)', async (t) => {
  const { store, spool, cleanup } = await makeFsStore();
  t.after(cleanup);
  const bytes = Buffer.from('committed twice');
  const d = digestOf(bytes);
  const first = await store.put(d, bytes);
  await store.remove(d);
  await new Promise((r) => setTimeout(r, 5));
  const f = await spool.create(d, bytes.length);
  await f.write(bytes);
  const second = await store.commit(f);
  assert.notEqual(second.version, first.version);
  assert.equal((await store.stat(d))?.version, second.version);
});

test('spool files live in <data>/tmp; a commit takes the file out of it, a discard removes it', async (t) => {
  const { store, spool, tmp, cleanup } = await makeFsStore();
  t.after(cleanup);
  const bytes = bytesOf('spool', 100_000);
  const f = await spool.create(digestOf(bytes), bytes.length);
  await f.write(bytes);
  assert.equal((await readdir(tmp)).length, 1);
  await store.commit(f);
  assert.deepEqual(await readdir(tmp), [], 'renamed into blobs/');
  await f.discard();
  const g = await spool.create(digestOf(bytes));
  await g.discard();
  await g.discard();
  assert.deepEqual(await readdir(tmp), []);
});

test('a failed commit leaves nothing in tmp/ or blobs/', async (t) => {
  const { store, spool, tmp, dataDir, cleanup } = await makeFsStore();
  t.after(cleanup);
  const bytes = bytesOf('wrong', 10_000);
  const d = digestOf(bytes);
  const f = await spool.create(d, bytes.length);
  await f.write(Buffer.alloc(bytes.length));
  await assert.rejects(store.commit(f), DigestMismatch);
  assert.deepEqual(await readdir(tmp), []);
  assert.equal(existsSync(store.pathFor(d)), false);
  assert.deepEqual(await readdir(join(dataDir, 'blobs', 'sha256')), []);
});

test('holds are links in tmp/: commitAndHold keeps the spool file, hold links the published one, release removes them', async (t) => {
  const { store, spool, tmp, cleanup } = await makeFsStore();
  t.after(cleanup);
  const a = Buffer.from('held a');
  const b = Buffer.from('held b');
  await store.put(digestOf(a), a);
  const held = (await store.hold(digestOf(a), a.length))!;
  const f = await spool.create(digestOf(b), b.length);
  await f.write(b);
  const { held: kept } = await store.commitAndHold(f);
  assert.equal((await readdir(tmp)).length, 2);
  assert.equal((await stat(store.pathFor(digestOf(b)))).nlink, 2, 'the spool file is linked, not copied');
  await Promise.all([held.release(), kept.release(), f.discard()]);
  assert.deepEqual(await readdir(tmp), []);
  assert.ok((await readFile(store.pathFor(digestOf(b)))).equals(b));
});

test('Spool.sweep removes leftover spool files and nothing published', async (t) => {
  const { store, spool, tmp, cleanup } = await makeFsStore();
  t.after(cleanup);
  const published = Buffer.from('published');
  await store.put(digestOf(published), published);
  const large = bytesOf('leftover', 100_000);
  const leftovers = [await spool.create(digestOf(large), large.length), await spool.create(digestOf(large))];
  await leftovers[0].write(large.subarray(0, 1000));
  assert.equal((await readdir(tmp)).length, 2);
  assert.equal(await spool.sweep(), 2);
  assert.deepEqual(await readdir(tmp), []);
  assert.ok((await store.read(digestOf(published))).equals(published));
  assert.equal(await spool.sweep(), 0);
  for (const x of leftovers) await x.discard();
});

test('Spool.sweep on a data dir without tmp/ removes nothing', async (t) => {
  const dataDir = await mkdtemp(join(tmpdir(), 'regmirror-blobs-'));
  t.after(() => rm(dataDir, { recursive: true, force: true }));
  assert.equal(await new Spool(spoolDir(dataDir)).sweep(), 0);
});

test('readiness probes leave no file behind', async (t) => {
  const { store, spool, tmp, dataDir, cleanup } = await makeFsStore();
  t.after(cleanup);
  await spool.checkWritable();
  await store.checkWritable();
  assert.deepEqual(await readdir(tmp), []);
  assert.deepEqual(await readdir(join(dataDir, 'blobs')), ['sha256']);
});
