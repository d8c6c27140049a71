// Losing a replica: its clients see failed transfers, never a wrong complete body; the
// download it held is taken over by a survivor with at most one more upstream GET; the
// bucket never holds a partial object; and under a replica killed every few seconds the
// others keep serving right bytes.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { createHash } from 'node:crypto';
import { after, before, describe, test } from 'node:test';
import { HeadObjectCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { largeBlobImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli, get, sha256, until } from './helpers.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';
import { startPostgres, type PgServer } from './support/postgres.js';
import { startReplicaSet, type Replica, type ReplicaSet } from './support/replicas.js';

const MiB = 1024 * 1024;

/** A blob GET hashed as it arrives (no 200 MB bodies held); `onBytes` sees the running count. */
function hashedGet(url: string, onBytes?: (n: number) => void): Promise<{ status: number; complete: boolean; digest: string; bytes: number }> {
  return new Promise((resolve) => {
    const hash = createHash('sha256');
    let bytes = 0;
    const done = (status: number, complete: boolean) => resolve({ status, complete, digest: `sha256:${hash.digest('hex')}`, bytes });
    const req = request(url, (res) => {
      res.on('data', (c: Buffer) => {
        hash.update(c);
        bytes += c.length;
        onBytes?.(bytes);
      });
      res.on('end', () => done(res.statusCode ?? 0, res.complete));
      res.on('error', () => done(res.statusCode ?? 0, false));
      res.on('aborted', () => undefined);
    });
    req.on('error', () => done(0, false));
    req.end();
  });
}

describe('replicas losing a member', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  let pg: PgServer;
  let up: FakeUpstream;
  let set: ReplicaSet;

  before(async () => {
    [rgw, pg, up] = await Promise.all([startRgw(), startPostgres(), FakeUpstream.start()]);
    set = await startReplicaSet({ count: 3, rgw, pg, upstreamUrl: up.url, name: 'failover' });
  });
  after(async () => {
    await set?.destroy();
    await up?.close();
    await Promise.all([rgw?.destroy(), pg?.destroy()]);
  });

  async function bucketObjects(): Promise<Map<string, number>> {
    const s3 = new S3Client({ endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true, credentials: { accessKeyId: rgw.accessKeyId, secretAccessKey: rgw.secretAccessKey } });
    try {
      const out = new Map<string, number>();
      const keys = ((await s3.send(new ListObjectsV2Command({ Bucket: set.bucket }))).Contents ?? []).map((o) => o.Key!);
      for (const key of keys) out.set(`sha256:${key.split('/').pop()}`, (await s3.send(new HeadObjectCommand({ Bucket: set.bucket, Key: key }))).ContentLength ?? -1);
      return out;
    } finally {
      s3.destroy();
    }
  }

  test('15.4 kill -9 of the holder mid-download of a 200 MB layer: failed transfers or right bytes, one more upstream download at most, no partial object', async () => {
    const img = largeBlobImage('library/huge', '1', 200 * MiB, 'failover-huge');
    up.addImage(img);
    const [layer] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    const [a, b, c] = set.replicas;
    for (const r of set.replicas) assert.equal((await get(`${r.url}/v2/${img.name}/manifests/1`)).status, 200);
    up.faults = { blobBytesPerSecond: 40 * MiB };
    const path = `/v2/${img.name}/blobs/${layer}`;
    let followed = 0;
    const onA = hashedGet(`${a.url}${path}`);
    // A holds the download once its client is being served; then B's and C's follow it.
    while ((up.counters.blobGetByDigest.get(layer) ?? 0) === 0) await new Promise((r) => setTimeout(r, 20));
    const onB = hashedGet(`${b.url}${path}`, (n) => (followed = Math.max(followed, n)));
    const onC = hashedGet(`${c.url}${path}`);
    while (followed < 30 * MiB) await new Promise((r) => setTimeout(r, 20));
    await set.kill(a);
    const killedAt = performance.now();
    up.faults = {};
    for (const [name, r] of [['A', await onA], ['B', await onB], ['C', await onC]] as const) {
      // A complete 200 must be the right blob; anything else must be visibly cut.
      if (r.complete && r.status === 200) assert.equal(r.digest, layer, `${name}: a complete body is the right one`);
      assert.ok(!(r.complete && r.status === 200 && r.bytes === 200 * MiB && r.digest !== layer), name);
    }
    const again = await hashedGet(`${b.url}${path}`);
    const recovered = performance.now() - killedAt;
    assert.equal(again.status, 200, set.logs());
    assert.ok(again.complete);
    assert.equal(again.digest, layer);
    assert.ok((up.counters.blobGetByDigest.get(layer) ?? 0) <= 2, `upstream GETs of the layer: ${up.counters.blobGetByDigest.get(layer)}`);
    console.log(`# from kill -9 of the holder to a complete 200 MB pull through another replica: ${Math.round(recovered)} ms`);
    // The client's last byte goes once the digest is verified, before the upload ends.
    await until('the layer is published', async () => (await bucketObjects()).has(layer), 30_000);
    const objects = await bucketObjects();
    const sizes = new Map([...img.blobs].map(([d, bytes]) => [d, bytes.length]));
    sizes.set(img.root.digest, img.root.bytes.length);
    for (const [digest, size] of objects) if (sizes.has(digest)) assert.equal(size, sizes.get(digest), `${digest} in the bucket is whole`);
    assert.equal(objects.get(layer), 200 * MiB);
    await set.start(a);
  });

  test('15.5 a replica killed every few seconds while 8 clients pull 20 images for a minute: right digests, nothing corrupt, verify clean', async () => {
    const images: FixtureImage[] = [];
    for (let i = 0; i < 20; i++) {
      const img = await singleImage({ name: `chaos/app${i}`, tag: 'v1', seed: `chaos-${i}`, layerSizes: [256 * 1024 + i * 4099, 64 * 1024 + i * 511, 1 * MiB + i * 1031] });
      up.addImage(img);
      images.push(img);
    }
    up.faults = { blobBytesPerSecond: 4 * MiB };
    const deadline = Date.now() + 60_000;
    let completed = 0;
    let failed = 0;
    const wrong: string[] = [];
    const pick = <T>(xs: readonly T[]): T => xs[Math.floor(Math.random() * xs.length)];
    const pullOnce = async () => {
      const live = set.up();
      if (live.length === 0) return;
      const r = pick(live);
      const img = pick(images);
      const m = await get(`${r.url}/v2/${img.name}/manifests/v1`, { timeoutMs: 15_000 }).catch(() => undefined);
      if (!m || m.status !== 200) return void failed++;
      if (sha256(m.body) !== img.root.digest) wrong.push(`manifest of ${img.name} from ${r.name}`);
      let whole = true;
      for (const d of img.blobs.keys()) {
        const res = await hashedGet(`${r.url}/v2/${img.name}/blobs/${d}`);
        if (res.status === 200 && res.complete) {
          if (res.digest !== d) wrong.push(`${d} from ${r.name}`);
        } else whole = false;
      }
      if (whole) completed++;
      else failed++;
    };
    const clients = Array.from({ length: 8 }, async () => {
      while (Date.now() < deadline) await pullOnce();
    });
    const killer = (async () => {
      while (Date.now() < deadline - 5_000) {
        await new Promise((r) => setTimeout(r, 3_000 + Math.random() * 2_000));
        const victim: Replica = pick(set.up());
        await set.kill(victim);
        await new Promise((r) => setTimeout(r, 1_000));
        await set.start(victim);
      }
    })();
    await Promise.all([...clients, killer]);
    up.faults = {};
    assert.deepEqual(wrong, [], 'nothing corrupt was ever served');
    assert.ok(completed >= 20, `completed pulls: ${completed} (failed: ${failed})`);
    console.log(`# chaos: ${completed} pulls completed, ${failed} cut by a killed replica`);
    const v = await cli(['verify', '--config', set.replicas[0].config], { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey });
    assert.equal(v.code, 0, v.stdout + v.stderr);
    assert.match(v.stdout, / 0 bad/);
  });
});
