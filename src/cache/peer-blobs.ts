// The cache's side of following a download another replica of the cluster runs: what to
// do with each way the holder can fail to serve it, and a body that falls back to the
// store when the download finished between the holder's two answers.
import { PeerUnavailable } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { DownloadFor, DownloadLeases } from '../cluster/download-leases.js';
import type { PeerClient, PeerLocation } from '../cluster/peer-client.js';
import { READ_CHUNK, type BodySource } from '../store/body-source.js';
import type { ByteRange } from '../store/content-store.js';

/** What makes a BlobCache one of a cluster's: the leases it downloads under and the client for its peers. */
export interface ClusterPeers {
  leases: DownloadLeases;
  peers: PeerClient;
}

/** How many times a request goes round (holder gone, taken over, finished) before it fails. */
export const PEER_ATTEMPTS = 3;

/**
 * The size of the holder's download, or what to do instead: `again` (look up the blob
 * afresh: the holder finished, failed or was taken over from), `alone` (the holder cannot
 * share it: download it here too).
 */
export async function peerSize(c: ClusterPeers, holder: PeerLocation, digest: Digest, via: DownloadFor, attempt: number): Promise<number | 'again' | 'alone'> {
  try {
    const size = await c.peers.size(holder, digest);
    return size ?? 'alone';
  } catch (err) {
    if (!(err instanceof PeerUnavailable) || attempt >= PEER_ATTEMPTS) throw err;
    if (err.kind === 'refused') return 'alone';
    if (err.kind === 'unreachable') await c.leases.takeOver(digest, holder.id, via);
    return 'again';
  }
}

/**
 * The holder's bytes; if it answers that the download is over before sending one (it
 * finished between the size and this request), the store's copy instead.
 */
export function peerBody(c: ClusterPeers, holder: PeerLocation, digest: Digest, size: number, range: ByteRange | undefined, stored: () => BodySource): BodySource {
  let source = c.peers.open(holder, digest, size, range);
  let started = false;
  return {
    readInto: async (buf) => {
      try {
        const n = await source.readInto(buf);
        started = true;
        return n;
      } catch (err) {
        if (started || !(err instanceof PeerUnavailable) || err.kind !== 'gone') throw err;
        await source.close();
        source = stored();
        started = true;
        return source.readInto(buf);
      }
    },
    close: () => source.close(),
  };
}

/** Reads a body to its end (prewarm through a replica that is not the holder: the holder publishes it). */
export async function drain(source: BodySource): Promise<void> {
  const buf = Buffer.allocUnsafe(READ_CHUNK);
  try {
    while ((await source.readInto(buf)) > 0);
  } finally {
    await source.close();
  }
}
