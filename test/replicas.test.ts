// Three regmirror processes sharing one RGW bucket and one PostgreSQL act as one cache:
// a cold blob is downloaded once for all of them, clients of the replicas that do not hold
// the download stream it from the one that does as it arrives, and what one replica
// fetched the others serve with no upstream request.
import assert from 'node:assert/strict';
import { request } from 'node:http';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { signPeerRequest } from '../src/cluster/peer-auth.js';
import { get, serveChild, sha256, until } from './helpers.js';
import { requireTools, skopeoCopyVerified, startContainerd, writeHostsDir } from './e2e/harness.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';
import { freePort } from './support/daemons.js';
import { startPostgres, type PgServer } from './support/postgres.js';
import { CLUSTER_SECRET, startReplicaSet, type ReplicaSet } from './support/replicas.js';

const KiB = 1024;
const MiB = 1024 * KiB;
const LAYERS = 64;
const CLIENTS = 16;
const TAG_TTL_MS = 2_000;

/** A GET with the times of its first and last byte (ms, performance.now()). */
function timedGet(url: string): Promise<{ status: number; body: Buffer; startAt: number; firstByteAt: number; endAt: number; complete: boolean }> {
  const startAt = performance.now();
  return new Promise((resolve, reject) => {
    const req = request(url, (res) => {
      const chunks: Buffer[] = [];
      let firstByteAt = 0;
      res.on('data', (c: Buffer) => {
        if (chunks.length === 0) firstByteAt = performance.now();
        chunks.push(c);
      });
      res.on('end', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), startAt, firstByteAt, endAt: performance.now(), complete: res.complete }));
      res.on('error', () => resolve({ status: res.statusCode ?? 0, body: Buffer.concat(chunks), startAt, firstByteAt, endAt: performance.now(), complete: false }));
    });
    req.on('error', reject);
    req.end();
  });
}

