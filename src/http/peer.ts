// The peer endpoint: another replica of the cluster following a download this one runs.
// HEAD gives the size once the upstream has said it; GET streams the bytes (a range of
// them) as they arrive, the last one only once the digest is verified, exactly as a
// client of this replica gets them. Requests must carry the cluster secret's signature.
import { Hono, type Context } from 'hono';
import type { BlobCache } from '../cache/blobs.js';
import { peerAuthProblem, PEER_HEADER } from '../cluster/peer-auth.js';
import { OciError, PeerUnauthorized } from '../errors.js';
import { parseDigest } from '../oci/digest.js';
import { parseRange } from './blobs.js';
import { sendBody } from './direct-response.js';

export interface PeerDeps {
  blobs: BlobCache;
  secret: string;
}

export function peerRoutes(deps: PeerDeps): Hono {
  const app = new Hono();
  app.on(['GET', 'HEAD'], '/blobs/:digest', (c) => serveDownload(c, deps));
  return app;
}

async function serveDownload(c: Context, { blobs, secret }: PeerDeps): Promise<Response> {
  const problem = peerAuthProblem(secret, c.req.method, c.req.path, c.req.header(PEER_HEADER));
  if (problem) throw new PeerUnauthorized(problem);
  const digest = parseDigest(c.req.param('digest') ?? '');
  const dl = await blobs.running(digest);
  // Finished (the store has it now), failed, or never here: the peer looks again.
  if (!dl) throw new OciError('BLOB_UNKNOWN', `no download of ${digest} runs on this replica`, { status: 404 });
  if (dl === 'unshareable' || dl.size === undefined) {
    throw new OciError('UNAVAILABLE', `the download of ${digest} here cannot be shared (not cached, or of unknown size)`, { status: 409 });
  }
  const headers: Record<string, string> = { 'content-type': 'application/octet-stream', 'docker-content-digest': digest };
  if (c.req.method === 'HEAD') return c.body(null, 200, { ...headers, 'content-length': String(dl.size) });
  const range = parseRange(c.req.header('range'), dl.size);
  const length = range ? range.end - range.start + 1 : dl.size;
  if (range) headers['content-range'] = `bytes ${range.start}-${range.end}/${dl.size}`;
  headers['content-length'] = String(length);
  return sendBody(c, range ? 206 : 200, headers, dl.follow(range), length);
}
