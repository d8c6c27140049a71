// Two replicas sharing one bucket (Ceph RGW) and one PostgreSQL, each a real `regmirror
// serve` process: the bucket stays under maxSize while both pull, one evictor runs at a
// time, an object one replica streams is not removed under it by the other's evictor, and
// the commands (gc, verify, cache pin) work on the shared store, a pin holding everywhere.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { DeleteObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { request } from 'undici';
import { largeBlobImage, MediaTypes, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import type { MetadataStore } from '../src/store/metadata-store.js';
import { openMetadataStore } from '../src/store/open-metadata.js';
import { cli, get, pull, serveChild, sha256, until, type ChildServer } from './helpers.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';
import { freePort } from './support/daemons.js';
import { startPostgres, type PgServer } from './support/postgres.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const SECRET = 'evict-shared-cluster-secret-0123';

interface Replica {
  url: string;
  config: string;
  child: ChildServer;
}

/** Two replicas on one bucket and one database, and the test's own view of both. */
interface Pair {
  a: Replica;
  b: Replica;
  bucket: string;
  db: MetadataStore;
}

/** The last layer of an image: its one big blob. */
function layerOf(img: FixtureImage): [string, Buffer] {
  return [...img.blobs].sort((x, y) => y[1].length - x[1].length)[0];
}

describe('15.6 lifecycle across replicas (RGW + PostgreSQL)', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  let pg: PgServer;
  let up: FakeUpstream;
  let s3: S3Client;
  let dir: string;
  const pairs: Pair[] = [];
  const env = () => ({ AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey });

  before(async () => {
    [rgw, pg, up] = await Promise.all([startRgw(), startPostgres(), FakeUpstream.start()]);
    s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
    dir = await mkdtemp(join(tmpdir(), 'regmirror-evict-shared-'));
  });
  after(async () => {
    for (const p of pairs) {
      await Promise.all([p.a, p.b].map(async (r) => {
        r.child.kill('SIGTERM');
        await r.child.exited;
      }));
      await p.db.close();
    }
    s3?.destroy();
    await up?.close();
    await Promise.all([rgw?.destroy(), pg?.destroy()]);
    if (dir) await rm(dir, { recursive: true, force: true });
  });

  async function startPair(name: string, storage: string): Promise<Pair> {
    const bucket = await rgw.createBucket(name);
    const { url: dbUrl } = await pg.createDatabase(name.replace(/-/g, '_'));
    const replica = async (which: string): Promise<Replica> => {
      const port = await freePort();
      const config = join(dir, `${name}-${which}.yaml`);
      await writeFile(config, [
        `listen: "127.0.0.1:${port}"`,
        `dataDir: ${join(dir, `${name}-${which}`)}`,
        'defaultUpstream: docker.io',
        'upstreams:',
        '  docker.io:',
        `    url: ${up.url}`,
        'metadata:',
        '  postgres:',
        `    url: ${dbUrl}`,
        `    password: ${JSON.stringify(pg.password)}`,
        '    pool: 4',
        'storage:',
        '  backend: s3',
        ...storage.split('\n').map((l) => `  ${l}`),
        '  s3:',
        `    bucket: ${bucket}`,
        `    endpoint: ${rgw.endpoint}`,
        `    region: ${rgw.region}`,
        '    forcePathStyle: true',
        'cluster:',
        `  advertise: http://127.0.0.1:${port}`,
        `  secret: ${SECRET}`,
        'log:',
        '  level: debug',
        '',
      ].join('\n'));
      const child = serveChild(config, env());
      return { url: await child.url, config, child };
    };
    const [a, b] = await Promise.all([replica('a'), replica('b')]);
    const db = await openMetadataStore({ kind: 'postgres', url: dbUrl, password: pg.password, pool: 2, ssl: false });
    const p = { a, b, bucket, db };
    pairs.push(p);
    return p;
  }

  /** Every object in the bucket: key → size. */
  async function objects(bucket: string): Promise<Map<string, number>> {
    const out = new Map<string, number>();
    let token: string | undefined;
    do {
      const page = await s3.send(new ListObjectsV2Command({ Bucket: bucket, ContinuationToken: token }));
      // Only blobs: readiness probes come and go beside them.
      for (const o of page.Contents ?? []) if (o.Key!.startsWith('blobs/')) out.set(o.Key!, o.Size ?? 0);
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
    return out;
  }

  const keyOf = (digest: string) => `blobs/sha256/${digest.slice(7, 9)}/${digest.slice(7)}`;
  const bucketBytes = async (bucket: string) => [...(await objects(bucket)).values()].reduce((x, y) => x + y, 0);
  const inBucket = async (bucket: string, digest: string) => (await objects(bucket)).has(keyOf(digest));

  async function pullLayer(r: Replica, img: FixtureImage): Promise<void> {
    const [digest, bytes] = layerOf(img);
    const res = await pull(`${r.url}/v2/${img.name}/blobs/${digest}`);
    assert.equal(res.status, 200, digest);
    assert.ok(res.complete && res.body.equals(bytes), `${digest} whole and right`);
  }

  /** The replica's eviction passes, from its log: when each started and ended, and what it removed. */
  function passes(r: Replica): Array<{ start: number; end: number; removed: number }> {
    return r.child
      .stderr()
      .split('\n')
      .filter((l) => l.includes('"msg":"eviction pass"'))
      .map((l) => JSON.parse(l) as { time: string; startedAt: string; removed: number })
      .map((e) => ({ start: Date.parse(e.startedAt), end: Date.parse(e.time), removed: e.removed }));
  }

  describe('maxSize 3 MiB, no grace', () => {
    const maxSize = 3 * MiB;
    const blob = 256 * KiB;
    const fillers = Array.from({ length: 28 }, (_, i) => largeBlobImage(`library/fill${i}`, '1', blob, `evict-shared-${i}`));
    const pinned = largeBlobImage('library/pinned', '1', blob, 'evict-shared-pinned');
    const more = Array.from({ length: 16 }, (_, i) => largeBlobImage(`library/more${i}`, '1', blob, `evict-shared-more-${i}`));
    let p: Pair;

    before(async () => {
      for (const img of [...fillers, pinned, ...more]) up.addImage(img);
      p = await startPair('shared-limit', `maxSize: ${maxSize}\nhighWatermark: 80\nlowWatermark: 50\ndeleteGrace: 0s`);
    });

    test('15.6 with maxSize set, the shared store stays under its limit while two replicas pull', async () => {
      // Two pulls at a time, one through each replica: both publish and poke their evictors
      // together. Blobs are small beside the room between the high watermark and maxSize,
      // so what is published while a pass runs stays within maxSize plus the blob each
      // replica may be publishing meanwhile.
      const bound = maxSize + 2 * blob;
      const samples: number[] = [];
      let pulling = true;
      const sampler = (async () => {
        while (pulling) samples.push(await bucketBytes(p.bucket));
      })();
      try {
        for (let i = 0; i < fillers.length; i += 2) {
          await Promise.all([pullLayer(p.a, fillers[i]), pullLayer(p.b, fillers[i + 1])]);
          const now = await bucketBytes(p.bucket);
          samples.push(now);
          assert.ok(now <= bound, `after pulls ${i} and ${i + 1}: ${now} bytes in the bucket, over ${bound}`);
        }
      } finally {
        pulling = false;
        await sampler;
      }
      assert.ok(samples.length > fillers.length, 'sampled during the pulls too');
      assert.ok(Math.max(...samples) <= bound, `the bucket reached ${Math.max(...samples)} bytes, over ${bound}`);
      const pulled = fillers.length * blob;
      assert.ok(pulled > 2 * maxSize, 'more was pulled than fits');
      // Never two passes at once.
      await until('eviction passes', () => passes(p.a).length + passes(p.b).length >= 2);
      for (const x of passes(p.a)) for (const y of passes(p.b)) assert.ok(x.end <= y.start || y.end <= x.start, `passes overlap: ${JSON.stringify({ a: x, b: y })}`);
      // A pass is counted as it starts and logged as it ends: once the last has ended they agree.
      const ran = async (r: Replica) => Number(/^regmirror_eviction_passes_total\{result="ran"\} (\d+)/m.exec((await get(`${r.url}/metrics`)).body.toString())?.[1] ?? 0);
      for (const r of [p.a, p.b]) await until('the metric to count the passes the log shows', async () => (await ran(r)) === passes(r).length);
      // The rows agree with the bucket: what the evictors counted is what is there.
      const rows = (await p.db.allBlobs()).reduce((x, b) => x + b.size, 0);
      await until('the bucket to hold what the rows say', async () => (await bucketBytes(p.bucket)) === rows);
    });

    test('15.6 gc, verify and cache pin work against the shared store; a pin holds on every replica', async () => {
      // Pulled whole (manifest too) through A, pinned with B's config.
      assert.equal((await get(`${p.a.url}/v2/${pinned.name}/manifests/${pinned.tag}`, { headers: { accept: MediaTypes.ociManifest } })).status, 200);
      for (const [digest] of pinned.blobs) assert.equal(sha256((await pull(`${p.a.url}/v2/${pinned.name}/blobs/${digest}`)).body), digest);
      const pinnedDigests = [...pinned.blobs.keys(), pinned.root.digest];
      await until('the pinned image to be recorded', async () => (await Promise.all(pinnedDigests.map((d) => p.db.getBlob(d)))).every(Boolean));
      const pin = await cli(['cache', 'pin', `docker.io/${pinned.name}:${pinned.tag}`, '--config', p.b.config], env());
      assert.equal(pin.code, 0, pin.stderr);
      const pinnedAt = Date.now();

      // Pulls through A until A's evictor has run, then through B until B's has: neither
      // touches the pinned image.
      const queue = [...more];
      for (const r of [p.a, p.b]) {
        while (!passes(r).some((x) => x.start >= pinnedAt && x.removed > 0)) {
          const img = queue.shift();
          assert.ok(img, 'ran out of images before every replica evicted');
          await pullLayer(r, img);
          await until('the pull to be recorded', async () => (await p.db.getBlob(layerOf(img)[0])) !== undefined);
        }
      }
      const last = more[more.length - queue.length - 1];
      for (const d of pinnedDigests) {
        assert.equal((await p.db.getBlob(d))?.pinned, true, `${d} pinned`);
        assert.ok(await inBucket(p.bucket, d), `${d} still in the bucket`);
      }
      const ls = await cli(['cache', 'ls', '--json', '--config', p.a.config], env());
      assert.equal(ls.code, 0, ls.stderr);
      const listed = (JSON.parse(ls.stdout) as Array<{ image: string; pinned: boolean }>).find((i) => i.image === `docker.io/${pinned.name}:${pinned.tag}`);
      assert.equal(listed?.pinned, true, 'cache ls through the other replica shows the pin');

      // verify re-hashes the bucket's objects: an overwritten one and a vanished one are bad.
      const [pinnedLayer] = layerOf(pinned);
      const [lost] = layerOf(last);
      assert.ok(await p.db.getBlob(lost), 'the newest pull is cached');
      await s3.send(new PutObjectCommand({ Bucket: p.bucket, Key: keyOf(pinnedLayer), Body: Buffer.alloc(blob, 7) }));
      await s3.send(new DeleteObjectCommand({ Bucket: p.bucket, Key: keyOf(lost) }));
      const verify = await cli(['verify', '--json', '--config', p.a.config], env());
      assert.equal(verify.code, 1, 'bad blobs found and not repaired');
      const report = JSON.parse(verify.stdout) as { checked: number; bad: Array<{ digest: string; problem: string }> };
      assert.equal(report.checked, (await p.db.allBlobs()).length);
      assert.deepEqual(report.bad.map((b) => b.digest).sort(), [pinnedLayer, lost].sort());
      assert.match(report.bad.find((b) => b.digest === pinnedLayer)!.problem, /hashes to/);

      // gc forgets the row whose object is gone, and leaves a fresh object with no row alone.
      const stray = sha256(Buffer.from('a stray object'));
      await s3.send(new PutObjectCommand({ Bucket: p.bucket, Key: keyOf(stray), Body: 'a stray object' }));
      const gc = await cli(['gc', '--json', '--config', p.b.config], env());
      assert.equal(gc.code, 0, gc.stderr);
      const g = JSON.parse(gc.stdout) as { missingFiles: number; recentFiles: number; orphanFiles: number };
      assert.equal(g.missingFiles, 1);
      assert.equal(g.orphanFiles, 0);
      assert.ok(g.recentFiles >= 1);
      assert.equal(await p.db.getBlob(lost), undefined, 'the row of the vanished object is forgotten');
      assert.ok(await inBucket(p.bucket, stray), 'a just-published object with no row is left to its publisher');
      // Pulled again through A, the lost blob is fetched and published afresh.
      await pullLayer(p.a, last);
    });
  });

  describe('a grace of 5 s', () => {
    const large = largeBlobImage('library/large', '1', 40 * MiB + 17, 'evict-shared-large');
    const filler = largeBlobImage('library/filler', '1', 10 * MiB, 'evict-shared-filler');
    let p: Pair;

    before(async () => {
      for (const img of [large, filler]) up.addImage(img);
      p = await startPair('shared-grace', `maxSize: ${48 * MiB}\nhighWatermark: 90\nlowWatermark: 60\ndeleteGrace: 5s`);
    });

    test('15.6 an object being read by one replica is not removed under it', async () => {
      const [digest, bytes] = layerOf(large);
      await pullLayer(p.b, large);
      await until('the large blob to be recorded', async () => (await p.db.getBlob(digest)) !== undefined);

      // A slow client of B: a first MiB, then nothing until A's evictor has chosen the blob.
      const res = await request(`${p.b.url}/v2/${large.name}/blobs/${digest}`, { signal: AbortSignal.timeout(60_000) });
      assert.equal(res.statusCode, 200);
      const it = res.body[Symbol.asyncIterator]() as AsyncIterator<Buffer>;
      const chunks: Buffer[] = [];
      let received = 0;
      while (received < MiB) {
        const { value, done } = await it.next();
        assert.ok(!done, 'the body ended early');
        chunks.push(value);
        received += value.length;
      }

      // A pull through A takes the store over its high watermark: A evicts the large blob,
      // which no client of A reads.
      await pullLayer(p.a, filler);
      await until('A to evict the large blob', async () => (await p.db.getBlob(digest)) === undefined);
      await until('A to log its pass', () => passes(p.a).some((x) => x.removed > 0));
      assert.equal(passes(p.b).length, 0, 'B did not evict');
      assert.ok(await inBucket(p.bucket, digest), 'the object stays for the grace');
      await s3.send(new HeadObjectCommand({ Bucket: p.bucket, Key: keyOf(digest) }));

      for (;;) {
        const { value, done } = await it.next();
        if (done) break;
        chunks.push(value);
      }
      const body = Buffer.concat(chunks);
      assert.equal(body.length, bytes.length);
      assert.ok(body.equals(bytes), 'the slow client got the whole, right blob');

      await until('the object to be removed after the grace', async () => !(await inBucket(p.bucket, digest)), 20_000);
      assert.ok(await inBucket(p.bucket, layerOf(filler)[0]), 'the blob that was not evicted stays');
      // Evicted, it is a miss on B too: fetched again and whole.
      up.resetCounters();
      await pullLayer(p.b, large);
      assert.equal(up.counters.blobGet, 1);
    });
  });
});
