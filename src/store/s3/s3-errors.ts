// S3 answers as the domain errors callers above the store know. Whatever makes a write
// fail (a refusal, a quota, credentials, a bucket that is gone, no connection) means to the
// cache what a full disk means: serve uncached, and readiness says why. A read that cannot
// reach the store says so too (503), and is never taken for a blob that is gone: that would
// make gc and the cache forget rows of blobs that are still there.
import { BlobGone, RegmirrorError, StoreFull } from '../../errors.js';

/** What the SDK's errors carry: a service error's name and status, or a socket error's code. */
interface SdkError {
  name?: string;
  code?: string;
  message?: string;
  $metadata?: { httpStatusCode?: number };
}

/** The object is not there: NoSuchKey on GET, a bodiless 404 (NotFound) on HEAD. */
export function isMissing(err: unknown): boolean {
  const e = err as SdkError;
  return e.name === 'NoSuchKey' || (e.name === 'NotFound' && e.$metadata?.httpStatusCode === 404);
}

/** e.g. `InvalidAccessKeyId (403)`, `QuotaExceeded (403)`, `ECONNREFUSED`. */
export function describeS3Error(err: unknown): string {
  const e = err as SdkError;
  const status = e.$metadata?.httpStatusCode;
  if (status !== undefined) return `${e.name ?? 'error'} (${status})`;
  return e.code ?? e.message ?? e.name ?? String(err);
}

/**
 * A failure of `what` (the S3 operation) as StoreFull; domain errors pass unchanged. The
 * reason names no bucket or key: it reaches clients in error bodies and /readyz.
 */
export function storeError(err: unknown, what: string): Error {
  if (err instanceof RegmirrorError) return err;
  return new StoreFull(`${what}: ${describeS3Error(err)}`);
}

/** As storeError, but a missing object is BlobGone. */
export function readError(err: unknown, digest: string, what: string): Error {
  return isMissing(err) ? new BlobGone(digest) : storeError(err, what);
}
