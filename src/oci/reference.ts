// The distribution-spec grammar for repository names, tags and references, and the parser
// of `/v2/...` paths. Pure functions: nothing here touches the disk or the network.
import { InvalidName, InvalidReference } from '../errors.js';
import { isDigest, parseDigest, type Digest } from './digest.js';

const NAME_COMPONENT = /^[a-z0-9]+(?:(?:\.|_|__|-+)[a-z0-9]+)*$/;
const TAG = /^[A-Za-z0-9_][A-Za-z0-9._-]{0,127}$/;
/** distribution's limit on the whole repository name. */
export const MAX_NAME_LENGTH = 255;

export type ManifestRef = { tag: string; digest?: undefined } | { digest: Digest; tag?: undefined };

/** What a `/v2/...` path asks for. `name` is raw path text: validate it after routing. */
export type V2Path =
  | { kind: 'base' }
  | { kind: 'manifest'; name: string; reference: string }
  | { kind: 'blob'; name: string; reference: string }
  | { kind: 'tags'; name: string }
  | { kind: 'referrers'; name: string; reference: string };

/**
 * Splits a request path below `/v2/` into its resource kind, repository name and
 * reference. Names contain slashes, so the kind is read from the end of the path.
 * Returns undefined for paths that are no pull-API resource.
 */
export function parseV2Path(path: string): V2Path | undefined {
  if (path === '/v2' || path === '/v2/') return { kind: 'base' };
  if (!path.startsWith('/v2/')) return undefined;
  const parts = path.slice(4).split('/');
  if (parts.length < 3) return undefined;
  const last = parts[parts.length - 1];
  const keyword = parts[parts.length - 2];
  const name = parts.slice(0, -2).join('/');
  switch (keyword) {
    case 'manifests':
      return { kind: 'manifest', name, reference: last };
    case 'blobs':
      return { kind: 'blob', name, reference: last };
    case 'referrers':
      return { kind: 'referrers', name, reference: last };
    case 'tags':
      return last === 'list' ? { kind: 'tags', name } : undefined;
    default:
      return undefined;
  }
}

/** Throws InvalidName unless `name` matches the spec's repository name grammar. */
export function validateName(name: string): string {
  if (name.length === 0) throw new InvalidName('repository name is empty');
  if (name.length > MAX_NAME_LENGTH) throw new InvalidName(`repository name is longer than ${MAX_NAME_LENGTH} characters`);
  for (const component of name.split('/')) {
    if (!NAME_COMPONENT.test(component)) {
      throw new InvalidName(`invalid repository name ${JSON.stringify(name.slice(0, 80))}`);
    }
  }
  return name;
}

export function isTag(text: string): boolean {
  return TAG.test(text);
}

/** A manifest reference is a tag or a digest; anything else is refused before any I/O. */
export function parseManifestRef(text: string): ManifestRef {
  if (text.includes(':')) return { digest: parseDigest(text) };
  if (!TAG.test(text)) throw new InvalidReference(`invalid tag ${JSON.stringify(text.slice(0, 80))}`);
  return { tag: text };
}

export function refString(ref: ManifestRef): string {
  return ref.tag ?? ref.digest;
}

/** Docker Hub stores official images under `library/`: `nginx` means `library/nginx`. */
export function dockerHubName(name: string): string {
  return name.includes('/') ? name : `library/${name}`;
}

export { isDigest };

/** An image reference as a user types it, normalised the way Docker does. */
export interface ImageReference {
  /** Registry host: `docker.io`, `ghcr.io`, `registry.local:5000`. */
  registry: string;
  /** Repository in that registry (`library/nginx` for Docker Hub's official images). */
  repository: string;
  tag?: string;
  digest?: Digest;
}

/**
 * Parses `nginx`, `nginx:1.27`, `library/nginx@sha256:…`, `ghcr.io/org/app:v1`,
 * `localhost:5000/app`. The first component is a registry when it has a dot or a port or
 * is `localhost`; otherwise the registry is docker.io. No tag and no digest means `latest`.
 */
export function parseImageReference(text: string): ImageReference {
  const input = text.trim();
  let rest = input;
  let digest: Digest | undefined;
  const at = rest.indexOf('@');
  if (at >= 0) {
    digest = parseDigest(rest.slice(at + 1));
    rest = rest.slice(0, at);
  }
  let tag: string | undefined;
  const colon = rest.lastIndexOf(':');
  if (colon > rest.lastIndexOf('/')) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (!TAG.test(tag)) throw new InvalidReference(`invalid tag in image reference ${JSON.stringify(input)}`);
  }
  const slash = rest.indexOf('/');
  const head = slash > 0 ? rest.slice(0, slash) : '';
  let registry = 'docker.io';
  if (head && (head.includes('.') || head.includes(':') || head === 'localhost')) {
    registry = head.toLowerCase();
    rest = rest.slice(slash + 1);
  }
  if (registry === 'index.docker.io' || registry === 'registry-1.docker.io') registry = 'docker.io';
  try {
    validateName(rest);
  } catch {
    throw new InvalidReference(`invalid repository in image reference ${JSON.stringify(input)}`);
  }
  const repository = registry === 'docker.io' ? dockerHubName(rest) : rest;
  return { registry, repository, ...(tag === undefined && digest === undefined ? { tag: 'latest' } : tag === undefined ? {} : { tag }), ...(digest ? { digest } : {}) };
}

/** `docker.io/library/nginx:1.27`, `ghcr.io/org/app@sha256:…`: the full, normalised form. */
export function formatImageReference(r: ImageReference): string {
  return `${r.registry}/${r.repository}${r.tag !== undefined ? `:${r.tag}` : ''}${r.digest !== undefined ? `@${r.digest}` : ''}`;
}
