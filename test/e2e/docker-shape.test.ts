// The Docker daemon's pull, request by request, against regmirror configured as a
// `registry-mirrors` entry (no ?ns=, no path prefix: the default upstream docker.io).
// Docker 23/24's distribution client sends every registered manifest type as a separate
// Accept line (Go map order, so any order): HEAD by tag for the descriptor, which needs
// Content-Type, Docker-Content-Digest and Content-Length, then GET by that digest (GET by
// tag only as a fallback for broken registries), then the platform's manifest by digest.
import assert from 'node:assert/strict';
import { test, type TestContext } from 'node:test';
import { request } from 'undici';
import { MediaTypes, multiPlatformImage, singleImage, type FixtureImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { sha256, startMirror, type Fetched, type Mirror } from '../helpers.js';

/** distribution.ManifestMediaTypes() in Docker 24 (schema1 registers "" too, which is skipped). */
const DOCKER_ACCEPT = [
  MediaTypes.dockerManifest,
  MediaTypes.dockerList,
  MediaTypes.ociIndex,
  MediaTypes.ociManifest,
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
  'application/json',
];

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

const ociIndex = await multiPlatformImage({ name: 'library/shape-index', tag: 'v1', seed: 'shape-index', platforms });
const dockerList = await multiPlatformImage({ name: 'library/shape-list', tag: 'v1', seed: 'shape-list', platforms, format: 'docker' });
const dockerSingle = await singleImage({ name: 'library/shape-single', tag: 'v1', seed: 'shape-single', format: 'docker' });

async function setup(t: TestContext): Promise<{ up: FakeUpstream; mirror: Mirror }> {
  const up = await FakeUpstream.start({ auth: 'token', cdn: true });
  t.after(() => up.close());
  for (const img of [ociIndex, dockerList, dockerSingle]) up.addImage(img);
  const mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
  t.after(() => mirror.stop());
  return { up, mirror };
}

/** Sends `accept` as one header line per type, the way Go's Header.Add does. */
async function call(url: string, method: 'GET' | 'HEAD', accept: string[]): Promise<Fetched> {
  const headers = accept.flatMap((type) => ['accept', type]);
  const res = await request(url, { method, headers, signal: AbortSignal.timeout(20_000) });
  const body = Buffer.from(await res.body.arrayBuffer());
  const flat: Record<string, string> = {};
  for (const [k, v] of Object.entries(res.headers)) flat[k] = Array.isArray(v) ? v.join(', ') : (v ?? '');
  return { status: res.statusCode, headers: flat, body };
}

/** A manifest answer as Docker checks it; returns the GET body. */
async function expectManifest(mirror: Mirror, img: FixtureImage, ref: string, digest: string, accept = DOCKER_ACCEPT): Promise<Buffer> {
  const want = img.manifests.get(digest)!;
  const short = img.name.replace(/^library\//, '');
  const url = `${mirror.url}/v2/${short}/manifests/${ref}`;
  const head = await call(url, 'HEAD', accept);
  const get = await call(url, 'GET', accept);
  for (const [what, r] of [['HEAD', head], ['GET', get]] as const) {
    assert.equal(r.status, 200, `${what} ${url}: ${r.body}`);
    assert.equal(r.headers['content-type'], want.mediaType, `${what} ${url}`);
    assert.equal(r.headers['docker-content-digest'], digest, `${what} ${url}`);
  }
  assert.equal(head.body.length, 0);
  assert.equal(sha256(get.body), digest, 'Docker-Content-Digest is the sha256 of the GET body');
  assert.equal(head.headers['content-length'], String(get.body.length), 'HEAD Content-Length is the GET body length');
  assert.equal(get.headers['content-length'], String(get.body.length));
  assert.deepEqual(get.body, want.bytes, 'the upstream bytes, unchanged');
  return get.body;
}

/** `docker pull <short>:<tag>`: ping, tag HEAD, manifest by digest, platform child, config and layers. */
async function dockerPull(mirror: Mirror, img: FixtureImage): Promise<void> {
  const ping = await call(`${mirror.url}/v2/`, 'GET', []);
  assert.equal(ping.status, 200);
  assert.equal(ping.headers['docker-distribution-api-version'], 'registry/2.0');

  // Docker resolves the tag (HEAD) and then fetches by digest; the tag GET is its fallback.
  await expectManifest(mirror, img, img.tag, img.root.digest);
  const root = JSON.parse((await expectManifest(mirror, img, img.root.digest, img.root.digest)).toString());

  let image = root;
  if (root.manifests) {
    const amd64 = root.manifests.find((d: { platform: { architecture: string } }) => d.platform.architecture === 'amd64');
    image = JSON.parse((await expectManifest(mirror, img, amd64.digest, amd64.digest)).toString());
  }
  const short = img.name.replace(/^library\//, '');
  for (const blob of [image.config, ...image.layers] as Array<{ digest: string; size: number }>) {
    const r = await call(`${mirror.url}/v2/${short}/blobs/${blob.digest}`, 'GET', []);
    assert.equal(r.status, 200, `blob ${blob.digest}: ${r.body.subarray(0, 300)}`);
    assert.equal(r.body.length, blob.size);
    assert.equal(sha256(r.body), blob.digest);
  }
}

test('docker pull shape: OCI index', async (t) => {
  const { mirror } = await setup(t);
  await dockerPull(mirror, ociIndex);
});

test('docker pull shape: Docker manifest list', async (t) => {
  const { mirror } = await setup(t);
  await dockerPull(mirror, dockerList);
});

test('docker pull shape: single Docker v2 manifest', async (t) => {
  const { mirror } = await setup(t);
  await dockerPull(mirror, dockerSingle);
});

test('the Accept lines in another order give the same answers', async (t) => {
  const { mirror } = await setup(t);
  for (const img of [ociIndex, dockerList, dockerSingle]) {
    await expectManifest(mirror, img, img.tag, img.root.digest, [...DOCKER_ACCEPT].reverse());
  }
});

test('a client accepting only Docker v2 manifests gets the Docker v2 manifest', async (t) => {
  const { up, mirror } = await setup(t);
  const onlyV2 = [MediaTypes.dockerManifest];
  // Twice: the first answer comes from upstream, the second from the cache.
  await expectManifest(mirror, dockerSingle, dockerSingle.tag, dockerSingle.root.digest, onlyV2);
  await expectManifest(mirror, dockerSingle, dockerSingle.tag, dockerSingle.root.digest, onlyV2);
  assert.equal(up.counters.manifestGet, 1, 'one upstream GET, then cache hits');
  // Upstream was asked for what the client asked for, not for more.
  const asked = up.requests.find((r) => r.origin === 'registry' && r.method === 'GET' && r.path.includes('/manifests/'));
  assert.equal(asked?.headers.accept, MediaTypes.dockerManifest);
});
