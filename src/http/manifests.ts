// Manifest HEAD and GET by tag or digest. The stored bytes are returned exactly as the
// upstream sent them; HEAD carries Docker-Content-Digest and Content-Length so that
// containerd does not follow up with a GET just to learn them.
import type { Context } from 'hono';
import type { ManifestCache } from '../cache/manifests.js';
import { InvalidDigest, InvalidReference, ManifestNotFound, UnsupportedDigest } from '../errors.js';
import { acceptClass } from '../oci/manifest.js';
import { parseManifestRef, type ManifestRef } from '../oci/reference.js';
import { SIGNATURE_HEADER } from '../policy/outcome.js';
import type { SignatureGuard } from '../policy/signature-guard.js';
import { sendBytes } from './direct-response.js';
import type { ResolvedTarget } from './target.js';

export async function serveManifest(c: Context, manifests: ManifestCache, t: ResolvedTarget, reference: string, signatures?: SignatureGuard): Promise<Response> {
  const ref = existingRef(reference);
  const withBody = c.req.method !== 'HEAD';
  const m = await manifests.get(t, ref, acceptClass(c.req.header('accept')), withBody);
  c.set('cache', m.source);
  // Before the client sees the manifest, and so before it could ask for any of its blobs.
  const signature = await signatures?.check(t, m);
  const headers: Record<string, string> = {
    'content-type': m.mediaType,
    'content-length': String(m.size),
    'docker-content-digest': m.digest,
    etag: `"${m.digest}"`,
  };
  // RFC 7234's stale warning: the tag was served as cached because the upstream could not be asked.
  if (m.stale !== undefined) headers.warning = '110 regmirror "Response is Stale"';
  if (signature !== undefined) headers[SIGNATURE_HEADER] = signature;
  return sendBytes(c, 200, headers, withBody && m.bytes ? m.bytes : null);
}

/**
 * A reference outside the grammar names no manifest anywhere: not found, with nothing asked
 * upstream, as distribution's router answers (the conformance suite checks it). A digest of
 * an algorithm the mirror does not store could exist, so that one stays a DIGEST_INVALID.
 */
function existingRef(reference: string): ManifestRef {
  try {
    return parseManifestRef(reference);
  } catch (err) {
    if (err instanceof UnsupportedDigest) throw err;
    if (err instanceof InvalidReference || err instanceof InvalidDigest) throw new ManifestNotFound(reference.slice(0, 140));
    throw err;
  }
}
