// S3ContentStore on a real Ceph RGW (one throwaway cluster for this file, a fresh bucket
// per test): the ContentStore contract, then what only an object store brings — its key
// layout under a prefix, multipart uploads read back across part boundaries, a source
// whose object goes, a multipart upload cut half way, listing across pages, and a store
// that refuses or cannot be reached.
import assert from 'node:assert/strict';
import { createHash, randomBytes } from 'node:crypto';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { connect, createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ListMultipartUploadsCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import pLimit from 'p-limit';
import { BlobGone, StoreFull } from '../src/errors.js';
import { openBlobStorage } from '../src/store/blob-storage.js';
import { S3ContentStore, type S3StoreOptions } from '../src/store/s3/s3-content-store.js';
import { Spool } from '../src/store/spool.js';
import { bytesOf, contentStoreContract, digestOf, drain } from './contracts/blob-store.contract.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';

const MiB = 1024 * 1024;

describe('S3ContentStore on Ceph RGW', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  before(async () => {
    rgw = await startRgw();
  });
  after(async () => {
    await rgw?.destroy();
  });

  function credentials() {
    return { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey };
  }

  /** A store on a fresh bucket, under a prefix, with its spool in a temp dir. */
  async function makeS3Store(opts: Partial<S3StoreOptions> = {}) {
    const bucket = await rgw.createBucket(`t-${randomBytes(6).toString('hex')}`);
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-s3-'));
    const spool = new Spool(join(dir, 'tmp'));
    await spool.init();
    const store = new S3ContentStore({ bucket, prefix: 'mirror', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: credentials(), ...opts }, spool);
    const cleanup = async () => {
      store.close();
      await rm(dir, { recursive: true, force: true });
    };
    return { store, spool, bucket, spoolDir: join(dir, 'tmp'), cleanup };
  }

  /** A plain client on the gateway, as an operator would have. */
  function rawClient(): S3Client {
    return new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: credentials() });
  }

  async function keys(bucket: string): Promise<string[]> {
    const client = rawClient();
    try {
      const page = await client.send(new ListObjectsV2Command({ Bucket: bucket }));
      return (page.Contents ?? []).map((o) => o.Key!).sort();
    } finally {
      client.destroy();
    }
  }


  contentStoreContract('S3ContentStore on Ceph RGW', () => makeS3Store());

  test('openBlobStorage with s3 options opens the S3 store, the spool staying in the data dir', async (t) => {
    const bucket = await rgw.createBucket(`t-${randomBytes(6).toString('hex')}`);
    const dataDir = join(await mkdtemp(join(tmpdir(), 'regmirror-s3-')), 'data');
    t.after(() => rm(join(dataDir, '..'), { recursive: true, force: true }));
    const storage = await openBlobStorage({ dataDir, s3: { bucket, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: credentials() } });
    t.after(() => storage.close());
    assert.ok(storage.content instanceof S3ContentStore);
    const bytes = Buffer.from('opened');
    const f = await storage.spool.create(digestOf(bytes), bytes.length);
    await f.write(bytes);
    assert.equal((await readdir(join(dataDir, 'tmp'))).length, 1, 'spooled in <data>/tmp');
    await storage.content.commit(f);
    await f.discard();
    assert.deepEqual(await readdir(dataDir), ['tmp'], 'no blobs/ in the data dir');
    assert.deepEqual(await keys(bucket), [storage.content.keyFor(digestOf(bytes))]);
  });

  test('S3ContentStore lays blobs out as <prefix>/blobs/sha256/<first two hex>/<hex>, and list() skips other keys', async (t) => {
    const { store, bucket, cleanup } = await makeS3Store({ prefix: '/team/mirror/' });
    t.after(cleanup);
    const bytes = Buffer.from('hello');
    const d = digestOf(bytes);
    const hex = d.slice('sha256:'.length);
    assert.equal(store.keyFor(d), `team/mirror/blobs/sha256/2c/${hex}`);
    await store.put(d, bytes);
    assert.deepEqual(await keys(bucket), [`team/mirror/blobs/sha256/2c/${hex}`]);
    const client = rawClient();
    t.after(() => client.destroy());
    for (const Key of ['team/mirror/blobs/sha256/2c/not-a-digest', `team/mirror/blobs/sha256/ff/${hex}`, 'team/mirror/other', `elsewhere/blobs/sha256/2c/${hex}`]) {
      await client.send(new PutObjectCommand({ Bucket: bucket, Key, Body: 'x' }));
    }
    const listed: string[] = [];
    for await (const x of store.list()) listed.push(x);
    assert.deepEqual(listed, [d]);
  });

  test('the version is the ETag: the same bytes committed again keep it (so the contract does not ask for a new one)', async (t) => {
    const { store, cleanup } = await makeS3Store();
    t.after(cleanup);
    const bytes = Buffer.from('same bytes');
    const d = digestOf(bytes);
    const first = await store.put(d, bytes);
    assert.equal(first.version, createHash('md5').update(bytes).digest('hex'), 'a single-part ETag is the MD5');
    await store.remove(d);
    assert.equal((await store.put(d, bytes)).version, first.version);
  });

  test('two prefixes in one bucket are two stores', async (t) => {
    const a = await makeS3Store({ prefix: 'a' });
    t.after(a.cleanup);
    const b = new S3ContentStore({ bucket: a.bucket, prefix: 'b', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: credentials() }, a.spool);
    t.after(() => b.close());
    const bytes = Buffer.from('only in a');
    await a.store.put(digestOf(bytes), bytes);
    assert.equal(await b.stat(digestOf(bytes)), undefined);
    for await (const d of b.list()) assert.fail(`b lists ${d}`);
  });

  test('a spool larger than the part size goes up in parts and reads back whole, and in ranges across part and chunk boundaries', async (t) => {
    const partSize = 5 * MiB;
    const { store, spool, spoolDir, cleanup } = await makeS3Store({ partSize });
    t.after(cleanup);
    const big = bytesOf('multipart', 3 * partSize + 4321); // four parts, two 8 MiB read chunks
    const d = digestOf(big);
    const f = await spool.create(d, big.length);
    for (let off = 0; off < big.length; off += MiB) await f.write(big.subarray(off, off + MiB));
    const { version } = await store.commit(f);
    assert.match(version, /-4$/, `a multipart ETag names its part count: ${version}`);
    assert.deepEqual(await store.stat(d), { size: big.length, version });
    await f.discard();
    assert.deepEqual(await readdir(spoolDir), [], 'the spool file is the only local copy, and its creator discards it');
    assert.ok((await drain(store.source(d, big.length))).equals(big), 'whole');
    for (const [start, end] of [
      [partSize - 1, partSize],
      [partSize - 3, 2 * partSize + 3],
      [8 * MiB - 1, 8 * MiB],
      [8 * MiB - 10, 15 * MiB + 10],
      [3 * partSize - 1, big.length - 1],
      [big.length - 1, big.length - 1],
    ]) {
      const got = await drain(store.source(d, big.length, { start, end }), 300 * 1024);
      assert.ok(got.equals(big.subarray(start, end + 1)), `bytes=${start}-${end}: got ${got.length} bytes`);
    }
    const held = await store.hold(d, big.length);
    assert.ok(held, 'a published multipart blob can be held');
    await store.remove(d);
    assert.equal((await held.restore()).version, version, 'restored in the same parts: the same ETag');
    assert.ok((await store.read(d)).equals(big));
    await held.release();
  });

  test('a source opened on a blob removed meanwhile gives BlobGone at its first read', async (t) => {
    const { store, cleanup } = await makeS3Store();
    t.after(cleanup);
    const big = bytesOf('removed', 10 * MiB);
    const d = digestOf(big);
    await store.put(d, big);
    const whole = store.source(d, big.length);
    const ranged = store.source(d, big.length, { start: 9 * MiB, end: 10 * MiB - 1 });
    await store.remove(d);
    await assert.rejects(drain(whole), BlobGone);
    await assert.rejects(drain(ranged), BlobGone);
    assert.equal(await store.hold(d, big.length), undefined);
  });

  test('wrong credentials: checkWritable and writes fail with StoreFull naming the refusal; reads do not say BlobGone', async (t) => {
    const { store: good, bucket, cleanup } = await makeS3Store();
    t.after(cleanup);
    const bytes = Buffer.from('kept');
    await good.put(digestOf(bytes), bytes);
    const spoolDir = await mkdtemp(join(tmpdir(), 'regmirror-s3-'));
    t.after(() => rm(spoolDir, { recursive: true, force: true }));
    const spool = new Spool(spoolDir);
    const bad = new S3ContentStore({ bucket, endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: 'wrong' } }, spool);
    t.after(() => bad.close());
    await assert.rejects(bad.checkWritable(), (err: unknown) => err instanceof StoreFull && /SignatureDoesNotMatch \(403\)/.test(err.reason) && !err.message.includes(bucket), 'checkWritable');
    await assert.rejects(bad.put(digestOf(bytes), bytes), StoreFull);
    await assert.rejects(bad.read(digestOf(bytes)), StoreFull);
    await assert.rejects(bad.stat(digestOf(bytes)), StoreFull, 'not "absent": gc would forget the row');
  });

  test('a bucket that does not exist, and an endpoint nobody listens on: checkWritable says which', async (t) => {
    const { cleanup, spool } = await makeS3Store();
    t.after(cleanup);
    const missing = new S3ContentStore({ bucket: 'no-such-bucket', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: credentials() }, spool);
    t.after(() => missing.close());
    await assert.rejects(missing.checkWritable(), (err: unknown) => err instanceof StoreFull && /NoSuchBucket \(404\)/.test(err.reason));
    const closed = new S3ContentStore({ bucket: 'any', endpoint: 'http://127.0.0.1:9', region: rgw.region, forcePathStyle: true, credentials: credentials() }, spool);
    t.after(() => closed.close());
    await assert.rejects(closed.checkWritable(), (err: unknown) => err instanceof StoreFull && /ECONNREFUSED/.test(err.reason));
  });

  /**
   * A TCP relay in front of the gateway that cuts connections: the next `cuts` connections
   * whose answers pass `afterBytes` are closed there, mid-body, as a server's idle timeout
   * or a reset would.
   */
  async function cuttingRelay(target: string): Promise<{ endpoint: string; cut(times: number, afterBytes: number): void; cutUploads(times: number, afterBytes: number): void; readonly cutsLeft: number; close(): Promise<void> }> {
    const { hostname, port } = new URL(target);
    let cuts = 0;
    let after = Infinity;
    let uploadCuts = 0;
    let uploadAfter = Infinity;
    const sockets = new Set<Socket>();
    const server: Server = createServer((client) => {
      const upstream = connect(Number(port), hostname);
      sockets.add(client).add(upstream);
      let sent = 0;
      let received = 0;
      client.on('data', (b: Buffer) => {
        received += b.length;
        if (uploadCuts > 0 && received > uploadAfter) {
          uploadCuts--;
          client.destroy();
          upstream.destroy();
          return;
        }
        upstream.write(b);
      });
      upstream.on('data', (b: Buffer) => {
        sent += b.length;
        if (cuts > 0 && sent > after) {
          cuts--;
          client.destroy();
          upstream.destroy();
          return;
        }
        client.write(b);
      });
      const end = () => (client.destroy(), upstream.destroy());
      client.on('error', end).on('close', end);
      upstream.on('error', end).on('close', end);
    });
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const addr = server.address() as { port: number };
    return {
      endpoint: `http://127.0.0.1:${addr.port}`,
      cut(times, afterBytes) {
        cuts = times;
        after = afterBytes;
      },
      cutUploads(times, afterBytes) {
        uploadCuts = times;
        uploadAfter = afterBytes;
      },
      get cutsLeft() {
        return cuts + uploadCuts;
      },
      close: () => {
        for (const s of sockets) s.destroy();
        return new Promise((resolve) => server.close(() => resolve()));
      },
    };
  }

  test('a body cut mid-chunk is asked for again from where it was cut; cut too often, the read fails', async (t) => {
    const relay = await cuttingRelay(rgw.endpoint);
    t.after(relay.close);
    const { store, cleanup } = await makeS3Store({ endpoint: relay.endpoint });
    t.after(cleanup);
    const big = bytesOf('cut', 6 * MiB);
    const d = digestOf(big);
    await store.put(d, big);
    relay.cut(2, 2 * MiB);
    assert.ok((await drain(store.source(d, big.length))).equals(big), 'whole, after two cuts');
    assert.equal(relay.cutsLeft, 0, 'both cuts happened');
    relay.cut(3, 2 * MiB);
    await assert.rejects(drain(store.source(d, big.length)), (err: unknown) => !(err instanceof BlobGone));
    assert.equal(relay.cutsLeft, 0);
  });

  test('a multipart upload cut mid-part fails the commit and leaves no object under the digest key, nor parts behind', async (t) => {
    const relay = await cuttingRelay(rgw.endpoint);
    t.after(relay.close);
    const partSize = 5 * MiB;
    const { store, spool, bucket, cleanup } = await makeS3Store({ endpoint: relay.endpoint, partSize });
    t.after(cleanup);
    const big = bytesOf('interrupted', 3 * partSize + 99);
    const d = digestOf(big);
    const f = await spool.create(d, big.length);
    await f.write(big);
    // Every connection that has sent 2 MiB of a request is cut, so each try of a part dies mid-body.
    relay.cutUploads(1000, 2 * MiB);
    await assert.rejects(store.commit(f), (err: unknown) => err instanceof StoreFull && /multipart upload/.test(err.reason));
    relay.cutUploads(0, Infinity);
    assert.equal(await store.stat(d), undefined, 'no object under the digest key');
    assert.deepEqual(await keys(bucket), []);
    const client = rawClient();
    t.after(() => client.destroy());
    const open = await client.send(new ListMultipartUploadsCommand({ Bucket: bucket }));
    assert.deepEqual((open.Uploads ?? []).map((u) => u.Key), [], 'the failed upload was aborted, its parts freed');
    // The spool is still whole: the same file commits once the store answers again.
    const { version } = await store.commit(f);
    assert.match(version, /-4$/);
    assert.ok((await store.read(d)).equals(big));
    await f.discard();
  });

  test('list() pages past 1,000 keys: every blob of 1,205 is named once', async (t) => {
    const { store, cleanup } = await makeS3Store();
    t.after(cleanup);
    const limit = pLimit(16);
    const want = Array.from({ length: 1205 }, (_, i) => Buffer.from(`blob ${i}`));
    const digests = await Promise.all(want.map((b) => limit(async () => (await store.put(digestOf(b), b), digestOf(b)))));
    const listed: string[] = [];
    for await (const x of store.list()) listed.push(x);
    assert.equal(listed.length, 1205, 'no blob named twice or missed across pages');
    assert.deepEqual([...listed].sort(), [...digests].sort());
  });
});
