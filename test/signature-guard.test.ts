// The guard below HTTP, over a real cache: the events a decision records (once per
// decision, not per retry), concurrent first pulls sharing one verification, and the
// payload rules of the legacy format that clients never show (claims read before
// cryptography, the spec's mixed-case key).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { openCache, type CacheContext } from '../src/cli/context.js';
import { parsePolicies } from '../src/config-policies.js';
import { DEFAULTS } from '../src/config.js';
import { SignatureRefused } from '../src/errors.js';
import type { NewEvent } from '../src/events/event.js';
import { silentLogger } from '../src/log.js';
import { ALL_TYPES } from '../src/oci/manifest.js';
import { parseDigest } from '../src/oci/digest.js';
import { checkLegacy, payloadClaims } from '../src/policy/cosign-legacy.js';
import { SignatureFinder } from '../src/policy/signature-finder.js';
import { SignatureGuard } from '../src/policy/signature-guard.js';
import { checkBundle } from '../src/policy/sigstore-bundle.js';
import { TrustedKeys } from '../src/policy/trusted-keys.js';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { generateKey, rawSign, signBundle, signLegacy } from '../fixtures/signing.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { metadataConfigFor } from './support/metadata-backend.js';

const key = generateKey('ecdsa');
let dir: string;
let up: FakeUpstream;
let ctx: CacheContext;
let guard: SignatureGuard;
const events: NewEvent[] = [];
const images: Record<string, FixtureImage> = {};

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-guard-'));
  up = await FakeUpstream.start();
  for (const name of ['strict/unsigned', 'loose/unsigned', 'strict/signed']) {
    images[name] = await singleImage({ name, tag: '1', seed: `guard-${name}` });
    up.addImage(images[name]);
  }
  signLegacy(up, images['strict/signed'], key);
  const policies = parsePolicies(
    [
      { match: { repositories: ['loose/*'] }, signatures: { mode: 'warn', keys: [key.pem] } },
      { match: { repositories: ['strict/*'] }, signatures: { mode: 'enforce', keys: [key.pem] } },
    ],
    {},
  );
  const dataDir = join(dir, 'data');
  ctx = await openCache(
    { ...structuredClone(DEFAULTS), dataDir, metadata: await metadataConfigFor(dataDir), defaultUpstream: 'docker.io', upstreams: [{ ...DEFAULTS.upstreams[0], url: up.url, aliases: [] }], policies },
    { log: silentLogger },
  );
  const finder = new SignatureFinder({ manifests: ctx.manifests, blobs: ctx.blobs, store: ctx.store, log: silentLogger });
  guard = new SignatureGuard({ policies: ctx.policies, finder, manifests: ctx.manifests, events: { record: (e) => events.push(e) }, log: silentLogger, metrics: ctx.metrics });
});

after(async () => {
  await ctx?.close();
  await up?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const target = (repository: string) => ({ upstream: ctx.upstreams.lookup('docker.io')!, repository });
const pulled = (repository: string) => ctx.manifests.get(target(repository), { tag: '1' }, ALL_TYPES, true);
const verifications = async () => (await ctx.metrics.signatureVerifications.get()).values.reduce((n, v) => n + v.value, 0);

test('enforce: a refusal records one image_refused event per decision, not per retry', async () => {
  const m = await pulled('strict/unsigned');
  for (let i = 0; i < 3; i++) {
    await assert.rejects(async () => guard.check(target('strict/unsigned'), m), (err: unknown) => err instanceof SignatureRefused && err.reason === 'no signature' && err.policy === 'policies[1]');
  }
  const refused = events.filter((e) => e.kind === 'image_refused');
  assert.equal(refused.length, 1);
  assert.equal(refused[0].repository, 'strict/unsigned');
  assert.equal(refused[0].digest, images['strict/unsigned'].root.digest);
  assert.deepEqual(refused[0].details, { policy: 'policies[1]', reason: 'no signature', mode: 'enforce' });
});

test('warn: served with the reason, and a signature_failed event', async () => {
  const m = await pulled('loose/unsigned');
  assert.equal(await guard.check(target('loose/unsigned'), m), 'unverified; no signature; policy policies[0]');
  assert.deepEqual(events.filter((e) => e.kind === 'signature_failed').map((e) => e.repository), ['loose/unsigned']);
});

test('concurrent first pulls of one digest share one verification', async () => {
  const m = await pulled('strict/signed');
  const before = await verifications();
  const answers = await Promise.all(Array.from({ length: 10 }, () => guard.check(target('strict/signed'), m)));
  assert.deepEqual(new Set(answers), new Set(['verified']));
  assert.equal(await verifications(), before + 1);
});

test('legacy payloads: the claim is checked before any cryptography, in either spelling of its key', () => {
  const digest = parseDigest(images['strict/signed'].root.digest);
  let counted = 0;
  const keys = new TrustedKeys([{ ref: 'k', pem: key.pem }], () => counted++);
  const payload = (claim: string, spelling = 'docker-manifest-digest') => Buffer.from(JSON.stringify({ critical: { identity: { 'docker-reference': 'x' }, image: { [spelling]: claim }, type: 'cosign container image signature' } }));
  const other = payload('sha256:' + 'a'.repeat(64));
  assert.deepEqual(checkLegacy(other, rawSign(key, other).toString('base64'), digest, keys, () => true), { result: 'bad', why: `the payload signs sha256:${'a'.repeat(64)}`, format: 'cosign-legacy' });
  assert.equal(counted, 0);
  const mixed = payload(digest, 'Docker-manifest-digest');
  assert.equal(payloadClaims(mixed)?.digest, digest);
  assert.equal(checkLegacy(mixed, rawSign(key, mixed).toString('base64'), digest, keys, () => true).result, 'valid');
  assert.equal(checkLegacy(mixed, rawSign(generateKey('ed25519'), mixed).toString('base64'), digest, keys, () => true).result, 'untrusted');
  assert.equal(checkLegacy(Buffer.from('not json'), 'AAAA', digest, keys, () => true).result, 'bad');
  assert.equal(counted, 2);
});

test('bundles: about another manifest, or not a bundle, is a bad signature; a foreign key is untrusted', async () => {
  const img = images['strict/signed'];
  const digest = parseDigest(img.root.digest);
  const keys = new TrustedKeys([{ ref: 'k', pem: key.pem }]);
  const bundleOf = async (signer: typeof key, content: 'dsse' | 'message', subject = img.root) => {
    const artifact = await signBundle(up, img, signer, { content, subject });
    return [...artifact.blobs.values()].find((b) => b.length > 2)!;
  };
  const other = images['strict/unsigned'].root;
  assert.equal(checkBundle(await bundleOf(key, 'message'), digest, img.root.bytes, keys).result, 'valid');
  assert.equal(checkBundle(await bundleOf(key, 'dsse'), digest, img.root.bytes, keys).result, 'valid');
  assert.deepEqual(checkBundle(await bundleOf(key, 'message', other), digest, img.root.bytes, keys), { result: 'bad', why: 'the message signature is over another digest', format: 'sigstore-bundle' });
  assert.deepEqual(checkBundle(await bundleOf(key, 'dsse', other), digest, img.root.bytes, keys), { result: 'bad', why: 'the in-toto statement does not name this digest', format: 'sigstore-bundle' });
  assert.equal(checkBundle(await bundleOf(generateKey('ecdsa'), 'dsse'), digest, img.root.bytes, keys).result, 'untrusted');
  assert.equal(checkBundle(Buffer.from('{"mediaType":"nope"}'), digest, img.root.bytes, keys).result, 'bad');
});
