// cosign's original signature layout: a manifest tagged `sha256-<hex>.sig` in the image's
// own repository whose layers are simple-signing payloads, each layer's signature (base64)
// in its annotation `dev.cosignproject.cosign/signature`. The payload names the digest
// it signs in `critical.image.docker-manifest-digest`; the signature is over the payload
// bytes exactly as stored.
import { digestHex, type Digest } from '../oci/digest.js';
import type { Descriptor } from '../oci/manifest.js';
import type { Outcome } from './outcome.js';
import type { TrustedKeys } from './trusted-keys.js';

export const SIMPLE_SIGNING = 'application/vnd.dev.cosign.simplesigning.v1+json';
export const SIGNATURE_ANNOTATION = 'dev.cosignproject.cosign/signature';
/** A signature payload is a few hundred bytes; anything much larger is not one. */
export const MAX_PAYLOAD_BYTES = 64 * 1024;

/** `sha256:ab…` → `sha256-ab….sig`. */
export function legacySignatureTag(digest: Digest): string {
  return `sha256-${digestHex(digest)}.sig`;
}

/** The layers of a `.sig` manifest that carry a signature. */
export function signedLayers(layers: readonly Descriptor[]): Array<Descriptor & { signature: string }> {
  return layers.flatMap((l) => {
    const signature = l.annotations?.[SIGNATURE_ANNOTATION];
    return l.mediaType === SIMPLE_SIGNING && typeof signature === 'string' && l.size <= MAX_PAYLOAD_BYTES ? [{ ...l, signature }] : [];
  });
}

export interface PayloadClaims {
  digest?: string;
  reference?: string;
}

/** The digest and reference a simple-signing payload claims; undefined when it is not one. */
export function payloadClaims(payload: Buffer): PayloadClaims | undefined {
  let doc: unknown;
  try {
    doc = JSON.parse(payload.toString('utf8'));
  } catch {
    return undefined;
  }
  const critical = (doc as { critical?: unknown } | null)?.critical;
  if (typeof critical !== 'object' || critical === null) return undefined;
  const c = critical as { image?: Record<string, unknown>; identity?: Record<string, unknown> };
  // The spec's example writes `Docker-manifest-digest`, cosign writes it in lower case.
  const digest = Object.entries(c.image ?? {}).find(([k]) => k.toLowerCase() === 'docker-manifest-digest')?.[1];
  const reference = c.identity?.['docker-reference'];
  return { ...(typeof digest === 'string' ? { digest } : {}), ...(typeof reference === 'string' ? { reference } : {}) };
}

/**
 * Checks one payload and its signature for `digest`. The claim is read before any
 * cryptography: a payload naming another image is a bad signature for this one.
 */
export function checkLegacy(payload: Buffer, signatureB64: string, digest: Digest, keys: TrustedKeys, referenceOk: (ref: string | undefined) => boolean): Outcome {
  const format = 'cosign-legacy';
  const claims = payloadClaims(payload);
  if (!claims) return { result: 'bad', why: 'the payload is not a simple-signing document', format };
  if (claims.digest !== digest) return { result: 'bad', why: `the payload signs ${claims.digest ?? 'no digest'}`, format };
  if (!referenceOk(claims.reference)) return { result: 'bad', why: `the payload names ${claims.reference ?? 'no repository'}`, format };
  if (!/^[A-Za-z0-9+/=\s]+$/.test(signatureB64)) return { result: 'bad', why: 'the signature annotation is not base64', format };
  const key = keys.signerOf(payload, Buffer.from(signatureB64, 'base64'));
  return key ? { result: 'valid', key: key.ref, format } : { result: 'untrusted', format };
}