describe('replicas sharing one bucket and one PostgreSQL', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  let pg: PgServer;
  let up: FakeUpstream;
  let set: ReplicaSet;
  let wide: FixtureImage;

  before(async () => {
    [rgw, pg, up] = await Promise.all([startRgw(), startPostgres(), FakeUpstream.start()]);
    // 63 small layers and one of 12 MiB that the upstream sends slowly, so that the
    // replicas' clients arrive while it is still downloading.
    const sizes = Array.from({ length: LAYERS - 1 }, (_, i) => 4 * KiB + i * 97);
    wide = await singleImage({ name: 'library/wide', tag: 'v1', seed: 'replicas-wide', layerSizes: [12 * MiB, ...sizes] });
    up.addImage(wide);
    set = await startReplicaSet({ count: 3, rgw, pg, upstreamUrl: up.url, name: 'replicas', upstream: `tagTtl: ${TAG_TTL_MS / 1000}s` });
  });
  after(async () => {
    await set?.destroy();
    await up?.close();
    await Promise.all([rgw?.destroy(), pg?.destroy()]);
  });

  test(`15.2 ${CLIENTS} clients over three replicas pull one cold ${LAYERS}-layer image at once: one upstream GET per blob, right digests, and followers stream before the download ends`, async () => {
    up.faults = { blobBytesPerSecond: 1.5 * MiB };
    const digests = [...wide.blobs.keys()];
    const big = [...digests].sort((x, y) => wide.blobs.get(y)!.length - wide.blobs.get(x)!.length)[0];
    const client = async (k: number) => {
      const base = set.replicas[k % 3].url;
      const m = await get(`${base}/v2/${wide.name}/manifests/v1`);
      assert.equal(m.status, 200, set.logs());
      // The big layer first, as every client of the pull asks for it at about the same time.
      const order = [big, ...digests.filter((d) => d !== big).map((_, i, rest) => rest[(i + k * 4) % rest.length])];
      const got: Array<{ digest: string; r: Awaited<ReturnType<typeof timedGet>> }> = [];
      const worker = async () => {
        for (let d = order.shift(); d !== undefined; d = order.shift()) got.push({ digest: d, r: await timedGet(`${base}/v2/${wide.name}/blobs/${d}`) });
      };
      await Promise.all([worker(), worker(), worker(), worker()]);
      return got;
    };
    const results = await Promise.all(Array.from({ length: CLIENTS }, (_, k) => client(k)));
    up.faults = {};
    for (const got of results) {
      for (const { digest, r } of got) {
        assert.equal(r.status, 200, `${digest}\n${set.logs()}`);
        assert.ok(r.complete, digest);
        assert.equal(sha256(r.body), digest);
      }
    }
    const repeated = digests.filter((d) => (up.counters.blobGetByDigest.get(d) ?? 0) !== 1);
    assert.deepEqual(repeated.map((d) => `${d}: ${up.counters.blobGetByDigest.get(d) ?? 0} GETs`), [], 'every blob fetched exactly once for the three replicas');
    // The big layer's download (8 s) ends before any client's last byte (that waits for
    // the digest); every client that asked well before then (3.5 s: a follower's first
    // step, 1 MiB, and the round trips to the database and the holder, on a machine that
    // runs another test file beside this one), on every replica, had its first byte
    // before then too: none waited for the download to end.
    const bigs = results.map((got, k) => ({ k, ...got.find((g) => g.digest === big)!.r }));
    const downloadEnded = Math.min(...bigs.map((r) => r.endAt));
    const during = bigs.filter((r) => r.startAt < downloadEnded - 3_500);
    assert.ok(during.length >= 12, `${during.length} of ${CLIENTS} clients asked while the download ran`);
    const late = during.filter((r) => r.firstByteAt >= downloadEnded);
    const when = (r: (typeof bigs)[number]) => `client ${r.k} (replica ${r.k % 3}): asked ${Math.round(downloadEnded - r.startAt)} ms before the end, first byte ${Math.round(r.firstByteAt - downloadEnded)} ms after`;
    assert.deepEqual(late.map(when), [], `clients that got their first byte only after the download had ended\n${set.logs()}`);
  });

  test('15.3 skopeo and containerd pull through replica A what was fetched through replica B, with no upstream request', async (t) => {
    if (!requireTools(t, 'skopeo', 'containerd', 'ctr')) return;
    const img = await singleImage({ name: 'library/tool', tag: '2', seed: 'replicas-tool', layerSizes: [300 * KiB, 40 * KiB, 2 * MiB] });
    up.addImage(img);
    const [a, b] = set.replicas;
    await skopeoCopyVerified(t, `127.0.0.1:${b.port}/${img.name}:${img.tag}`, img);
    up.resetCounters();
    await skopeoCopyVerified(t, `127.0.0.1:${a.port}/${img.name}:${img.tag}`, img);
    assert.equal(up.counters.blobGet, 0, 'skopeo through A: no upstream blob GET');
    const ctrd = await startContainerd();
    t.after(() => ctrd.close());
    const hosts = await mkdtemp(join(tmpdir(), 'regmirror-hosts-'));
    t.after(() => rm(hosts, { recursive: true, force: true }));
    await writeHostsDir(hosts, [{ registry: 'docker.io', server: `http://127.0.0.1:${await freePort()}`, mirrorUrl: a.url }]);
    const ref = `docker.io/${img.name}:${img.tag}`;
    const res = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', ref]);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}\n${set.logs()}`);
    const content = await ctrd.ctr(['content', 'ls', '-q']);
    for (const digest of img.blobs.keys()) assert.ok(content.stdout.includes(digest), `containerd holds ${digest}`);
    assert.equal(up.counters.blobGet, 0, 'containerd through A: no upstream blob GET');
    // skopeo and containerd resolve the tag: a HEAD at most (fresh tags need none), never a manifest GET.
    assert.equal(up.counters.manifestGet, 0, 'no upstream manifest GET');
  });

  test('15.2 a stale tag is revalidated once for the cluster: one upstream HEAD however many clients of the replicas ask', async () => {
    const img = await singleImage({ name: 'library/ttl', tag: 'v1', seed: 'replicas-ttl', layerSizes: [4 * KiB] });
    up.addImage(img);
    up.resetCounters();
    const cold = await Promise.all(Array.from({ length: 9 }, (_, k) => get(`${set.replicas[k % 3].url}/v2/${img.name}/manifests/v1`)));
    for (const r of cold) assert.equal(sha256(r.body), img.root.digest, set.logs());
    assert.equal(up.counters.manifestGet, 1, 'the cold tag was fetched once for the three replicas');
    await new Promise((r) => setTimeout(r, TAG_TTL_MS + 300));
    up.resetCounters();
    const stale = await Promise.all(Array.from({ length: 12 }, (_, k) => get(`${set.replicas[k % 3].url}/v2/${img.name}/manifests/v1`)));
    for (const r of stale) {
      assert.equal(r.status, 200);
      assert.equal(sha256(r.body), img.root.digest);
    }
    assert.equal(up.counters.manifestHead, 1, 'one HEAD revalidated the tag for every replica');
    assert.equal(up.counters.manifestGet, 0);
  });

  test('15.2 the peer endpoint answers only requests signed with the cluster secret', async () => {
    const [a] = set.replicas;
    const path = `/_regmirror/peer/blobs/sha256:${'0'.repeat(64)}`;
    const unsigned = await get(`${a.url}${path}`);
    assert.equal(unsigned.status, 401);
    const forged = await get(`${a.url}${path}`, { headers: { 'x-regmirror-peer': signPeerRequest('not-the-cluster-secret', 'GET', path) } });
    assert.equal(forged.status, 401);
    assert.match(forged.body.toString(), /bad peer signature/);
    const replayed = await get(`${a.url}${path}`, { headers: { 'x-regmirror-peer': signPeerRequest(CLUSTER_SECRET, 'GET', path, Date.now() - 5 * 60_000) } });
    assert.equal(replayed.status, 401);
    const signed = await get(`${a.url}${path}`, { headers: { 'x-regmirror-peer': signPeerRequest(CLUSTER_SECRET, 'GET', path) } });
    assert.equal(signed.status, 404, 'signed: heard, and told no such download runs here');
  });

  test('15.2 a process without cluster: that shares the replicas\' database refuses to start, naming the problem', async () => {
    const [a] = set.replicas;
    const text = (await readFile(a.config, 'utf8')).replace(/\ncluster:\n(  .*\n)+/, '\n').replace(/listen: "127\.0\.0\.1:\d+"/, `listen: "127.0.0.1:${await freePort()}"`);
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-solo-'));
    after(() => rm(dir, { recursive: true, force: true }));
    const config = join(dir, 'solo.yaml');
    await writeFile(config, text);
    const solo = serveChild(config, { AWS_ACCESS_KEY_ID: rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: rgw.secretAccessKey });
    const exit = await solo.exited;
    assert.equal(exit.code, 1);
    assert.match(solo.stderr(), /another regmirror \(http:\/\/127\.0\.0\.1:\d+\) shares this metadata database; replicas must all set cluster:/);
  });

  // Last: it leaves the replicas holding back from the upstream for a minute.
  test('15.2 a 429 one replica got holds the others back too: they answer 429 without asking the upstream', async () => {
    up.faults = { status: 429 };
    const [a, b, c] = set.replicas;
    const first = await get(`${a.url}/v2/library/limited/manifests/v1`);
    assert.equal(first.status, 429);
    // B and C learn it from A, not from asking: their status says so before any request.
    const limitedOn = async (r: typeof a) => {
      const status = JSON.parse((await get(`${r.url}/_regmirror/status`)).body.toString()) as { upstreams: Array<{ name: string; limitedUntil?: string }> };
      return status.upstreams.some((u) => u.name === 'docker.io' && u.limitedUntil !== undefined);
    };
    await until('B holds back', () => limitedOn(b), 10_000);
    await until('C holds back', () => limitedOn(c), 10_000);
    const heldBack = async (r: typeof a, name: string) => {
      const before = up.counters.total;
      const res = await get(`${r.url}/v2/${name}/manifests/v1`);
      return res.status === 429 && up.counters.total === before;
    };
    assert.ok(await heldBack(b, 'library/limited-b'), 'B answers 429 without asking');
    assert.ok(await heldBack(c, 'library/limited-c'), 'C answers 429 without asking');
    up.faults = {};
    assert.ok(await heldBack(b, 'library/limited-again'), 'still held back once the upstream answers again: Retry-After has not passed');
  });
});

