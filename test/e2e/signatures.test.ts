// Signature policy in enforce mode as real clients meet it: skopeo and containerd pull a
// legacy-signed image and a bundle-signed index through the mirror, and are refused the
// unsigned image and the one signed by a key the policy does not trust, with DENIED and
// without the mirror fetching a single blob of them.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test, type TestContext } from 'node:test';
import { parsePolicies } from '../../src/config-policies.js';
import { multiPlatformImage, singleImage, type FixtureImage } from '../../fixtures/images.js';
import { generateKey, signBundle, signLegacy } from '../../fixtures/signing.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { startMirror, type Mirror } from '../helpers.js';
import { requireTools, skopeo, skopeoCopyVerified, startContainerd, writeHostsDir } from './harness.js';

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

let up: FakeUpstream;
let mirror: Mirror;
let legacy: FixtureImage;
let bundled: FixtureImage;
let unsigned: FixtureImage;
let stranger: FixtureImage;

before(async () => {
  const key = generateKey('ecdsa');
  const other = generateKey('ecdsa');
  up = await FakeUpstream.start({ auth: 'token', cdn: true });
  legacy = await singleImage({ name: 'library/sig-legacy', tag: 'v1', seed: 'e2e-sig-legacy' });
  bundled = await multiPlatformImage({ name: 'library/sig-bundle', tag: 'v1', seed: 'e2e-sig-bundle', platforms });
  unsigned = await singleImage({ name: 'library/sig-none', tag: 'v1', seed: 'e2e-sig-none' });
  stranger = await singleImage({ name: 'library/sig-stranger', tag: 'v1', seed: 'e2e-sig-stranger' });
  for (const img of [legacy, bundled, unsigned, stranger]) up.addImage(img);
  signLegacy(up, legacy, key);
  await signBundle(up, bundled, key);
  signLegacy(up, stranger, other);
  const policies = parsePolicies([{ match: { upstream: 'docker.io', repositories: ['library/sig-*'] }, signatures: { mode: 'enforce', keys: [key.pem] } }], {});
  mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', policies });
});

after(async () => {
  await mirror?.stop();
  await up?.close();
});

function noBlobFetched(img: FixtureImage): void {
  for (const d of img.blobs.keys()) assert.equal(up.counters.blobGetByDigest.get(d) ?? 0, 0, `${img.name}: blob ${d} was fetched upstream`);
}

async function closedPort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

async function hostsDir(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-sig-hosts-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return writeHostsDir(dir, [{ registry: 'docker.io', server: `http://127.0.0.1:${await closedPort()}`, mirrorUrl: mirror.url }]);
}

test('skopeo copies the signed images and is refused the others with DENIED', async (t) => {
  if (!requireTools(t, 'skopeo')) return;
  await skopeoCopyVerified(t, `127.0.0.1:${mirror.port}/${legacy.name}:${legacy.tag}`, legacy);
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-sig-skopeo-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  const all = await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://127.0.0.1:${mirror.port}/${bundled.name}:${bundled.tag}`, `dir:${join(dir, 'bundled')}`]);
  assert.equal(all.code, 0, all.stderr);
  for (const [img, why] of [
    [unsigned, /no signature/],
    [stranger, /signed by a key not trusted/],
  ] as const) {
    const r = await skopeo(['copy', '--src-tls-verify=false', `docker://127.0.0.1:${mirror.port}/${img.name}:${img.tag}`, `dir:${join(dir, img.name.replace('/', '_'))}`]);
    assert.notEqual(r.code, 0, `${img.name} was copied`);
    assert.match(r.stderr, /denied/i, r.stderr);
    assert.match(r.stderr, why, r.stderr);
    noBlobFetched(img);
  }
});

test('containerd pulls the signed images and is refused the others', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr')) return;
  const ctrd = await startContainerd();
  t.after(() => ctrd.close());
  const hosts = await hostsDir(t);
  for (const img of [legacy, bundled]) {
    const r = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/arm64', `docker.io/${img.name}:${img.tag}`]);
    assert.equal(r.code, 0, `${img.name}\n${r.stderr}\n${mirror.logs.slice(-10).join('\n')}`);
  }
  for (const img of [unsigned, stranger]) {
    const r = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', `docker.io/${img.name}:${img.tag}`]);
    assert.notEqual(r.code, 0, `${img.name} was pulled`);
    const answers = mirror.logs.map((l) => JSON.parse(l) as { msg: string; path?: string; status?: number }).filter((e) => e.msg === 'request' && e.path === `/v2/${img.name}/manifests/${img.tag}`);
    assert.ok(answers.length > 0 && answers.every((e) => e.status === 403), `${img.name}: ${JSON.stringify(answers)}`);
    noBlobFetched(img);
  }
});
