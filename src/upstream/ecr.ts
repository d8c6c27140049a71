// Amazon ECR: the registry takes Basic auth whose password comes from the ECR API's
// GetAuthorizationToken, signed with whatever AWS credentials the SDK's default provider
// chain finds (environment, shared profile, web identity / IRSA, container or instance
// metadata). The token lives 12 hours; it is replaced well before that, on a 401, and on
// ECR's own way of saying it expired (403 DENIED "Your authorization token has expired").
// This is the only module that imports the AWS SDK, and it loads it on first use, so an
// installation without an ECR upstream never pays for it.
import type { UpstreamConfig } from '../config.js';
import { UpstreamInvalid, UpstreamUnauthorized, UpstreamUnavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { Authorizer, Challenge } from './auth.js';

/** What ECR says (in a 403 DENIED body) when the password has expired. */
export const ECR_EXPIRED_TOKEN = /authorization token has expired/i;

/** One GetAuthorizationToken answer: `authorizationToken` is base64("AWS:<password>"). */
export interface EcrAuthorizationData {
  authorizationToken: string;
  /** ms since the epoch; undefined when ECR named no expiry. */
  expiresAt?: number;
  proxyEndpoint?: string;
}

export type EcrTokenSource = () => Promise<EcrAuthorizationData>;

export interface EcrAuthorizerOptions {
  /** The upstream's name, for messages. */
  upstream: string;
  region: string;
  /** 12-digit account ID of the registry; optional, ECR defaults to the caller's account. */
  registryId?: string;
  /** URL of the ECR API (a VPC endpoint, or a test server); default: the region's public one. */
  endpoint?: string;
  log: Logger;
  now?: () => number;
  /** Time limit for one API call (connect and answer); default 30 s. */
  timeoutMs?: number;
  /** Replaces the SDK call (unit tests). */
  fetchToken?: EcrTokenSource;
}

/** ECR's documented lifetime, assumed when an answer names none. */
const DEFAULT_LIFETIME_MS = 12 * 3_600_000;
/** Refresh this long before expiry at most (and a quarter of the lifetime at least). */
const MAX_MARGIN_MS = 3_600_000;
/**
 * A token younger than this is not replaced because of a 401, a 403 or invalidate(): those
 * answers are late replies to requests sent with the previous token, or a refusal a new token
 * would not change. It bounds GetAuthorizationToken calls to one per this period.
 */
export const REFRESH_COOLDOWN_MS = 10_000;
/** After a failed refresh, a token that is still valid is used this long before trying again. */
const RETRY_AFTER_FAILURE_MS = 30_000;

interface Current {
  header: string;
  fetchedAt: number;
  expiresAt: number;
  refreshAt: number;
}

/** Basic auth with an ECR authorization token: one token per upstream (it is not per repository). */
export class EcrAuthorizer implements Authorizer {
  readonly #opts: EcrAuthorizerOptions;
  readonly #now: () => number;
  readonly #fetchToken: EcrTokenSource;
  #current?: Current;
  #stale = false;
  #retryAt = 0;
  #inflight?: Promise<string>;
  #sdk?: SdkClient;

  constructor(opts: EcrAuthorizerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#fetchToken = opts.fetchToken ?? (() => this.#sdkFetch());
  }

  /** Builds one from an upstream's configuration (`type: ecr`). */
  static fromConfig(config: UpstreamConfig, opts: { log: Logger; now?: () => number }): EcrAuthorizer {
    if (!config.region) throw new Error(`upstream ${config.name} is of type ecr but names no region`);
    return new EcrAuthorizer({
      upstream: config.name,
      region: config.region,
      registryId: config.registryId,
      endpoint: config.endpoint,
      timeoutMs: config.headersTimeoutMs,
      log: opts.log,
      now: opts.now,
    });
  }

  async header(_scope: string): Promise<string> {
    const c = this.#current;
    const now = this.#now();
    if (c && now < c.refreshAt && !(this.#stale && now - c.fetchedAt >= REFRESH_COOLDOWN_MS)) return c.header;
    // The ECR API failed a moment ago and the token still works: use it rather than ask again.
    if (c && !this.#stale && now < c.expiresAt && now < this.#retryAt) return c.header;
    return this.#refresh(false);
  }

  /** A 401 (or ECR's expired 403): a new token, unless one is on its way or was just fetched. */
  async onChallenge(_scope: string, _challenges: Challenge[]): Promise<string> {
    if (this.#inflight) return this.#inflight;
    const c = this.#current;
    if (c && this.#now() - c.fetchedAt < REFRESH_COOLDOWN_MS) return c.header;
    return this.#refresh(true);
  }

  /** The upstream refused the token: the next header() fetches a new one (subject to the cooldown). */
  invalidate(_scope: string): void {
    if (this.#current) this.#stale = true;
  }

  /** Frees the SDK client's sockets. */
  close(): void {
    this.#sdk?.destroy();
  }

  /** One GetAuthorizationToken at a time; every caller meanwhile shares its answer. */
  #refresh(forced: boolean): Promise<string> {
    this.#inflight ??= this.#doRefresh(forced).finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async #doRefresh(forced: boolean): Promise<string> {
    const started = this.#now();
    let data: EcrAuthorizationData;
    try {
      data = await this.#fetchToken();
    } catch (err) {
      const c = this.#current;
      const now = this.#now();
      if (!forced && !this.#stale && c && now < c.expiresAt) {
        this.#retryAt = now + RETRY_AFTER_FAILURE_MS;
        this.#opts.log.warn('could not refresh the ECR authorization; using the current one until it expires', {
          region: this.#opts.region,
          expiresAt: new Date(c.expiresAt).toISOString(),
          reason: describe(err),
        });
        return c.header;
      }
      throw this.#domainError(err);
    }
    const header = 'Basic ' + checkToken(data.authorizationToken);
    const now = this.#now();
    const expiresAt = data.expiresAt ?? started + DEFAULT_LIFETIME_MS;
    const lifetime = expiresAt - started;
    const margin = Math.min(MAX_MARGIN_MS, Math.max(0, lifetime) / 4);
    // An expiry already past by our clock (a skewed clock) must not make every request refresh.
    const refreshAt = Math.max(expiresAt - margin, now + REFRESH_COOLDOWN_MS);
    if (expiresAt <= now) this.#opts.log.warn('the ECR authorization expires before it was received; is the clock right?', { expiresAt: new Date(expiresAt).toISOString() });
    this.#current = { header, fetchedAt: now, expiresAt, refreshAt };
    this.#stale = false;
    this.#retryAt = 0;
    this.#opts.log.info('obtained an ECR authorization', {
      region: this.#opts.region,
      registry: data.proxyEndpoint,
      expiresAt: new Date(expiresAt).toISOString(),
      refreshAt: new Date(refreshAt).toISOString(),
    });
    return header;
  }

  #domainError(err: unknown): Error {
    const e = err as { name?: string; code?: string; $metadata?: { httpStatusCode?: number }; $fault?: string };
    const who = `${this.#opts.upstream}: ECR GetAuthorizationToken in ${this.#opts.region}`;
    // Details (which may name the IAM principal) go to the log, not to the pulling client.
    this.#opts.log.warn('ECR GetAuthorizationToken failed', { region: this.#opts.region, reason: describe(err) });
    if (err instanceof UpstreamInvalid) return err;
    if (e.name === 'CredentialsProviderError') return new UpstreamUnauthorized(`${who}: no AWS credentials found`, 401);
    const status = e.$metadata?.httpStatusCode;
    if (e.$fault === 'client' && status !== undefined && status !== 429 && status < 500 && !/Throttl/i.test(e.name ?? '')) {
      return new UpstreamUnauthorized(`${who} was refused (${e.name ?? status})`, 403);
    }
    return new UpstreamUnavailable(`${who} failed (${e.name && e.name !== 'Error' ? e.name : (e.code ?? 'error')})`);
  }

  async #sdkFetch(): Promise<EcrAuthorizationData> {
    this.#sdk ??= await createSdkClient(this.#opts);
    return this.#sdk.getToken();
  }
}

