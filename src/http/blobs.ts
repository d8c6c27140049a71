// Blob HEAD and GET. HEAD is answered from stat() and never starts a download (hono runs
// GET handlers for HEAD, so the method is branched on explicitly). GET bodies are written
// straight into the Node response by the serving loop (body-writer.ts), not through Web
// Streams; a hit the store hands out itself (storage.redirect) is a 307 to its URL.
import type { Context } from 'hono';
import type { BlobCache, ByteRange } from '../cache/blobs.js';
import { RangeNotSatisfiable } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import { sendBody, sendBytes } from './direct-response.js';
import type { ResolvedTarget } from './target.js';

export async function serveBlob(c: Context, blobs: BlobCache, t: ResolvedTarget, digest: Digest): Promise<Response> {
  const headers: Record<string, string> = {
    'content-type': 'application/octet-stream',
    'docker-content-digest': digest,
    etag: `"${digest}"`,
    'accept-ranges': 'bytes',
    'cache-control': 'max-age=31536000',
  };
  if (c.req.method === 'HEAD') {
    const { size } = await blobs.stat(t, digest);
    if (size !== undefined) headers['content-length'] = String(size);
    c.set('cache', 'head');
    return sendBytes(c, 200, headers, null);
  }
  const handle = await blobs.get(t, digest);
  c.set('cache', handle.source);
  const range = handle.size === undefined ? undefined : parseRange(c.req.header('range'), handle.size);
  // The client sends its Range to the store, which honours it; one outside the blob got its 416 above.
  if (handle.redirect) return redirect(c, handle.redirect(range), digest);
  let status = 200;
  const length = range ? range.end - range.start + 1 : handle.size;
  if (range) {
    status = 206;
    headers['content-range'] = `bytes ${range.start}-${range.end}/${handle.size}`;
  }
  if (length !== undefined) headers['content-length'] = String(length);
  return sendBody(c, status, headers, handle.open(range), length);
}

/**
 * A 307 to the store's URL. Not cacheable: the URL expires in minutes, and a proxy
 * keeping the answer for the blob's year-long max-age would hand out a dead one.
 */
function redirect(c: Context, location: string, digest: Digest): Response {
  return c.body(null, 307, { location, 'docker-content-digest': digest, 'cache-control': 'no-store' });
}

/**
 * Parses a single-range `Range: bytes=a-b | a- | -n` header against the blob size.
 * Returns undefined for no header or one to ignore (multiple ranges: the whole blob is
 * sent, as RFC 9110 allows); throws RangeNotSatisfiable when it starts past the end.
 */
export function parseRange(header: string | undefined, size: number): ByteRange | undefined {
  if (!header) return undefined;
  const m = /^bytes=(\d*)-(\d*)$/.exec(header.trim());
  if (!m || (m[1] === '' && m[2] === '')) return undefined;
  if (m[1] === '') {
    const suffix = Number(m[2]);
    if (suffix === 0) throw new RangeNotSatisfiable(size);
    return { start: Math.max(0, size - suffix), end: size - 1 };
  }
  const start = Number(m[1]);
  const end = m[2] === '' ? size - 1 : Math.min(Number(m[2]), size - 1);
  if (m[2] !== '' && Number(m[2]) < start) return undefined;
  if (start >= size) throw new RangeNotSatisfiable(size);
  return { start, end };
}
