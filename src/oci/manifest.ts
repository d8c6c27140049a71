// Manifest media types, content negotiation and the little of a manifest's body the
// cache needs to read. The stored bytes are never re-serialised.
import { UpstreamInvalid } from '../errors.js';

export const OCI_MANIFEST = 'application/vnd.oci.image.manifest.v1+json';
export const OCI_INDEX = 'application/vnd.oci.image.index.v1+json';
export const DOCKER_MANIFEST = 'application/vnd.docker.distribution.manifest.v2+json';
export const DOCKER_LIST = 'application/vnd.docker.distribution.manifest.list.v2+json';

/** The four manifest media types, in the order they are sent upstream. */
export const MANIFEST_TYPES = [OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST] as const;
export type ManifestType = (typeof MANIFEST_TYPES)[number];

/** containerd's limit on a manifest body; an upstream that sends more is refused. */
export const MAX_MANIFEST_BYTES = 4 * 1024 * 1024;

/**
 * The set of manifest types a client accepts, as a bitmask over MANIFEST_TYPES. A tag
 * can resolve to an index for one client and to a single manifest for another, so the
 * cache keys a tag's digest by this class. No Accept header (or a wildcard) accepts all.
 */
export function acceptClass(accept: string | undefined): number {
  if (!accept) return ALL_TYPES;
  let mask = 0;
  for (const part of accept.split(',')) {
    const type = part.split(';')[0].trim().toLowerCase();
    if (type === '*/*' || type === 'application/*') return ALL_TYPES;
    const i = MANIFEST_TYPES.indexOf(type as ManifestType);
    if (i >= 0) mask |= 1 << i;
  }
  // A client that names only other types (e.g. application/json) gets what the upstream gives.
  return mask === 0 ? ALL_TYPES : mask;
}

export const ALL_TYPES = (1 << MANIFEST_TYPES.length) - 1;

/** The Accept header that asks an upstream for exactly the types in `mask`. */
export function acceptHeader(mask: number): string {
  return MANIFEST_TYPES.filter((_, i) => mask & (1 << i)).join(', ');
}

export function accepts(mask: number, mediaType: string): boolean {
  const i = MANIFEST_TYPES.indexOf(mediaType as ManifestType);
  return i < 0 ? mask === ALL_TYPES : (mask & (1 << i)) !== 0;
}

/** A content descriptor as manifests and indexes list them. */
export interface Descriptor {
  mediaType: string;
  digest: string;
  size: number;
  platform?: { os: string; architecture: string; variant?: string };
  annotations?: Record<string, string>;
}

export interface ParsedManifest {
  mediaType: string;
  /** For an index: the child manifests. */
  manifests: Descriptor[];
  /** For an image manifest: config and layers. */
  blobs: Descriptor[];
}

/**
 * Reads the media type and the descriptors of a manifest body. The media type comes
 * from the body when it says, else from the Content-Type the upstream sent, else from
 * the body's shape (OCI allows a manifest without `mediaType`).
 */
export function parseManifest(bytes: Uint8Array, contentType?: string): ParsedManifest {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new UpstreamInvalid('manifest is not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) throw new UpstreamInvalid('manifest is not a JSON object');
  const m = doc as { mediaType?: unknown; manifests?: unknown; config?: unknown; layers?: unknown };
  const header = contentType?.split(';')[0].trim();
  const declared = typeof m.mediaType === 'string' ? m.mediaType : undefined;
  const mediaType = declared ?? (header && header !== 'application/json' ? header : Array.isArray(m.manifests) ? OCI_INDEX : OCI_MANIFEST);
  // Only the fields the media type defines are references: an index that also carries
  // `layers` (CVE-2021-41190) must not make the mirror believe its repository holds them.
  if (isIndexType(mediaType)) return { mediaType, manifests: descriptors(m.manifests), blobs: [] };
  return { mediaType, manifests: [], blobs: [m.config, ...(Array.isArray(m.layers) ? m.layers : [])].filter(isDescriptor) };
}

function descriptors(list: unknown): Descriptor[] {
  return Array.isArray(list) ? list.filter(isDescriptor) : [];
}

function isDescriptor(v: unknown): v is Descriptor {
  const d = v as Descriptor;
  return typeof v === 'object' && v !== null && typeof d.digest === 'string' && typeof d.size === 'number';
}

/** A layer type whose bytes live at the descriptor's `urls` (Windows base layers), not necessarily in the registry. */
export function isNonDistributableType(mediaType: string): boolean {
  return /\.foreign\.|\.nondistributable\./.test(mediaType);
}

export function isIndexType(mediaType: string): boolean {
  return mediaType === OCI_INDEX || mediaType === DOCKER_LIST;
}
