// Where a manifest's signatures are: the legacy cosign tag `sha256-<hex>.sig` in the
// image's own repository, and Sigstore bundles among its referrers. Everything is fetched
// through the caches, so signature artifacts are cached, linked and exported like any
// content. The referrers found are kept as an index under the referrers tag schema's tag
// (ManifestCache.keepReferrers): an offline mirror and an imported bundle answer from it.
import type { BlobCache, Target } from '../cache/blobs.js';
import { referrersTag, type ManifestCache } from '../cache/manifests.js';
import { ManifestNotFound, NotInOfflineCache, RepositoryNotFound } from '../errors.js';
import type { Logger } from '../log.js';
import { digestOf, parseDigest, type Digest } from '../oci/digest.js';
import { OCI_INDEX, parseManifest, type Descriptor } from '../oci/manifest.js';
import type { ContentStore } from '../store/content-store.js';
import { legacySignatureTag, MAX_PAYLOAD_BYTES, signedLayers, SIMPLE_SIGNING } from './cosign-legacy.js';
import { BUNDLE_TYPE, MAX_BUNDLE_BYTES } from './bundle-media.js';

/** Bounds the work one subject can cause: of thousands of referrers (or `.sig` layers) the first few are read. */
const MAX_BUNDLES = 8;
const MAX_LEGACY_SIGNATURES = 16;

export type Artifact = { format: 'cosign-legacy'; payload: Buffer; signature: string } | { format: 'sigstore-bundle'; json: Buffer };

export interface Found {
  artifacts: Artifact[];
  /** A lookup that could not be answered (upstream down, a damaged artifact): absence proves nothing then. */
  failed?: string;
}

export interface FinderDeps {
  manifests: ManifestCache;
  blobs: BlobCache;
  store: ContentStore;
  log: Logger;
}

export class SignatureFinder {
  constructor(private readonly deps: FinderDeps) {}

