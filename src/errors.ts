// Errors: one OCI error type with the spec's code table, typed domain errors thrown below
// HTTP, and the single function that maps the latter onto the former. Only http/app.ts
// renders an OciError into a response body.

/** The error codes of the OCI distribution spec, with the HTTP status each answers with. */
export const OCI_ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  // Not in the spec's table, but distribution answers these codes too.
  RANGE_INVALID: 416,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
} as const;

export type OciErrorCode = keyof typeof OCI_ERROR_STATUS;

/** An error that the API answers with an OCI error body. */
export class OciError extends Error {
  readonly code: OciErrorCode;
  readonly status: number;
  readonly detail?: unknown;
  /** Extra response headers, e.g. Retry-After on TOOMANYREQUESTS. */
  readonly headers: Record<string, string>;

  constructor(code: OciErrorCode, message: string, opts: { detail?: unknown; headers?: Record<string, string>; status?: number } = {}) {
    super(message);
    this.name = 'OciError';
    this.code = code;
    this.status = opts.status ?? OCI_ERROR_STATUS[code];
    this.detail = opts.detail;
    this.headers = opts.headers ?? {};
  }

  /** The `{"errors":[...]}` body of the spec. */
  toBody(): { errors: Array<{ code: string; message: string; detail?: unknown }> } {
    return { errors: [{ code: this.code, message: this.message, ...(this.detail === undefined ? {} : { detail: this.detail }) }] };
  }
}

// ---- domain errors: thrown by oci/, store/, upstream/ and cache/; no HTTP in them ----

/** Base of every error regmirror throws on purpose; `code` is stable for callers and tests. */
export class RegmirrorError extends Error {
  constructor(
    readonly code: string,
    message: string,
  ) {
    super(message);
    this.name = new.target.name;
  }
}

export class InvalidName extends RegmirrorError {
  constructor(message: string) {
    super('INVALID_NAME', message);
  }
}
export class InvalidReference extends RegmirrorError {
  constructor(message: string) {
    super('INVALID_REFERENCE', message);
  }
}
export class InvalidDigest extends RegmirrorError {
  constructor(message: string) {
    super('INVALID_DIGEST', message);
  }
}
/** A well-formed digest of a registered algorithm this mirror does not store (sha512). */
export class UnsupportedDigest extends InvalidDigest {
  constructor(
    readonly digest: string,
    readonly supported: readonly string[],
  ) {
    super(`${digest.split(':')[0]} digests are not supported by this mirror, only ${supported.join(', ')}`);
  }
}
/** The request names an upstream that is not configured (unknown `ns` or prefix). */
export class UnknownUpstream extends RegmirrorError {
  constructor(message: string) {
    super('UNKNOWN_UPSTREAM', message);
  }
}
/** The repository is outside the upstream's allow list, or on its deny list. */
export class AccessDenied extends RegmirrorError {
  constructor(message: string) {
    super('ACCESS_DENIED', message);
  }
}
/**
 * An immutable tag (a tag policy with `onChange: refuse`) names another digest upstream
 * than the one it is held to; pulls by that tag fail until an operator accepts the change.
 */