interface SdkClient {
  getToken(): Promise<EcrAuthorizationData>;
  destroy(): void;
}

async function createSdkClient(o: EcrAuthorizerOptions): Promise<SdkClient> {
  const { ECRClient, GetAuthorizationTokenCommand } = await import('@aws-sdk/client-ecr');
  const timeout = o.timeoutMs ?? 30_000;
  // No `credentials`: the SDK's default provider chain, which caches and renews what it finds.
  const client = new ECRClient({
    region: o.region,
    ...(o.endpoint ? { endpoint: o.endpoint } : {}),
    requestHandler: { connectionTimeout: timeout, requestTimeout: timeout },
  });
  return {
    async getToken() {
      const out = await client.send(new GetAuthorizationTokenCommand(o.registryId ? { registryIds: [o.registryId] } : {}));
      const d = out.authorizationData?.[0];
      if (!d?.authorizationToken) throw new UpstreamInvalid(`${o.upstream}: ECR GetAuthorizationToken answered no token`);
      return { authorizationToken: d.authorizationToken, expiresAt: d.expiresAt?.getTime(), proxyEndpoint: d.proxyEndpoint };
    },
    destroy: () => client.destroy(),
  };
}

/** The token must be base64 of `user:password`; it is passed on as it came. */
function checkToken(token: string): string {
  const decoded = /^[A-Za-z0-9+/]+={0,2}$/.test(token) ? Buffer.from(token, 'base64').toString('utf8') : '';
  if (!/^[^:]+:./s.test(decoded)) throw new UpstreamInvalid('ECR GetAuthorizationToken answered a token that is not base64 user:password');
  return token;
}

function describe(err: unknown): string {
  const e = err as { name?: string; message?: string };
  return `${e.name ?? 'Error'}: ${e.message ?? String(err)}`;
}
