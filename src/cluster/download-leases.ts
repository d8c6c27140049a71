// One download per digest across the cluster: a replica about to download a blob takes
// the lease `blob:<digest>`, saying where it can be reached and which repository it
// downloads through; a replica that finds the lease held follows the holder's download
// instead of starting its own. The holder renews its leases while downloading and
// releases each when the blob is recorded (or the download failed).
import { MetadataUnavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { Digest } from '../oci/digest.js';
import type { LeaseStore } from '../store/leases.js';
import type { PeerLocation } from './peer-client.js';
import type { Replica } from './replica.js';

/** Long enough to ride out a pause of the holder, short enough that a dead one is soon replaced. */
export const DOWNLOAD_LEASE_MS = 10_000;

export interface DownloadFor {
  upstream: string;
  repository: string;
}

/** Who downloads a digest: this replica, or a peer (and through which repository). */
export type Claim = { mine: true } | { mine: false; holder: PeerLocation; via?: DownloadFor };

interface LeaseData extends Partial<DownloadFor> {
  advertise?: string;
}

export class DownloadLeases {
  readonly #leases: LeaseStore;
  readonly #replica: Replica & { advertise: string };
  readonly #log: Logger;
  readonly #ttlMs: number;
  /** Digests this replica holds the lease of, and how many of its downloads need it. */
  readonly #held = new Map<Digest, number>();
  readonly #timer: NodeJS.Timeout;

  constructor(leases: LeaseStore, replica: Replica & { advertise: string }, log: Logger, ttlMs = DOWNLOAD_LEASE_MS) {
    this.#leases = leases;
    this.#replica = replica;
    this.#log = log;
    this.#ttlMs = ttlMs;
    this.#timer = setInterval(() => this.#renew(), Math.floor(ttlMs / 3));
    this.#timer.unref();
  }

  /**
   * Takes the digest's lease, or says who has it. A database out of reach makes it this
   * replica's: a second download somewhere costs less than none at all.
   */
  async claim(digest: Digest, via: DownloadFor): Promise<Claim> {
    return this.#claimWith(digest, (data) => this.#leases.acquire(key(digest), this.#replica.id, this.#ttlMs, data), via);
  }

  /** Takes the lease from `from`, a holder that refused a connection: it is gone. */
  async takeOver(digest: Digest, from: string, via: DownloadFor): Promise<Claim> {
    this.#log.warn('the replica holding a download is unreachable; taking it over', { digest, holder: from });
    return this.#claimWith(digest, (data) => this.#leases.takeOver(key(digest), from, this.#replica.id, this.#ttlMs, data), via);
  }

  async #claimWith(digest: Digest, take: (data: string) => ReturnType<LeaseStore['acquire']>, via: DownloadFor): Promise<Claim> {
    const data: LeaseData = { advertise: this.#replica.advertise, ...via };
    try {
      const lease = await take(JSON.stringify(data));
      if (lease.holder === this.#replica.id) return { mine: true };
      const theirs = parseData(lease.data);
      if (!theirs.advertise) return { mine: true };
      const holder = { id: lease.holder, advertise: theirs.advertise };
      return theirs.upstream && theirs.repository ? { mine: false, holder, via: { upstream: theirs.upstream, repository: theirs.repository } } : { mine: false, holder };
    } catch (err) {
      if (!(err instanceof MetadataUnavailable)) throw err;
      return { mine: true };
    }
  }

  /** A download of `digest` started here under this replica's lease. */
  hold(digest: Digest): void {
    this.#held.set(digest, (this.#held.get(digest) ?? 0) + 1);
  }

  /** That download settled (the blob is recorded, or it failed): others may take it now. */
  release(digest: Digest): void {
    const n = (this.#held.get(digest) ?? 1) - 1;
    if (n > 0) {
      this.#held.set(digest, n);
      return;
    }
    this.#held.delete(digest);
    this.#leases.release(key(digest), this.#replica.id).catch((err: Error) => {
      // It expires on its own; meanwhile others ask this replica and hear it is done.
      this.#log.warn('could not release a download lease', { digest, err });
    });
  }

  #renew(): void {
    if (this.#held.size === 0) return;
    const keys = [...this.#held.keys()].map(key);
    this.#leases.renew(this.#replica.id, keys, this.#ttlMs).catch((err: Error) => this.#log.warn('could not renew download leases', { leases: keys.length, err }));
  }

  close(): void {
    clearInterval(this.#timer);
  }
}

const key = (digest: Digest) => `blob:${digest}`;

function parseData(text: string | undefined): LeaseData {
  if (!text) return {};
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === 'object' && v !== null ? (v as LeaseData) : {};
  } catch {
    return {};
  }
}
