// Signature policies on the manifest path, against a fake upstream holding images signed
// the legacy cosign way and with Sigstore bundles (fixtures/signing.ts): enforce serves
// only what a trusted key signed and refuses the rest with DENIED, naming the policy and
// the reason; warn serves and says so; an index's signature covers its platforms; a warm
// pull runs no verification.
import assert from 'node:assert/strict';
import { after, before, test } from 'node:test';
import { parsePolicies } from '../src/config-policies.js';
import { multiPlatformImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { generateKey, signBundle, signLegacy } from '../fixtures/signing.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, startMirror, type Mirror } from './helpers.js';

const trusted = generateKey('ecdsa');
const trustedEd = generateKey('ed25519');
const trustedRsa = generateKey('rsa');
const stranger = generateKey('ecdsa');

let up: FakeUpstream;
/** A registry without the referrers API: bundles listed under the referrers tag schema. */
let ghcr: FakeUpstream;
let mirror: Mirror;
const images: Record<string, FixtureImage> = {};

async function image(name: string, tag = '1'): Promise<FixtureImage> {
  const img = await singleImage({ name, tag, seed: `sig-${name}` });
  up.addImage(img);
  images[name] = img;
  return img;
}

before(async () => {
  up = await FakeUpstream.start();
  signLegacy(up, await image('team/legacy'), trusted);
  signLegacy(up, await image('team/rsa'), trustedRsa);
  signLegacy(up, await image('team/partly-missing'), trusted, { missingLayerFirst: true });
  await signBundle(up, await image('team/bundle'), trustedEd);
  await signBundle(up, await image('team/message'), trusted, { content: 'message' });
  await image('team/unsigned');
  signLegacy(up, await image('team/stranger'), stranger);
  await signBundle(up, await image('team/stranger-bundle'), stranger);
  signLegacy(up, await image('team/elsewhere'), trusted, { claims: images['team/legacy'].root.digest });
  await signBundle(up, await image('team/altered'), trustedEd, { corrupt: true });
  signLegacy(up, await image('pinned/named'), trusted, { reference: 'index.docker.io/pinned/other' });
  signLegacy(up, await image('pinned/right'), trusted);
  await image('warn/unsigned');
  signLegacy(up, await image('warnref/evil'), trusted, { reference: 'index.docker.io/other\r\nx-injected: 1\u00e9' });
  const multi = await multiPlatformImage({ name: 'team/multi', tag: '1', seed: 'sig-multi', platforms: [{ os: 'linux', architecture: 'amd64' }, { os: 'linux', architecture: 'arm64' }] });
  up.addImage(multi);
  images['team/multi'] = multi;
  signLegacy(up, multi, trusted);
  // A runnable image tagged like a signature is no signature artifact.
  const disguised = await singleImage({ name: 'team/disguised', tag: `sha256-${'b'.repeat(64)}.sig`, seed: 'sig-disguised' });
  up.addImage(disguised);
  images['team/disguised'] = disguised;
  ghcr = await FakeUpstream.start();
  ghcr.referrersApi = false;
  images['org/app'] = await singleImage({ name: 'org/app', tag: '1', seed: 'sig-ghcr' });
  ghcr.addImage(images['org/app']);
  await signBundle(ghcr, images['org/app'], trusted, { tagSchema: true });
  images['org/unsigned'] = await singleImage({ name: 'org/unsigned', tag: '1', seed: 'sig-ghcr-unsigned' });
  ghcr.addImage(images['org/unsigned']);
  const keys = [trusted.pem, trustedEd.pem, trustedRsa.pem];
  const policies = parsePolicies(
    [
      { match: { repositories: ['warn/**'] }, signatures: { mode: 'warn', keys } },
      { match: { repositories: ['warnref/*'] }, signatures: { mode: 'warn', keys, matchReference: true } },
      { match: { repositories: ['pinned/*'] }, signatures: { mode: 'enforce', keys, matchReference: true } },
      { match: { upstream: 'docker.io', repositories: ['team/**'] }, signatures: { mode: 'enforce', keys } },
      { match: { upstream: 'ghcr.io' }, signatures: { mode: 'enforce', keys } },
    ],
    {},
  );
  mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }, { name: 'ghcr.io', url: ghcr.url }], defaultUpstream: 'docker.io', policies });
});

after(async () => {
  await mirror?.stop();
  await up?.close();
  await ghcr?.close();
});

const manifest = (name: string, ref = '1', method: 'GET' | 'HEAD' = 'GET') =>
  get(`${mirror.url}/v2/${name}/manifests/${ref}`, { method, headers: { accept: 'application/vnd.oci.image.index.v1+json, application/vnd.oci.image.manifest.v1+json' } });

async function metric(name: string): Promise<number> {
  const text = await mirror.metrics.registry.metrics();
  return text
    .split('\n')
    .filter((l) => l.startsWith(name))
    .reduce((sum, l) => sum + Number(l.split(' ').at(-1)), 0);
}

/** The events of one kind the server lists for a repository (GET /_regmirror/events, as `regmirror events --server` reads it). */
async function eventsFor(kind: string, repository: string): Promise<Array<{ repository: string; digest: string; message: string }>> {
  const r = await get(`${mirror.url}/_regmirror/events?kind=${kind}`);
  assert.equal(r.status, 200, r.body.toString());
  return (JSON.parse(r.body.toString()) as Array<{ repository: string; digest: string; message: string }>).filter((e) => e.repository === repository);
}

function refusal(r: Awaited<ReturnType<typeof get>>): string {
  assert.equal(r.status, 403, r.body.toString());
  assert.equal(errorCode(r), 'DENIED');
  return (JSON.parse(r.body.toString()) as { errors: Array<{ message: string }> }).errors[0].message;
}

