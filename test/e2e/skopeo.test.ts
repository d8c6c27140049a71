// skopeo (containers/image) pulling through regmirror: in front of a real Distribution
// with token auth as the default upstream docker.io, and in front of a Docker-Hub-like
// fake as ghcr.io reached through a path prefix.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { multiPlatformImage, sha256, singleImage, type FixtureImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { startMirror, type Mirror } from '../helpers.js';
import { requireTools, skopeo, startDistribution } from './harness.js';

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

const single = await singleImage({ name: 'library/sk-single', tag: 'v1', seed: 'skopeo-single' });
const index = await multiPlatformImage({ name: 'library/sk-index', tag: 'v1', seed: 'skopeo-index', platforms });
const list = await multiPlatformImage({ name: 'library/sk-list', tag: 'v1', seed: 'skopeo-list', platforms, format: 'docker' });
const ghcrApp = await singleImage({ name: 'org/app', tag: 'v1', seed: 'skopeo-ghcr' });

/** Distribution (token auth) holding `images`, and regmirror with it as docker.io, the default. */
async function mirrorOfDistribution(t: TestContext, images: FixtureImage[]): Promise<Mirror> {
  const dist = await startDistribution();
  t.after(() => dist.close());
  for (const img of images) await dist.push(img);
  const mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: dist.url }], defaultUpstream: 'docker.io' });
  t.after(() => mirror.stop());
  return mirror;
}

async function tempDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-skopeo-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `skopeo copy` into a fresh dir: destination; returns the directory. */
async function copyToDir(t: TestContext, src: string, all = false): Promise<string> {
  const dest = join(await tempDir(t), 'out');
  const res = await skopeo(['copy', ...(all ? ['--all'] : []), '--src-tls-verify=false', src, `dir:${dest}`]);
  assert.equal(res.code, 0, `skopeo copy ${src}\n${res.stderr}`);
  return dest;
}

const ref = (mirror: Mirror, path: string) => `docker://127.0.0.1:${mirror.port}/${path}`;

/** The mirror's access-log entries. */
function served(mirror: Mirror): Array<{ path: string; status: number; repo?: string }> {
  return mirror.logs.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request');
}

/** Every content file in a dir: copy (blobs, and per-instance manifests with --all) hashes to its name. */
async function assertDirContentAddressed(dir: string): Promise<number> {
  let checked = 0;
  for (const file of await readdir(dir)) {
    const m = /^([a-f0-9]{64})(\.manifest\.json)?$/.exec(file);
    if (!m) continue;
    assert.equal(sha256(await readFile(join(dir, file))), `sha256:${m[1]}`, `${file} does not hash to its name`);
    checked++;
  }
  return checked;
}

test('skopeo copies a single-platform image through the mirror, by full and short name', async (t) => {
  if (!requireTools(t, 'docker-registry', 'openssl', 'skopeo')) return;
  const mirror = await mirrorOfDistribution(t, [single]);

  for (const path of [`${single.name}:${single.tag}`, `sk-single:${single.tag}`]) {
    const dir = await copyToDir(t, ref(mirror, path));
    assert.equal(sha256(await readFile(join(dir, 'manifest.json'))), single.root.digest, path);
    assert.equal(await assertDirContentAddressed(dir), single.blobs.size, `${path}: one file per blob`);

    const raw = await skopeo(['inspect', '--tls-verify=false', '--raw', ref(mirror, path)]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(sha256(raw.stdout), single.root.digest, path);
  }
  // The short name reached the mirror as written and was served as library/sk-single.
  const shortTag = served(mirror).filter((e) => e.path === `/v2/sk-single/manifests/${single.tag}`);
  assert.ok(shortTag.length > 0 && shortTag.every((e) => e.status === 200 && e.repo === single.name));
});

for (const img of [index, list]) {
  const kind = img === index ? 'OCI index' : 'Docker manifest list';
  test(`skopeo copy --all of a 2-platform ${kind} through the mirror`, async (t) => {
    if (!requireTools(t, 'docker-registry', 'openssl', 'skopeo')) return;
    const mirror = await mirrorOfDistribution(t, [img]);

    const dir = await copyToDir(t, ref(mirror, `${img.name}:${img.tag}`), true);
    assert.equal(sha256(await readFile(join(dir, 'manifest.json'))), img.root.digest);
    // Per platform: its manifest and its blobs (config + layer), all content-addressed.
    const children = img.manifests.size - 1;
    assert.equal(await assertDirContentAddressed(dir), children + img.blobs.size);

    const raw = await skopeo(['inspect', '--tls-verify=false', '--raw', ref(mirror, `${img.name}:${img.tag}`)]);
    assert.equal(raw.code, 0, raw.stderr);
    assert.equal(sha256(raw.stdout), img.root.digest);
  });
}

test('skopeo pulls a second upstream through its path prefix (ghcr.io, token auth, CDN redirects)', async (t) => {
  if (!requireTools(t, 'skopeo')) return;
  const up = await FakeUpstream.start({ auth: 'token', cdn: true });
  t.after(() => up.close());
  up.addImage(ghcrApp);
  // No default upstream: only the ghcr.io/ prefix can route these requests.
  const mirror = await startMirror({ upstreams: [{ name: 'ghcr.io', url: up.url }] });
  t.after(() => mirror.stop());

  const dir = await copyToDir(t, ref(mirror, `ghcr.io/${ghcrApp.name}:${ghcrApp.tag}`));
  assert.equal(sha256(await readFile(join(dir, 'manifest.json'))), ghcrApp.root.digest);
  assert.equal(await assertDirContentAddressed(dir), ghcrApp.blobs.size);
  assert.ok(up.counters.cdnGet > 0, 'blobs came through the upstream CDN redirect');
  assert.equal(up.counters.cdnAuthorization, 0, 'no Authorization header sent to the CDN');
});
