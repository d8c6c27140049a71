// Signatures across the air gap: images signed the legacy way and with a bundle are
// prewarmed under an enforce policy (which caches their signatures), exported, imported
// into a fresh data dir and served by an offline mirror with the same policy. The signed
// ones pull (skopeo too, when installed); an unsigned image of the same bundle is flagged by
// the import and refused by the mirror; the referrers API answers from the cache.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { parsePolicies } from '../src/config-policies.js';
import { multiPlatformImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { generateKey, signBundle, signLegacy, writePublicKey } from '../fixtures/signing.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { requireTools, skopeoCopyVerified } from './e2e/harness.js';
import { cli, errorCode, get, startMirror, type CliResult, type Mirror } from './helpers.js';

let dir: string;
let offline: Mirror;
let imported: CliResult;
let prewarmed: CliResult;
const images: Record<string, FixtureImage> = {};

const ok = (r: CliResult, what: string) => assert.equal(r.code, 0, `${what}\n${r.stdout}\n${r.stderr}`);

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-sig-airgap-'));
  const legacyKey = generateKey('ecdsa');
  const bundleKey = generateKey('ed25519');
  const keys = [await writePublicKey(legacyKey, join(dir, 'legacy.pub')), await writePublicKey(bundleKey, join(dir, 'bundle.pub'))];
  const up = await FakeUpstream.start();
  for (const name of ['team/legacy', 'team/bundle', 'team/unsigned']) {
    images[name] = await singleImage({ name, tag: '1', seed: `gap-${name}` });
    up.addImage(images[name]);
  }
  images['team/multi'] = await multiPlatformImage({ name: 'team/multi', tag: '1', seed: 'gap-multi', platforms: [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }] });
  up.addImage(images['team/multi']);
  signLegacy(up, images['team/legacy'], legacyKey);
  signLegacy(up, images['team/multi'], legacyKey);
  await signBundle(up, images['team/bundle'], bundleKey);
  const policy = `policies:\n  - match: { repositories: ['team/**'] }\n    signatures: { mode: enforce, keys: [${keys.join(', ')}] }\n`;
  const config = (dataDir: string, url: string, offlineToo: boolean) =>
    `dataDir: ${dataDir}\ndefaultUpstream: docker.io\n${offlineToo ? 'offline: true\n' : ''}upstreams:\n  docker.io:\n    url: ${url}\n${policy}`;
  await writeFile(join(dir, 'connected.yaml'), config(join(dir, 'connected'), up.url, false));
  await writeFile(join(dir, 'gapped.yaml'), config(join(dir, 'gapped'), 'http://127.0.0.1:9', true));
  const refs = ['team/legacy:1', 'team/bundle:1', 'team/multi:1', 'team/unsigned:1'];
  try {
    prewarmed = await cli(['prewarm', '--config', join(dir, 'connected.yaml'), ...refs]);
    ok(prewarmed, 'prewarm');
    ok(await cli(['export', '--config', join(dir, 'connected.yaml'), '-o', join(dir, 'bundle.tar'), ...refs]), 'export');
  } finally {
    await up.close();
  }
  imported = await cli(['import', '--config', join(dir, 'gapped.yaml'), join(dir, 'bundle.tar')]);
  ok(imported, 'import');
  const policies = parsePolicies([{ match: { repositories: ['team/**'] }, signatures: { mode: 'enforce', keys } }], {});
  offline = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }], defaultUpstream: 'docker.io', dataDir: join(dir, 'gapped'), offline: true, policies });
});

after(async () => {
  await offline?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const manifest = (name: string, ref = '1') => get(`${offline.url}/v2/${name}/manifests/${ref}`, { headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } });

test('prewarm says which image no valid signature covers', () => {
  assert.match(prewarmed.stdout, /warning: docker\.io\/team\/unsigned:1: no signature under its signature policy/);
  assert.doesNotMatch(prewarmed.stdout, /warning: docker\.io\/team\/(legacy|bundle|multi)/);
});

test('the bundle carries the signatures, and the import flags the unsigned image', () => {
  assert.match(imported.stdout, /team\/legacy:sha256-[a-f0-9]{64}\.sig /);
  assert.match(imported.stdout, /team\/bundle:sha256-[a-f0-9]{64} /);
  assert.match(imported.stderr, /team\/unsigned:1: no signature; a signature policy in enforce mode refuses it/);
  assert.doesNotMatch(imported.stderr, /team\/(legacy|bundle|multi)/);
});

test('offline with enforce: signed images pull, the unsigned one is refused', async () => {
  for (const name of ['team/legacy', 'team/bundle', 'team/multi']) {
    const r = await manifest(name);
    assert.equal(r.status, 200, `${name}: ${r.body.toString()}`);
    assert.equal(r.headers['x-regmirror-signature'], 'verified');
  }
  for (const d of images['team/multi'].manifests.keys()) assert.equal((await manifest('team/multi', d)).status, 200, d);
  const refused = await manifest('team/unsigned');
  assert.equal(refused.status, 403);
  assert.equal(errorCode(refused), 'DENIED');
  assert.match(refused.body.toString(), /no signature/);
});

test('offline, the referrers API answers from the cache', async () => {
  const r = await get(`${offline.url}/v2/team/bundle/referrers/${images['team/bundle'].root.digest}`);
  assert.equal(r.status, 200);
  const index = JSON.parse(r.body.toString()) as { manifests: Array<{ artifactType: string }> };
  assert.deepEqual(index.manifests.map((m) => m.artifactType), ['application/vnd.dev.sigstore.bundle.v0.3+json']);
  const none = await get(`${offline.url}/v2/team/legacy/referrers/${images['team/legacy'].root.digest}`);
  assert.deepEqual((JSON.parse(none.body.toString()) as { manifests: unknown[] }).manifests, []);
});

test('skopeo pulls the signed images from the offline mirror', async (t) => {
  if (!requireTools(t, 'skopeo')) return;
  for (const name of ['team/legacy', 'team/bundle']) await skopeoCopyVerified(t, `127.0.0.1:${offline.port}/${name}:1`, images[name]);
});