export class TagChangeRefused extends RegmirrorError {
  constructor(
    readonly image: string,
    readonly policy: string,
    readonly guarded: string,
    readonly upstreamDigest: string,
  ) {
    super(
      'TAG_CHANGE_REFUSED',
      `tag ${image} is immutable under ${policy}: it is held to ${guarded} but the upstream now names ${upstreamDigest}; ` +
        `an operator who trusts the change runs regmirror tags accept ${image}`,
    );
  }
}
export class BlobNotFound extends RegmirrorError {
  constructor(readonly digest: string) {
    super('BLOB_NOT_FOUND', `blob ${digest} is not known to the upstream for this repository`);
  }
}
export class ManifestNotFound extends RegmirrorError {
  constructor(readonly reference: string) {
    super('MANIFEST_NOT_FOUND', `manifest ${reference} is not known`);
  }
}
export class RepositoryNotFound extends RegmirrorError {
  constructor(readonly repository: string) {
    super('REPOSITORY_NOT_FOUND', `repository ${repository} is not known to the upstream`);
  }
}
/** Bytes received do not hash to the digest (or size) they were requested by. */
export class DigestMismatch extends RegmirrorError {
  constructor(
    readonly expected: string,
    readonly actual: string,
  ) {
    super('DIGEST_MISMATCH', `content does not match digest ${expected} (got ${actual})`);
  }
}
export class SizeMismatch extends RegmirrorError {
  constructor(
    readonly expected: number,
    readonly actual: number,
  ) {
    super('SIZE_MISMATCH', `content size ${actual} does not match the expected ${expected}`);
  }
}
/** Content fetched from an upstream that breaks a limit or the protocol (too large, wrong type). */
export class UpstreamInvalid extends RegmirrorError {
  constructor(message: string) {
    super('UPSTREAM_INVALID', message);
  }
}
export class UpstreamUnauthorized extends RegmirrorError {
  constructor(
    message: string,
    readonly status: 401 | 403,
  ) {
    super('UPSTREAM_UNAUTHORIZED', message);
  }
}
export class UpstreamRateLimited extends RegmirrorError {
  constructor(
    message: string,
    readonly retryAfterSeconds?: number,
  ) {
    super('UPSTREAM_RATE_LIMITED', message);
  }
}
/** Refused, timed out, reset or answered 5xx. */
export class UpstreamUnavailable extends RegmirrorError {
  constructor(message: string) {
    super('UPSTREAM_UNAVAILABLE', message);
  }
}
/**
 * The mirror could not obtain its own credentials for an upstream (a Docker credential
 * helper failed or timed out): a fault on the mirror's side, so the upstream is not marked down.
 */
export class CredentialsUnavailable extends RegmirrorError {
  constructor(message: string) {
    super('CREDENTIALS_UNAVAILABLE', message);
  }
}
export type RestrictedAddress = 'loopback' | 'private' | 'link-local';

/** An upstream's redirect or token realm led to an address the mirror may not connect to. */
export class EgressRefused extends RegmirrorError {
  constructor(
    readonly kind: RestrictedAddress,
    message: string,
  ) {
    super('EGRESS_REFUSED', message);
  }
}
/** Offline mode and the content is not in the cache. */
export class NotInOfflineCache extends RegmirrorError {
  constructor(
    readonly what: 'manifest' | 'blob' | 'other',
    message: string,
  ) {
    super('NOT_IN_OFFLINE_CACHE', message);
  }
}
/** The store cannot take a write now (disk full, quota, read-only, I/O error): the content is served uncached. */
export class StoreFull extends RegmirrorError {
  constructor(
    /** What the store reported, e.g. ENOSPC; for logs. */
    readonly reason: string,
  ) {
    super('STORE_FULL', `the blob store cannot take writes (${reason})`);
  }
}
/** A stored blob was expected but is not there (removed by gc or eviction meanwhile). */
export class BlobGone extends RegmirrorError {
  constructor(readonly digest: string) {
    super('BLOB_GONE', `blob ${digest} is no longer in the store`);
  }
}
/**
 * The metadata database cannot be reached or answered too late (PostgreSQL down or
 * restarting, SQLite locked by another process past its wait). Hot reads fall back to
 * what is remembered; queued writes land when it is back.
 */
export class MetadataUnavailable extends RegmirrorError {
  constructor(
    /** What the backend reported, e.g. ECONNREFUSED or 57P01; for logs. */
    readonly reason: string,
  ) {
    super('METADATA_UNAVAILABLE', `the metadata database is unavailable (${reason})`);
  }
}
/** importRows found rows in its target: a copy goes only into an empty store, so nothing was written. */
export class StoreNotEmpty extends RegmirrorError {
  constructor(
    readonly rows: number,
    /** The first table found holding rows, when the backend says. */
    readonly table?: string,
  ) {
    super('STORE_NOT_EMPTY', `metadata: the target database is not empty (${table === undefined ? `${rows} rows` : `${table} has ${rows} rows`}); import into an empty database`);
  }
}
/** The replica holding a download could not serve it (gone, refused, or it answered wrong). */
export class PeerUnavailable extends RegmirrorError {
  constructor(
    /** `gone`: it answered that it runs no such download (finished or failed); `unreachable`: no connection; `refused`: it cannot share it. */
    readonly kind: 'gone' | 'unreachable' | 'refused',
    message: string,
  ) {
    super('PEER_UNAVAILABLE', message);
  }
}
/** A peer request without a valid signature of the cluster's secret. */
export class PeerUnauthorized extends RegmirrorError {
  constructor(message: string) {
    super('PEER_UNAUTHORIZED', message);
  }
}
/** A signature policy in `enforce` mode refused a manifest: no valid signature by a trusted key covers it. */
export class SignatureRefused extends RegmirrorError {
  constructor(
    message: string,
    readonly policy: string,
    readonly reason: string,
  ) {
    super('SIGNATURE_REFUSED', message);
  }
}
export class RangeNotSatisfiable extends RegmirrorError {
  constructor(readonly size: number) {
    super('RANGE_NOT_SATISFIABLE', `requested range is not satisfiable for a blob of ${size} bytes`);
  }
}
export class Unsupported extends RegmirrorError {
  constructor(message: string) {
    super('UNSUPPORTED', message);
  }
}

