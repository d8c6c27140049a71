// A mirror whose published blobs live in a bucket (storage.backend: s3, on a real Ceph
// RGW): an image pulled through it cold comes from the upstream and lands in the bucket,
// not in the data dir; pulled again, warm, it comes from the bucket with the same bytes.
import assert from 'node:assert/strict';
import { existsSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { createServer, connect, type Server, type Socket } from 'node:net';
import { after, before, describe, test } from 'node:test';
import { ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { largeBlobImage, MediaTypes } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { parseDigest } from '../src/oci/digest.js';
import { SMALL_BLOB_STAT_MS } from '../src/store/small-blob-memo.js';
import { downloadsSettled, get, pull, sha256, startMirror, until, type Mirror } from './helpers.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';

const MiB = 1024 * 1024;

describe('a mirror on storage.backend s3 (Ceph RGW)', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  let up: FakeUpstream;
  let m: Mirror;
  let bucket: string;
  let relay: Relay;
  // A layer beyond the store's part size: committed as a multipart upload.
  const image = largeBlobImage('library/big', '1', 40 * MiB + 123, 's3-e2e');
  const layer = [...image.blobs].sort((a, b) => b[1].length - a[1].length)[0];

  before(async () => {
    rgw = await startRgw();
    bucket = await rgw.createBucket('mirror-e2e');
    // No keys in the config: the store takes them from the AWS chain, as in production.
    process.env.AWS_ACCESS_KEY_ID = rgw.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = rgw.secretAccessKey;
    up = await FakeUpstream.start();
    up.addImage(image);
    // The mirror reaches the gateway through a relay, so that a test can take it away.
    relay = await Relay.start(rgw.endpoint);
    m = await startMirror({
      upstreams: [{ name: 'docker.io', url: up.url }],
      defaultUpstream: 'docker.io',
      storage: { backend: 's3', s3: { bucket, prefix: 'regmirror', endpoint: relay.endpoint, region: rgw.region, forcePathStyle: true } },
    });
  });
  after(async () => {
    await m?.stop();
    await relay?.down();
    await up?.close();
    await rgw?.destroy();
  });

  async function pullImage(): Promise<void> {
    const res = await get(`${m.url}/v2/library/big/manifests/1`, { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(res.status, 200);
    assert.equal(sha256(res.body), image.root.digest);
    for (const [digest, bytes] of image.blobs) {
      const blob = await pull(`${m.url}/v2/library/big/blobs/${digest}`);
      assert.equal(blob.status, 200, digest);
      assert.ok(blob.complete, digest);
      assert.equal(blob.body.length, bytes.length, digest);
      assert.equal(sha256(blob.body), digest);
    }
  }

  async function bucketKeys(): Promise<string[]> {
    const client = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
    try {
      return ((await client.send(new ListObjectsV2Command({ Bucket: bucket }))).Contents ?? []).map((o) => o.Key!).sort();
    } finally {
      client.destroy();
    }
  }

  test('cold: the image is fetched from the upstream and its blobs and manifest published in the bucket', async () => {
    await pullImage();
    await downloadsSettled(m);
    assert.equal(up.counters.blobGet, image.blobs.size);
    const expected = [...image.blobs.keys(), image.root.digest].map((d) => `regmirror/blobs/sha256/${d.slice(7, 9)}/${d.slice(7)}`).sort();
    assert.deepEqual(await bucketKeys(), expected);
    assert.equal(existsSync(join(m.dataDir, 'blobs')), false, 'nothing published in the data dir');
    assert.deepEqual(await readdir(join(m.dataDir, 'tmp')), [], 'spool files discarded once uploaded');
    assert.equal((await m.store.stat(parseDigest(layer[0])))?.size, layer[1].length);
  });

  test('warm: the same bytes come from the bucket, with no upstream blob GET; ranges too', async () => {
    up.resetCounters();
    await pullImage();
    assert.equal(up.counters.blobGet, 0);
    const [digest, bytes] = layer;
    const start = 16 * MiB - 5;
    const end = 24 * MiB + 5;
    const ranged = await get(`${m.url}/v2/library/big/blobs/${digest}`, { headers: { range: `bytes=${start}-${end}` } });
    assert.equal(ranged.status, 206);
    assert.ok(ranged.body.equals(bytes.subarray(start, end + 1)));
    assert.equal(up.counters.blobGet, 0);
  });

  test('readiness checks the bucket', async () => {
    const res = await get(`${m.url}/readyz`);
    assert.equal(res.status, 200, res.body.toString());
    assert.equal(JSON.parse(res.body.toString()).checks.store, 'ok');
  });

  test('the bucket out of reach: pulls are served from the upstream, readiness fails; back, hits again with nothing forgotten', async () => {
    await relay.down();
    // The config the last test pulled is held in memory, its stat good for a second: past
    // it, the store is asked again and says it cannot be read.
    await new Promise((r) => setTimeout(r, SMALL_BLOB_STAT_MS));
    up.resetCounters();
    await pullImage();
    assert.equal(up.counters.blobGet, image.blobs.size, 'every blob from the upstream');
    await downloadsSettled(m);
    assert.equal(m.logs.filter((l) => l.includes('blob store unreadable')).length, 1, 'an outage is logged once, not per request');
    const ready = await get(`${m.url}/readyz`);
    assert.equal(ready.status, 503);
    const { checks } = JSON.parse(ready.body.toString()) as { checks: { store: string } };
    assert.match(checks.store, /^not writable: .*ECONNREFUSED/);
    assert.ok(!checks.store.includes(bucket), 'the bucket is not named to anyone who asks');
    await relay.up();
    await until('the store is ready again', async () => (await get(`${m.url}/readyz`)).status === 200);
    up.resetCounters();
    await pullImage();
    assert.equal(up.counters.blobGet, 0, 'hits again: no row was forgotten');
  });
});

/** A TCP relay on a fixed loopback port that can be taken down (connections refused) and brought back. */
class Relay {
  #server?: Server;
  readonly #sockets = new Set<Socket>();

  private constructor(
    readonly target: URL,
    public port: number,
  ) {}

  static async start(target: string): Promise<Relay> {
    const r = new Relay(new URL(target), 0);
    await r.up();
    return r;
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.port}`;
  }

  async up(): Promise<void> {
    const server = createServer((client) => {
      const upstream = connect(Number(this.target.port), this.target.hostname);
      for (const s of [client, upstream]) {
        this.#sockets.add(s);
        s.on('error', () => undefined).on('close', () => (this.#sockets.delete(s), client.destroy(), upstream.destroy()));
      }
      client.pipe(upstream).pipe(client);
    });
    await new Promise<void>((resolve) => server.listen(this.port, '127.0.0.1', resolve));
    this.port = (server.address() as { port: number }).port;
    this.#server = server;
  }

  async down(): Promise<void> {
    const server = this.#server;
    this.#server = undefined;
    for (const s of this.#sockets) s.destroy();
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }
}