test('enforce serves images signed by a trusted key: legacy (ECDSA, RSA; one unreadable signature beside a good one) and bundles (DSSE Ed25519, message signature)', async () => {
  for (const name of ['team/legacy', 'team/rsa', 'team/bundle', 'team/message', 'team/partly-missing']) {
    const r = await manifest(name);
    assert.equal(r.status, 200, `${name}: ${r.body.toString()}`);
    assert.equal(r.headers['docker-content-digest'], images[name].root.digest);
    assert.equal(r.headers['x-regmirror-signature'], 'verified');
    const byDigest = await manifest(name, images[name].root.digest, 'HEAD');
    assert.equal(byDigest.status, 200, name);
  }
});

test('enforce refuses with DENIED naming the policy and the reason', async () => {
  assert.match(refusal(await manifest('team/unsigned')), /policies\[3\]: no signature/);
  assert.match(refusal(await manifest('team/unsigned', images['team/unsigned'].root.digest)), /no signature/);
  assert.equal((await manifest('team/unsigned', '1', 'HEAD')).status, 403);
  assert.match(refusal(await manifest('team/stranger')), /policies\[3\]: signed by a key not trusted/);
  assert.match(refusal(await manifest('team/stranger-bundle')), /signed by a key not trusted/);
  assert.match(refusal(await manifest('team/elsewhere')), /bad signature \(the payload signs sha256:/);
  assert.match(refusal(await manifest('team/altered')), /bad signature/);
  // The refused images' blobs were never asked for.
  for (const name of ['team/unsigned', 'team/stranger', 'team/altered']) {
    for (const d of images[name].blobs.keys()) assert.equal(up.counters.blobGetByDigest.get(d) ?? 0, 0, `${name} ${d}`);
  }
  const refused = await eventsFor('image_refused', 'team/stranger');
  assert.ok(refused.length >= 1 && refused.every((e) => e.digest === images['team/stranger'].root.digest && /signed by a key not trusted/.test(e.message)), JSON.stringify(refused));
});

test('matchReference compares the signed docker-reference, Docker Hub names normalised', async () => {
  assert.equal((await manifest('pinned/right')).status, 200);
  assert.match(refusal(await manifest('pinned/named')), /policies\[2\]: bad signature \(the payload names index\.docker\.io\/pinned\/other\)/);
});

test('warn serves an unsigned image, with a header, a log line and a count', async () => {
  const before = await metric('regmirror_signature_checks_total{mode="warn",result="unverified"}');
  const r = await manifest('warn/unsigned');
  assert.equal(r.status, 200);
  assert.match(r.headers['x-regmirror-signature'], /^unverified; no signature; policy policies\[0\]$/);
  assert.equal(await metric('regmirror_signature_checks_total{mode="warn",result="unverified"}'), before + 1);
  assert.ok(mirror.logs.some((l) => l.includes('image served without a valid signature') && l.includes('warn/unsigned')));
  const recorded = await eventsFor('signature_failed', 'warn/unsigned');
  assert.deepEqual(recorded.map((e) => e.digest), [images['warn/unsigned'].root.digest], 'warn records the failure as an event');
});

test('a signature on an index covers its platform manifests; a warm pull runs no verification', async () => {
  const multi = images['team/multi'];
  const children = [...multi.manifests.keys()].filter((d) => d !== multi.root.digest);
  assert.equal((await manifest('team/multi')).status, 200);
  for (const d of children) assert.equal((await manifest('team/multi', d)).status, 200, d);
  const verifications = await metric('regmirror_signature_verifications_total');
  assert.ok(verifications > 0);
  const upstreamBefore = up.counters.total;
  for (const name of ['team/legacy', 'team/bundle', 'team/multi']) assert.equal((await manifest(name)).status, 200);
  for (const d of children) assert.equal((await manifest('team/multi', d)).status, 200);
  assert.equal(await metric('regmirror_signature_verifications_total'), verifications, 'warm pulls verify nothing');
  assert.equal(up.counters.total, upstreamBefore, 'nor ask the upstream');
});

test('the signature artifacts themselves are served under enforce', async () => {
  const tag = `sha256-${images['team/legacy'].root.digest.slice(7)}.sig`;
  assert.equal((await manifest('team/legacy', tag)).status, 200);
  const referrers = await get(`${mirror.url}/v2/team/bundle/referrers/${images['team/bundle'].root.digest}`);
  const [artifact] = (JSON.parse(referrers.body.toString()) as { manifests: Array<{ digest: string }> }).manifests;
  assert.equal((await manifest('team/bundle', artifact.digest)).status, 200);
});

test('a registry without the referrers API: bundles are found under the referrers tag schema', async () => {
  const r = await get(`${mirror.url}/v2/org/app/manifests/1?ns=ghcr.io`);
  assert.equal(r.status, 200, r.body.toString());
  assert.equal(r.headers['x-regmirror-signature'], 'verified');
  assert.match(refusal(await get(`${mirror.url}/v2/org/unsigned/manifests/1?ns=ghcr.io`)), /policies\[4\]: no signature/);
});

test('a runnable image tagged like a signature artifact is checked like any image', async () => {
  assert.match(refusal(await manifest('team/disguised', images['team/disguised'].tag)), /no signature/);
});

test('warn: a reason quoting the upstream stays one printable header line', async () => {
  const r = await manifest('warnref/evil');
  assert.equal(r.status, 200);
  assert.equal(r.headers['x-injected'], undefined);
  assert.match(r.headers['x-regmirror-signature'], /^unverified; bad signature \(the payload names index\.docker\.io\/other\?\?x-injected: 1\?\); policy policies\[1\]$/);
});
