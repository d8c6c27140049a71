// storage.redirect: true on a real Ceph RGW: a warm blob GET is answered with a 307 to a
// presigned URL of the bucket, which real clients (skopeo, containerd) follow for the
// bytes; a cold GET and a HEAD go through the mirror as before.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { MediaTypes, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { createLogger } from '../src/log.js';
import { parseDigest } from '../src/oci/digest.js';
import { counter, downloadsSettled, get, sha256, startMirror, type Mirror } from './helpers.js';
import { requireTools, skopeoCopyVerified, startContainerd, writeHostsDir } from './e2e/harness.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';
import { freePort } from './support/daemons.js';

const HUB = { username: 'mirror-bot', password: 'hub-password-not-for-clients' };

const direct = await singleImage({ name: 'library/redir', tag: 'v1', seed: 'redirect-direct', layerSizes: [300_000, 2_000_000] });
const clients = await singleImage({ name: 'library/redir-clients', tag: 'v1', seed: 'redirect-clients', layerSizes: [500_000, 1_500_000] });

describe('storage.redirect: true on storage.backend s3 (Ceph RGW)', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  let up: FakeUpstream;
  let m: Mirror;

  before(async () => {
    rgw = await startRgw();
    const bucket = await rgw.createBucket('mirror-redirect');
    process.env.AWS_ACCESS_KEY_ID = rgw.accessKeyId;
    process.env.AWS_SECRET_ACCESS_KEY = rgw.secretAccessKey;
    // An upstream that wants credentials for its tokens: none of it may reach a client.
    up = await FakeUpstream.start({ auth: 'token', cdn: true, credentials: HUB });
    up.addImage(direct);
    up.addImage(clients);
    m = await startMirror({
      upstreams: [{ name: 'docker.io', url: up.url, credentials: HUB }],
      defaultUpstream: 'docker.io',
      storage: { backend: 's3', redirect: true, s3: { bucket, prefix: 'regmirror', endpoint: rgw.endpoint, region: rgw.region, forcePathStyle: true } },
    });
  });
  after(async () => {
    await m?.stop();
    await up?.close();
    await rgw?.destroy();
  });

  /** Every credential the mirror sent the upstream: the password and the Bearer tokens it got. */
  function upstreamSecrets(): string[] {
    const tokens = up.requests.map((r) => /^Bearer (.+)$/.exec(String(r.headers.authorization ?? ''))?.[1]).filter((t): t is string => t !== undefined);
    return [HUB.password, Buffer.from(`${HUB.username}:${HUB.password}`).toString('base64'), ...tokens];
  }

  const blobUrl = (img: FixtureImage, digest: string) => `${m.url}/v2/${img.name}/blobs/${digest}`;

  test('15.7 storage.redirect: a warm blob GET is a 307 to a presigned URL whose bytes match the digest', async () => {
    const manifest = await get(`${m.url}/v2/${direct.name}/manifests/${direct.tag}`, { headers: { accept: MediaTypes.ociManifest } });
    assert.equal(manifest.status, 200);
    // Cold: streamed through the mirror from the upstream.
    for (const [digest, bytes] of direct.blobs) {
      const res = await fetch(blobUrl(direct, digest), { redirect: 'manual' });
      assert.equal(res.status, 200, digest);
      assert.equal(res.headers.get('location'), null);
      assert.equal(sha256(Buffer.from(await res.arrayBuffer())), digest);
      assert.equal(Number(res.headers.get('content-length')), bytes.length);
    }
    await downloadsSettled(m);
    assert.equal(up.counters.blobGet, direct.blobs.size);
    const secrets = upstreamSecrets();
    assert.ok(secrets.length > 2, 'the mirror used upstream tokens');
    up.resetCounters();

    // Warm: a 307 to the bucket, whose URL gives the bytes without the mirror.
    for (const [digest, bytes] of direct.blobs) {
      const res = await fetch(blobUrl(direct, digest), { redirect: 'manual' });
      assert.equal(res.status, 307, digest);
      assert.equal(res.headers.get('docker-content-digest'), digest);
      assert.equal((await res.arrayBuffer()).byteLength, 0, 'no body');
      const location = res.headers.get('location') ?? '';
      assert.ok(location.startsWith(`${rgw.endpoint}/`), location);
      assert.match(location, /X-Amz-Signature=/);
      for (const s of secrets) assert.ok(!location.includes(s) && !location.includes(encodeURIComponent(s)), 'no upstream credential in the URL');
      const fromBucket = await fetch(location);
      assert.equal(fromBucket.status, 200);
      const body = Buffer.from(await fromBucket.arrayBuffer());
      assert.equal(body.length, bytes.length);
      assert.equal(sha256(body), digest);
    }

    // A range is redirected too, and the bucket honours it.
    const [digest, bytes] = [...direct.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    assert.ok(bytes.length > 100_000);
    const ranged = await fetch(blobUrl(direct, digest), { redirect: 'manual', headers: { range: 'bytes=1000-99999' } });
    assert.equal(ranged.status, 307);
    const part = await fetch(ranged.headers.get('location')!, { headers: { range: 'bytes=1000-99999' } });
    assert.equal(part.status, 206);
    assert.ok(Buffer.from(await part.arrayBuffer()).equals(bytes.subarray(1000, 100_000)));
    // A range past the end is still the mirror's 416, not a redirect.
    const past = await fetch(blobUrl(direct, digest), { redirect: 'manual', headers: { range: `bytes=${bytes.length}-` } });
    assert.equal(past.status, 416);

    // HEAD is answered by the mirror, as before.
    const head = await fetch(blobUrl(direct, digest), { method: 'HEAD', redirect: 'manual' });
    assert.equal(head.status, 200);
    assert.equal(head.headers.get('location'), null);
    assert.equal(Number(head.headers.get('content-length')), bytes.length);

    assert.equal(up.counters.blobGet, 0, 'warm: nothing from the upstream');
    const metrics = (await get(`${m.url}/metrics`)).body.toString();
    assert.equal(counter(metrics, 'regmirror_blob_redirects_total'), direct.blobs.size + 1);
    assert.match(metrics, new RegExp(`^regmirror_cache_results_total\\{kind="blob",result="hit"\\} ${direct.blobs.size + 1}$`, 'm'));
    assert.match(metrics, new RegExp(`^regmirror_blob_bytes_served_total\\{source="redirect"\\} ${[...direct.blobs.values()].reduce((n, b) => n + b.length, 0) + 99_000}$`, 'm'));
    const redirects = m.logs.map((l) => JSON.parse(l) as { msg: string; status?: number }).filter((e) => e.msg === 'request' && e.status === 307);
    assert.equal(redirects.length, direct.blobs.size + 1, 'each redirect is in the access log');
    assert.ok(!m.logs.some((l) => /X-Amz-(Signature|Credential)/i.test(l)), 'no log line holds a signature');
  });

  test('15.7 storage.redirect: a presigned URL that reaches a log line loses its signature there', async () => {
    const [digest, bytes] = [...direct.blobs][0];
    const url = await m.store.locate!(parseDigest(digest), bytes.length, { expiresInSeconds: 60 });
    assert.ok(url && (await fetch(url)).status === 200, 'a working URL');
    const lines: string[] = [];
    createLogger('debug', (l) => lines.push(l)).warn('odd', { location: url, err: new Error(`GET ${url} failed`) });
    assert.doesNotMatch(lines[0], /X-Amz-(Signature|Credential)/);
    assert.ok(lines[0].includes(url.slice(0, url.indexOf('?'))), 'the URL without its query is still there');
  });

  test('15.7 storage.redirect: skopeo and containerd follow the 307 to RGW and get right bytes', async (t) => {
    if (!requireTools(t, 'skopeo', 'containerd', 'ctr')) return;
    const ref = `127.0.0.1:${new URL(m.url).port}/${clients.name}:${clients.tag}`;
    // A first pull warms the cache through the mirror.
    await skopeoCopyVerified(t, ref, clients);
    await downloadsSettled(m);
    assert.equal(up.counters.blobGet, clients.blobs.size, 'the first pull came from the upstream');
    up.resetCounters();
    const before307 = redirectsOf(m, clients);

    await skopeoCopyVerified(t, ref, clients);
    assert.equal(up.counters.blobGet, 0, 'skopeo: no upstream blob GET');
    assert.equal(redirectsOf(m, clients), before307 + clients.blobs.size, 'skopeo was sent to the bucket for every blob');

    const ctrd = await startContainerd();
    t.after(() => ctrd.close());
    const hosts = await mkdtemp(join(tmpdir(), 'regmirror-hosts-'));
    t.after(() => rm(hosts, { recursive: true, force: true }));
    await writeHostsDir(hosts, [{ registry: 'docker.io', server: `http://127.0.0.1:${await freePort()}`, mirrorUrl: m.url }]);
    const image = `docker.io/${clients.name}:${clients.tag}`;
    const res = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', image]);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}\n--- mirror:\n${m.logs.slice(-20).join('\n')}`);
    const list = await ctrd.ctr(['images', 'ls']);
    assert.match(list.stdout, new RegExp(`^${image.replace(/[.]/g, '\\.')}\\s+\\S+\\s+${clients.root.digest}\\s`, 'm'));
    // containerd checks every blob against its digest as it writes it; these are all in.
    const content = await ctrd.ctr(['content', 'ls', '-q']);
    for (const digest of clients.blobs.keys()) assert.ok(content.stdout.includes(digest), `containerd holds ${digest}`);
    assert.equal(up.counters.blobGet, 0, 'containerd: no upstream blob GET');
    assert.equal(redirectsOf(m, clients), before307 + 2 * clients.blobs.size, 'containerd was sent to the bucket for every blob');
  });
});


/** 307 answers to GETs of the image's blobs in the mirror's access log so far. */
function redirectsOf(m: Mirror, img: FixtureImage): number {
  const paths = new Set([...img.blobs.keys()].map((d) => `/v2/${img.name}/blobs/${d}`));
  return m.logs
    .map((l) => JSON.parse(l) as { msg: string; method?: string; path?: string; status?: number })
    .filter((e) => e.msg === 'request' && e.method === 'GET' && e.status === 307 && paths.has(e.path ?? '')).length;
}