/** Maps any thrown value onto the OCI error the API answers with. Unknown errors say nothing of their internals. */
export function toOciError(err: unknown): OciError {
  if (err instanceof OciError) return err;
  if (!(err instanceof RegmirrorError)) return new OciError('UNKNOWN', 'internal error');
  const m = err.message;
  if (err instanceof InvalidName) return new OciError('NAME_INVALID', m);
  if (err instanceof InvalidReference) return new OciError('MANIFEST_INVALID', m, { status: 400 });
  if (err instanceof UnsupportedDigest) return new OciError('DIGEST_INVALID', m, { detail: { digest: err.digest, supported: err.supported } });
  if (err instanceof InvalidDigest) return new OciError('DIGEST_INVALID', m);
  if (err instanceof UnknownUpstream || err instanceof AccessDenied) return new OciError('DENIED', m);
  // DENIED (403), as a registry refusing a pull by policy answers: docker, containerd and
  // skopeo print the message, and a client that retries gets the same answer.
  if (err instanceof TagChangeRefused) return new OciError('DENIED', m, { detail: { tag: err.image, policy: err.policy, guarded: err.guarded, upstream: err.upstreamDigest } });
  if (err instanceof SignatureRefused) return new OciError('DENIED', m, { detail: { policy: err.policy, reason: err.reason } });
  if (err instanceof BlobNotFound) return new OciError('BLOB_UNKNOWN', m);
  if (err instanceof ManifestNotFound) return new OciError('MANIFEST_UNKNOWN', m);
  if (err instanceof RepositoryNotFound) return new OciError('NAME_UNKNOWN', m);
  if (err instanceof NotInOfflineCache) {
    return new OciError(err.what === 'manifest' ? 'MANIFEST_UNKNOWN' : err.what === 'blob' ? 'BLOB_UNKNOWN' : 'NAME_UNKNOWN', m);
  }
  if (err instanceof RangeNotSatisfiable) return new OciError('RANGE_INVALID', m, { headers: { 'content-range': `bytes */${err.size}` } });
  if (err instanceof Unsupported) return new OciError('UNSUPPORTED', m);
  if (err instanceof StoreFull) return new OciError('UNAVAILABLE', m, { status: 503 });
  if (err instanceof BlobGone) return new OciError('BLOB_UNKNOWN', m);
  if (err instanceof MetadataUnavailable) return new OciError('UNAVAILABLE', m, { status: 503 });
  if (err instanceof UpstreamUnauthorized) return new OciError(err.status === 401 ? 'UNAUTHORIZED' : 'DENIED', m);
  if (err instanceof UpstreamRateLimited) {
    const headers: Record<string, string> = err.retryAfterSeconds === undefined ? {} : { 'retry-after': String(err.retryAfterSeconds) };
    return new OciError('TOOMANYREQUESTS', m, { headers });
  }
  // A bad upstream answer is the upstream's fault, not the client's: 502 like a gateway.
  if (err instanceof DigestMismatch || err instanceof SizeMismatch || err instanceof UpstreamInvalid || err instanceof EgressRefused) {
    return new OciError('UNAVAILABLE', m, { status: 502 });
  }
  if (err instanceof UpstreamUnavailable || err instanceof PeerUnavailable || err instanceof CredentialsUnavailable) return new OciError('UNAVAILABLE', m, { status: 502 });
  if (err instanceof PeerUnauthorized) return new OciError('UNAUTHORIZED', m);
  return new OciError('UNKNOWN', 'internal error');
}
