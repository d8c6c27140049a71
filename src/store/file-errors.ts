// File-system failures as the domain errors callers above the store know.
import { StoreFull } from '../errors.js';

/** Answers that mean "the store cannot take this write now", not "the content is bad". */
const STORE_FULL_CODES = new Set(['ENOSPC', 'EDQUOT', 'EROFS', 'EIO', 'EFBIG']);

/** Rethrows a file-system error as StoreFull when it is one of those, anything else as it is. */
export function rethrowAsStoreError(err: unknown): never {
  const code = (err as NodeJS.ErrnoException).code;
  throw code !== undefined && STORE_FULL_CODES.has(code) ? new StoreFull(code) : err;
}

export function isNotFound(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'ENOENT';
}
