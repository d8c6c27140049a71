// A Sigstore bundle (v0.3, the JSON a referrer artifact's layer holds) checked against a
// policy's public keys with @sigstore/verify. Key-based bundles carry no certificate and
// need no transparency log or timestamp, so the trust material is the configured keys
// alone and every threshold is 0. The bundle must be about this manifest: a message
// signature over its bytes, or a DSSE in-toto statement naming its digest as a subject.
import { bundleFromJSON, type Bundle } from '@sigstore/bundle';
import { toSignedEntity, Verifier, type TrustMaterial } from '@sigstore/verify';
import { digestHex, type Digest } from '../oci/digest.js';
import type { Outcome } from './outcome.js';
import type { Key, TrustedKeys } from './trusted-keys.js';

const IN_TOTO = 'application/vnd.in-toto+json';

/** `bundleJson` (the layer's bytes) for the manifest `digest` whose body is `manifest`. */
export function checkBundle(bundleJson: Buffer, digest: Digest, manifest: Buffer, keys: TrustedKeys): Outcome {
  const format = 'sigstore-bundle';
  let bundle: Bundle;
  try {
    bundle = bundleFromJSON(JSON.parse(bundleJson.toString('utf8')));
  } catch (err) {
    return { result: 'bad', why: `not a Sigstore bundle (${(err as Error).message})`, format };
  }
  const about = subjectProblem(bundle, digest);
  if (about) return { result: 'bad', why: about, format };
  const material = bundle.verificationMaterial.content;
  // Keyless (a Fulcio certificate) needs a trusted root, which this policy does not use.
  if (material.$case !== 'publicKey') return { result: 'untrusted', format };
  const hinted = keys.keys.filter((k) => k.id === material.publicKey.hint);
  for (const key of hinted.length > 0 ? hinted : keys.keys) {
    if (verifiesWith(bundle, manifest, key, keys)) return { result: 'valid', key: key.ref, format };
  }
  // Made with a key the policy names, yet it does not verify: altered.
  return hinted.length > 0 ? { result: 'bad', why: 'the signature does not verify', format } : { result: 'untrusted', format };
}

function verifiesWith(bundle: Bundle, manifest: Buffer, key: Key, keys: TrustedKeys): boolean {
  keys.count();
  const trust: TrustMaterial = {
    certificateAuthorities: [],
    timestampAuthorities: [],
    tlogs: [],
    ctlogs: [],
    publicKey: () => ({ publicKey: key.object, validFor: () => true }),
  };
  try {
    new Verifier(trust, { tlogThreshold: 0, ctlogThreshold: 0, timestampThreshold: 0 }).verify(toSignedEntity(bundle, manifest));
    return true;
  } catch {
    return false;
  }
}

/** Why the bundle is not about `digest`, or undefined when it is. */
function subjectProblem(bundle: Bundle, digest: Digest): string | undefined {
  const hex = digestHex(digest);
  if (bundle.content.$case === 'messageSignature') {
    const md = bundle.content.messageSignature.messageDigest;
    return Buffer.from(md.digest).toString('hex') === hex ? undefined : 'the message signature is over another digest';
  }
  const env = bundle.content.dsseEnvelope;
  if (env.payloadType !== IN_TOTO) return `the DSSE payload is ${env.payloadType}, not an in-toto statement`;
  let statement: unknown;
  try {
    statement = JSON.parse(Buffer.from(env.payload).toString('utf8'));
  } catch {
    return 'the DSSE payload is not JSON';
  }
  const subjects = (statement as { subject?: unknown } | null)?.subject;
  const named = Array.isArray(subjects) && subjects.some((s) => (s as { digest?: { sha256?: unknown } } | null)?.digest?.sha256 === hex);
  return named ? undefined : 'the in-toto statement does not name this digest';
}
