// Tag lists and referrers, passed through to the upstream (offline, both come from the
// cache). The upstream's pagination Link names its own repository path; it is rewritten to
// the path the client used.
import type { Context } from 'hono';
import type { ManifestCache } from '../cache/manifests.js';
import { InvalidReference, NotInOfflineCache } from '../errors.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { OCI_INDEX } from '../oci/manifest.js';
import { isTag } from '../oci/reference.js';
import type { ResolvedTarget } from './target.js';

export async function serveTags(c: Context, manifests: ManifestCache, t: ResolvedTarget): Promise<Response> {
  const params = new URLSearchParams();
  const n = c.req.query('n');
  const last = c.req.query('last');
  if (n !== undefined) {
    if (!/^\d{1,6}$/.test(n)) throw new InvalidReference('n must be a non-negative number');
    params.set('n', n);
  }
  if (last !== undefined) {
    if (!isTag(last)) throw new InvalidReference('last must be a tag');
    params.set('last', last);
  }
  if (manifests.offline) return serveCachedTags(c, manifests, t, n === undefined ? undefined : Number(n), last);
  const query = params.size ? `?${params}` : '';
  const body = await manifests.tags(t, query);
  const headers: Record<string, string> = { 'content-type': body.contentType ?? 'application/json' };
  const link = body.link && rewriteLink(body.link, t, c.req.query('ns'));
  if (link) headers.link = link;
  return c.body(new Uint8Array(body.bytes), 200, headers);
}

/** The distribution-spec tag list from the cache: lexical order, `n` and `last` paginate with a Link. */
async function serveCachedTags(c: Context, manifests: ManifestCache, t: ResolvedTarget, n: number | undefined, last: string | undefined): Promise<Response> {
  const all = await manifests.cachedTags(t);
  if (all.length === 0) throw new NotInOfflineCache('other', `no tag of ${t.repository} is in the offline cache (this mirror runs offline and never asks an upstream)`);
  const after = last === undefined ? all : all.filter((tag) => tag > last);
  const page = n === undefined ? after : after.slice(0, n);
  const headers: Record<string, string> = { 'content-type': 'application/json' };
  if (n !== undefined && n > 0 && page.length < after.length) {
    headers.link = rewriteLink(`</v2/${t.repository}/tags/list?${new URLSearchParams({ n: String(n), last: page.at(-1)! })}>; rel="next"`, t, c.req.query('ns'))!;
  }
  return c.body(JSON.stringify({ name: t.repository, tags: page }), 200, headers);
}

export async function serveReferrers(c: Context, manifests: ManifestCache, t: ResolvedTarget, reference: string): Promise<Response> {
  const digest = parseDigest(reference);
  const artifactType = c.req.query('artifactType');
  const query = artifactType ? `?${new URLSearchParams({ artifactType })}` : '';
  const body = manifests.offline ? await keptReferrers(manifests, t, digest) : await manifests.referrers(t, digest, query);
  const headers: Record<string, string> = { 'content-type': body.contentType ?? 'application/vnd.oci.image.index.v1+json' };
  const filtered = artifactType ? filterReferrers(body.bytes, artifactType) : undefined;
  if (filtered) headers['oci-filters-applied'] = 'artifactType';
  return c.body(new Uint8Array(filtered ?? body.bytes), 200, headers);
}

/** Offline, the referrers are those kept with the signatures the mirror checked (or imported): an empty index when none. */
async function keptReferrers(manifests: ManifestCache, t: ResolvedTarget, digest: Digest): Promise<{ bytes: Buffer; contentType: string }> {
  const kept = await manifests.keptReferrers(t, digest);
  return { bytes: kept ?? Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: [] })), contentType: OCI_INDEX };
}

/**
 * Upstreams need not filter (the spec lets them ignore artifactType), so the mirror does,
 * as distribution does, and only then says it did. A body that is no index is passed on
 * as it came, claiming nothing.
 */
function filterReferrers(bytes: Buffer, artifactType: string): Buffer | undefined {
  let index: unknown;
  try {
    index = JSON.parse(bytes.toString('utf8'));
  } catch {
    return undefined;
  }
  const list = (index as { manifests?: unknown } | null)?.manifests;
  if (typeof index !== 'object' || index === null || !Array.isArray(list)) return undefined;
  const manifests = list.filter((d) => (d as { artifactType?: unknown } | null)?.artifactType === artifactType);
  return Buffer.from(JSON.stringify({ ...index, manifests }));
}

/** `</v2/library/x/tags/list?n=2&last=b>; rel="next"` → the client's own path, keeping n and last. */
export function rewriteLink(link: string, t: ResolvedTarget, ns: string | undefined): string | undefined {
  const m = /<([^>]*)>/.exec(link);
  if (!m) return undefined;
  const url = new URL(m[1], 'http://upstream.invalid');
  const params = new URLSearchParams();
  for (const k of ['n', 'last']) {
    const v = url.searchParams.get(k);
    if (v !== null) params.set(k, v);
  }
  if (ns !== undefined) params.set('ns', ns);
  return `</v2/${t.prefix}${t.clientName}/tags/list?${params}>; rel="next"`;
}