  async find(t: Target, digest: Digest): Promise<Found> {
    const [legacy, bundles] = await Promise.all([this.#legacy(t, digest), this.#bundles(t, digest)]);
    const failed = [legacy.failed, bundles.failed].filter(Boolean).join('; ');
    return { artifacts: [...legacy.artifacts, ...bundles.artifacts], ...(failed ? { failed } : {}) };
  }

  async #legacy(t: Target, digest: Digest): Promise<Found> {
    let layers: Descriptor[];
    try {
      const sig = await this.deps.manifests.artifact(t, { tag: legacySignatureTag(digest) });
      layers = parseManifest(sig.bytes!, sig.mediaType).blobs;
    } catch (err) {
      return absent(err);
    }
    const artifacts: Artifact[] = [];
    const failed: string[] = [];
    // One unreadable payload does not hide the others: any one valid signature is enough.
    for (const l of signedLayers(layers).slice(0, MAX_LEGACY_SIGNATURES)) {
      try {
        artifacts.push({ format: 'cosign-legacy', payload: await this.#blob(t, l, MAX_PAYLOAD_BYTES), signature: l.signature });
      } catch (err) {
        failed.push((err as Error).message);
      }
    }
    await this.#smallBlobs(t, layers.slice(0, MAX_LEGACY_SIGNATURES + 1)).catch((err: Error) => failed.push(err.message));
    return { artifacts, ...(failed.length ? { failed: `reading ${legacySignatureTag(digest)}: ${failed.join('; ')}` } : {}) };
  }

  async #bundles(t: Target, digest: Digest): Promise<Found> {
    const listed = await this.#referrers(t, digest);
    if ('failed' in listed) return { artifacts: [], failed: listed.failed };
    const artifacts: Artifact[] = [];
    const failed: string[] = [];
    for (const d of listed.descriptors.slice(0, MAX_BUNDLES)) {
      try {
        const m = await this.deps.manifests.artifact(t, { digest: parseDigest(d.digest) });
        const blobs = parseManifest(m.bytes!, m.mediaType).blobs;
        await this.#smallBlobs(t, blobs);
        const layer = blobs.find((b) => b.mediaType === BUNDLE_TYPE);
        if (layer) artifacts.push({ format: 'sigstore-bundle', json: await this.#blob(t, layer, MAX_BUNDLE_BYTES) });
      } catch (err) {
        failed.push(`${d.digest}: ${(err as Error).message}`);
      }
    }
    return { artifacts, ...(failed.length ? { failed: `reading the referrers of ${digest}: ${failed.join('; ')}` } : {}) };
  }

  /** The subject's bundle referrers: from the upstream (and kept), or, offline or when it cannot answer, as kept. */
  async #referrers(t: Target, digest: Digest): Promise<{ descriptors: Descriptor[] } | { failed: string }> {
    const { manifests, log } = this.deps;
    if (!manifests.offline) {
      try {
        const body = await manifests.referrers(t, digest, '');
        const descriptors = bundleDescriptors(body.bytes);
        if (descriptors.length > 0) await manifests.keepReferrers(t, digest, Buffer.from(JSON.stringify({ schemaVersion: 2, mediaType: OCI_INDEX, manifests: descriptors })));
        return { descriptors };
      } catch (err) {
        if (err instanceof ManifestNotFound || err instanceof RepositoryNotFound) return this.#tagSchema(t, digest);
        log.debug('referrers lookup failed; using the ones kept', { repo: t.repository, digest, err: (err as Error).message });
      }
    }
    const kept = await manifests.keptReferrers(t, digest);
    return kept ? { descriptors: bundleDescriptors(kept) } : manifests.offline ? { descriptors: [] } : { failed: `the referrers of ${digest} could not be listed` };
  }

  /** The config of an artifact too (a few bytes), so that an export carries the artifact whole. */
  async #smallBlobs(t: Target, blobs: readonly Descriptor[]): Promise<void> {
    for (const b of blobs) if (b.mediaType !== BUNDLE_TYPE && b.mediaType !== SIMPLE_SIGNING && b.size <= MAX_PAYLOAD_BYTES) await this.deps.blobs.ensure(t, parseDigest(b.digest));
  }

  /**
   * A registry without the referrers API (it answers 404) keeps them as an index under the
   * tag `sha256-<hex>`, the same tag the mirror keeps them under, so both read alike.
   */
  async #tagSchema(t: Target, digest: Digest): Promise<{ descriptors: Descriptor[] } | { failed: string }> {
    try {
      const index = await this.deps.manifests.artifact(t, { tag: referrersTag(digest) });
      return { descriptors: bundleDescriptors(index.bytes!) };
    } catch (err) {
      const found = absent(err);
      return found.failed ? { failed: found.failed } : { descriptors: [] };
    }
  }

  /** A small blob's bytes, fetched through the cache and checked against its digest. */
  async #blob(t: Target, d: Descriptor, max: number): Promise<Buffer> {
    if (d.size > max) throw new Error(`${d.digest} is ${d.size} bytes, more than a signature artifact holds`);
    const digest = parseDigest(d.digest);
    await this.deps.blobs.ensure(t, digest);
    const bytes = await this.deps.store.read(digest);
    if (digestOf(bytes) !== digest) throw new Error(`${digest} is damaged in the cache`);
    return bytes;
  }
}

/** The Sigstore bundle artifacts an index (the referrers API's answer) lists. */
function bundleDescriptors(bytes: Buffer): Descriptor[] {
  let list: unknown;
  try {
    list = (JSON.parse(bytes.toString('utf8')) as { manifests?: unknown } | null)?.manifests;
  } catch {
    return [];
  }
  if (!Array.isArray(list)) return [];
  return list.filter((d): d is Descriptor & { artifactType: string } => {
    const x = d as { artifactType?: unknown; digest?: unknown; size?: unknown } | null;
    return x?.artifactType === BUNDLE_TYPE && typeof x.digest === 'string' && typeof x.size === 'number';
  });
}

/** A signature that is not there (404, or not in an offline cache) is an answer; anything else is a failed lookup. */
function absent(err: unknown): Found {
  if (err instanceof ManifestNotFound || err instanceof RepositoryNotFound || err instanceof NotInOfflineCache) return { artifacts: [] };
  return { artifacts: [], failed: (err as Error).message };
}
