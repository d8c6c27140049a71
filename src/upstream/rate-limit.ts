// What regmirror knows of an upstream's health: its pull budget (Docker Hub's
// ratelimit-* headers), whether it is rate-limited until some time (429 Retry-After), and
// whether it failed recently (refused, timed out, 5xx), so that requests during an outage
// are answered at once from the cache instead of each waiting for its own timeout.
import { UpstreamRateLimited, UpstreamUnavailable, type RestrictedAddress } from '../errors.js';

/** Parsed `ratelimit-limit` / `ratelimit-remaining` (`100;w=21600`) and `docker-ratelimit-source`. */
export interface RateLimitObservation {
  limit?: number;
  remaining?: number;
  windowSeconds?: number;
  source?: string;
}

/** Receives what upstream responses say; MetadataDb implements it (batched), so upstream/ never imports store/. */
export interface UpstreamObserver {
  rateLimit(upstream: string, credential: string, obs: RateLimitObservation, at: number): void;
  /** One upstream request of a kind; manifest GETs are what Docker Hub counts as pulls. */
  request(upstream: string, kind: UpstreamRequestKind, status: number, at: number): void;
  /** A redirect or token realm led to an address the egress rule refuses. */
  egressRefused?(upstream: string, kind: RestrictedAddress): void;
  /** The upstream could not be reached, timed out or answered 502/503/504. */
  failed?(upstream: string): void;
  /** The parent failed and a request of this upstream went to the upstream itself. */
  parentFallback?(upstream: string): void;
}

export type UpstreamRequestKind = 'manifest_get' | 'manifest_head' | 'blob_get' | 'blob_head' | 'other';

type Headers = Record<string, string | string[] | undefined>;

function first(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

/** `100;w=21600` → { n: 100, w: 21600 } */
function parseQuota(v: string | undefined): { n: number; w?: number } | undefined {
  const m = v === undefined ? null : /^\s*(\d+)\s*(?:;\s*w\s*=\s*(\d+))?/.exec(v);
  return m ? { n: Number(m[1]), w: m[2] === undefined ? undefined : Number(m[2]) } : undefined;
}

/** The rate-limit headers of a response, or undefined when it has none. */
export function parseRateLimit(h: Headers): RateLimitObservation | undefined {
  const limit = parseQuota(first(h, 'ratelimit-limit'));
  const remaining = parseQuota(first(h, 'ratelimit-remaining'));
  if (!limit && !remaining) return undefined;
  return {
    limit: limit?.n,
    remaining: remaining?.n,
    windowSeconds: remaining?.w ?? limit?.w,
    source: first(h, 'docker-ratelimit-source'),
  };
}

/** `Retry-After` as seconds from now: delta-seconds or an HTTP date. */
export function parseRetryAfter(v: string | undefined, now: number): number | undefined {
  if (!v) return undefined;
  if (/^\d+$/.test(v.trim())) return Number(v.trim());
  const at = Date.parse(v);
  return Number.isNaN(at) ? undefined : Math.max(0, Math.ceil((at - now) / 1000));
}

export interface UpstreamStateOptions {
  name: string;
  now: () => number;
  /** Under this many remaining pulls, tags are not revalidated. */
  budgetFloor: number;
  /** How long an upstream that failed is treated as down. */
  failureBackoffMs: number;
  /** A 429 without Retry-After limits the upstream for this long. */
  defaultRetryAfterSeconds?: number;
}

const NO_PROBE = (): void => {};

/** In-memory health of one upstream. */
export class UpstreamState {
  readonly #o: UpstreamStateOptions;
  #limitedUntil = 0;
  #downUntil = 0;
  #downReason = '';
  #probing = false;
  #budget?: RateLimitObservation & { at: number };

  constructor(o: UpstreamStateOptions) {
    this.#o = o;
  }

  /**
   * Throws instead of sending a request while the upstream is rate-limited, or down with
   * a probe already out. While down, one request at a time goes through as a probe, so
   * the first success after an outage ends the backoff for everyone (half-open). Call
   * the returned function once the request has its answer or has failed.
   */
  admit(): () => void {
    const now = this.#o.now();
    if (now < this.#limitedUntil) {
      throw new UpstreamRateLimited(`${this.#o.name} is rate-limited; not asking it again yet`, Math.ceil((this.#limitedUntil - now) / 1000));
    }
    if (now >= this.#downUntil) return NO_PROBE;
    if (this.#probing) throw new UpstreamUnavailable(`${this.#o.name} failed recently (${this.#downReason}); not asking it again yet`);
    this.#probing = true;
    let ended = false;
    return () => {
      if (ended) return;
      ended = true;
      this.#probing = false;
    };
  }

  /** A 429: limited until Retry-After (or the default) has passed. */
  limited(retryAfterSeconds: number | undefined): number {
    const seconds = retryAfterSeconds ?? this.#o.defaultRetryAfterSeconds ?? 60;
    this.#limitedUntil = Math.max(this.#limitedUntil, this.#o.now() + seconds * 1000);
    return seconds;
  }

  /** Refused, timed out or 5xx: down for the backoff window. */
  failed(reason: string): void {
    this.#downUntil = this.#o.now() + this.#o.failureBackoffMs;
    this.#downReason = reason;
  }

  /** Any answer from the upstream shows it is up. */
  answered(): void {
    this.#downUntil = 0;
  }

  observe(obs: RateLimitObservation): void {
    this.#budget = { ...obs, at: this.#o.now() };
  }

  /** What other processes spending the same budget should know: until when to hold back, and why. */
  get holdBack(): { limitedUntil: number; downUntil: number; reason: string } {
    const now = this.#o.now();
    return { limitedUntil: this.#limitedUntil > now ? this.#limitedUntil : 0, downUntil: this.#downUntil > now ? this.#downUntil : 0, reason: this.#downReason };
  }

  /**
   * Another replica saw a 429 or an outage: hold back as it does (the later deadline
   * wins; a probe still goes out once the upstream is down here too).
   */
  adopt(other: { limitedUntil?: number; downUntil?: number; reason?: string }): void {
    if (other.limitedUntil !== undefined) this.#limitedUntil = Math.max(this.#limitedUntil, other.limitedUntil);
    if (other.downUntil !== undefined && other.downUntil > this.#downUntil) {
      this.#downUntil = other.downUntil;
      this.#downReason = `${other.reason ?? 'failed'}, seen by another replica`;
    }
  }

  /** A budget another replica observed, when newer than this one's. */
  adoptBudget(obs: RateLimitObservation, at: number): void {
    if (!this.#budget || at > this.#budget.at) this.#budget = { ...obs, at };
  }

  /** The last budget the upstream reported. */
  get budget(): (RateLimitObservation & { at: number }) | undefined {
    return this.#budget;
  }

  /** When the upstream may be asked again (ms), or 0. */
  get limitedUntil(): number {
    return this.#limitedUntil > this.#o.now() ? this.#limitedUntil : 0;
  }

  /** False when the reported remaining budget is under the floor: serve cached tags as they are. */
  canRevalidate(): boolean {
    const b = this.#budget;
    if (!b || b.remaining === undefined || this.#o.budgetFloor <= 0) return true;
    // The budget refills after its window; an old observation says nothing about now.
    if (b.windowSeconds !== undefined && this.#o.now() - b.at > b.windowSeconds * 1000) return true;
    return b.remaining > this.#o.budgetFloor;
  }
}
