// Peer requests are signed, not sent with the secret: a header carries the time and an
// HMAC of the method, the path and that time under the cluster's shared secret, so a
// captured header is good for one path and a minute, and the secret never crosses the wire.
import { createHmac, timingSafeEqual } from 'node:crypto';

export const PEER_HEADER = 'x-regmirror-peer';
/** How far a signature's time may be from the receiver's clock (either way). */
const MAX_SKEW_MS = 60_000;

function mac(secret: string, method: string, path: string, at: number): Buffer {
  return createHmac('sha256', secret).update(`${method}\n${path}\n${at}`).digest();
}

/** The header value for a request of `method` on `path`, signed now. */
export function signPeerRequest(secret: string, method: string, path: string, now = Date.now()): string {
  return `${now}.${mac(secret, method, path, now).toString('hex')}`;
}

/** Why `header` does not authenticate the request, or undefined when it does. */
export function peerAuthProblem(secret: string, method: string, path: string, header: string | undefined, now = Date.now()): string | undefined {
  if (!header) return 'no peer signature';
  const m = /^(\d{1,16})\.([0-9a-f]{64})$/.exec(header);
  if (!m) return 'malformed peer signature';
  const at = Number(m[1]);
  if (Math.abs(now - at) > MAX_SKEW_MS) return 'peer signature out of date (are the replicas\' clocks in sync?)';
  const good = mac(secret, method, path, at);
  return timingSafeEqual(good, Buffer.from(m[2], 'hex')) ? undefined : 'bad peer signature (is cluster.secret the same on every replica?)';
}
