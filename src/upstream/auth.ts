// Upstream authentication: the WWW-Authenticate parser and the Authorizer that turns a
// challenge into an Authorization header. Docker Hub, GHCR, Quay and any standard token
// server share the Bearer path; a registry that challenges with Basic gets the static
// credentials. Credentials go only to the upstream itself and to token realms on its own
// site or listed in its configuration.
import { getDomain } from 'tldts';
import { request, type Dispatcher } from 'undici';
import type { Credentials } from '../config.js';
import { EgressRefused, UpstreamInvalid, UpstreamUnavailable, UpstreamUnauthorized } from '../errors.js';
import type { Logger } from '../log.js';
import { describeNetworkFailure } from './network-error.js';

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/** Parses a WWW-Authenticate value: `Bearer realm="…",service="…",scope="…"`, `Basic realm="…"`. */
export function parseChallenges(header: string | string[] | undefined): Challenge[] {
  const values = Array.isArray(header) ? header : header ? [header] : [];
  const out: Challenge[] = [];
  for (const value of values) {
    // Several challenges may share one header: a new one starts where a bare token is
    // followed by whitespace and a param (`, Bearer realm=`), outside quotes.
    for (const part of value.split(/,\s*(?=[A-Za-z][\w-]*\s+[\w-]+\s*=)(?=(?:[^"]*"[^"]*")*[^"]*$)/)) {
      const m = /^\s*([A-Za-z][\w-]*)\s*(.*)$/s.exec(part);
      if (!m) continue;
      const params: Record<string, string> = {};
      for (const p of m[2].matchAll(/([\w-]+)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/g)) {
        params[p[1].toLowerCase()] = p[2] !== undefined ? p[2].replace(/\\(.)/g, '$1') : p[3];
      }
      out.push({ scheme: m[1].toLowerCase(), params });
    }
  }
  return out;
}

/** Produces Authorization header values for scopes such as `repository:library/nginx:pull`. */
export interface Authorizer {
  /** The header to send before any challenge was seen for this request; may fetch a token. */
  header(scope: string): Promise<string | undefined>;
  /** After a 401: learn the challenge, drop the cached token and return a fresh header (or undefined). */
  onChallenge(scope: string, challenges: Challenge[]): Promise<string | undefined>;
  invalidate(scope: string): void;
}

export interface RegistryAuthorizerOptions {
  upstreamUrl: string;
  credentials?: Credentials;
  /** Extra realm hosts trusted with the credentials. */
  tokenRealms?: string[];
  dispatcher: Dispatcher;
  log: Logger;
  now?: () => number;
  /** Headers and body deadline of a token request. */
  timeoutMs?: number;
  /** The pool's connect deadline, to name it when it ran out. */
  connectTimeoutMs?: number;
}

/** A token answer larger than this is refused (the upstream is untrusted input). */
const MAX_TOKEN_RESPONSE = 1024 * 1024;
/** The spec's default when a token answer has no expires_in. */
const DEFAULT_TOKEN_SECONDS = 60;
const MAX_CACHED_SCOPES = 10_000;

interface CachedToken {
  header: string;
  /** undefined: no lifetime given; reuse until the upstream answers 401. */
  expiresAt?: number;
}

/** Bearer-challenge and Basic auth for one upstream, with a token cache per scope. */
export class RegistryAuthorizer implements Authorizer {
  readonly #opts: RegistryAuthorizerOptions;
  readonly #now: () => number;
  readonly #tokens = new Map<string, CachedToken>();
  readonly #inflight = new Map<string, Promise<string | undefined>>();
  #bearer?: { realm: string; service?: string };
  #basic = false;

  constructor(opts: RegistryAuthorizerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  async header(scope: string): Promise<string | undefined> {
    if (this.#basic) return this.#basicHeader();
    if (!this.#bearer) return undefined;
    const cached = this.#tokens.get(scope);
    if (cached && (cached.expiresAt === undefined || cached.expiresAt > this.#now())) return cached.header;
    return this.#fetchOnce(scope);
  }

  async onChallenge(scope: string, challenges: Challenge[]): Promise<string | undefined> {
    this.invalidate(scope);
    const bearer = challenges.find((c) => c.scheme === 'bearer' && c.params.realm);
    if (bearer) {
      this.#bearer = { realm: bearer.params.realm, service: bearer.params.service };
      return this.#fetchOnce(scope);
    }
    if (challenges.some((c) => c.scheme === 'basic')) {
      this.#basic = true;
      return this.#basicHeader();
    }
    return undefined;
  }

  invalidate(scope: string): void {
    this.#tokens.delete(scope);
  }

  #basicHeader(): string | undefined {
    const c = this.#opts.credentials;
    return c ? 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64') : undefined;
  }

  /** One token request per scope at a time, however many requests want it. */
  #fetchOnce(scope: string): Promise<string | undefined> {
    let p = this.#inflight.get(scope);
    if (!p) {
      p = this.#fetchToken(scope).finally(() => this.#inflight.delete(scope));
      this.#inflight.set(scope, p);
    }
    return p;
  }

  async #fetchToken(scope: string): Promise<string | undefined> {
    const { realm, service } = this.#bearer!;
    const url = new URL(realm);
    if (url.protocol !== 'https:' && url.protocol !== 'http:') throw new UpstreamInvalid('token realm is not an http(s) URL');
    if (service) url.searchParams.set('service', service);
    url.searchParams.append('scope', scope);
    const headers: Record<string, string> = {};
    if (this.#opts.credentials) {
      if (this.#realmTrusted(url)) headers.authorization = this.#basicHeader()!;
      else this.#opts.log.warn('token realm is outside the upstream; asking for an anonymous token', { realm: url.host });
    }
    const started = performance.now();
    // Realm and scope only: never the token, nor the credentials in the header.
    const trace = { realm: url.origin + url.pathname, service, scope, credentials: headers.authorization ? 'basic' : 'anonymous' };
    const res = await request(url, {
      method: 'GET',
      headers,
      dispatcher: this.#opts.dispatcher,
      headersTimeout: this.#opts.timeoutMs,
      bodyTimeout: this.#opts.timeoutMs,
    }).catch((err: unknown) => {
      this.#opts.log.debug('token request failed', { ...trace, err });
      if (err instanceof EgressRefused) throw err;
      throw new UpstreamUnavailable(describeNetworkFailure(`token server ${url.host}`, url.origin, err, { connectMs: this.#opts.connectTimeoutMs, headersMs: this.#opts.timeoutMs }));
    });
    this.#opts.log.debug('token request', { ...trace, status: res.statusCode, ms: Math.round(performance.now() - started) });
    const body = await readLimited(res.body, MAX_TOKEN_RESPONSE);
    if (res.statusCode === 401 || res.statusCode === 403) {
      throw new UpstreamUnauthorized(`token server ${url.host} refused the ${this.#opts.credentials ? 'configured credentials' : 'anonymous request'} (${res.statusCode})`, res.statusCode);
    }
    if (res.statusCode >= 500) throw new UpstreamUnavailable(`token server ${url.host} answered ${res.statusCode}`);
    if (res.statusCode !== 200) throw new UpstreamInvalid(`token server ${url.host} answered ${res.statusCode}`);
    const token = parseTokenResponse(body);
    const seconds = token.expiresIn;
    // Refresh a little before expiry, so no request goes out with a token about to lapse.
    const lifetimeMs = seconds === undefined ? undefined : seconds * 1000 - Math.min(30_000, (seconds * 1000) / 5);
    const entry: CachedToken = { header: `Bearer ${token.token}`, expiresAt: lifetimeMs === undefined ? undefined : this.#now() + lifetimeMs };
    if (this.#tokens.size >= MAX_CACHED_SCOPES) this.#tokens.delete(this.#tokens.keys().next().value!);
    this.#tokens.set(scope, entry);
    return entry.header;
  }

  /**
   * Credentials go to the upstream's own registrable domain (auth.docker.io for
   * registry-1.docker.io, by the Public Suffix List, so never another owner under co.uk
   * or github.io) or to realms its configuration names.
   */
  #realmTrusted(realm: URL): boolean {
    const upstream = new URL(this.#opts.upstreamUrl).hostname;
    const listed = this.#opts.tokenRealms ?? [];
    if (realm.hostname === upstream || listed.includes(realm.hostname) || listed.includes(realm.host)) return true;
    const site = getDomain(upstream, { allowPrivateDomains: true });
    return site !== null && getDomain(realm.hostname, { allowPrivateDomains: true }) === site;
  }
}

function parseTokenResponse(body: Buffer): { token: string; expiresIn?: number } {
  let doc: { token?: unknown; access_token?: unknown; expires_in?: unknown };
  try {
    doc = JSON.parse(body.toString('utf8'));
  } catch {
    throw new UpstreamInvalid('token server answered something that is not JSON');
  }
  const token = typeof doc.token === 'string' && doc.token ? doc.token : doc.access_token;
  if (typeof token !== 'string' || !token) throw new UpstreamInvalid('token server answered no token');
  const expiresIn = typeof doc.expires_in === 'number' && doc.expires_in > 0 ? doc.expires_in : undefined;
  // A token server that names no lifetime: the spec says 60 s, but GHCR's tokens live far
  // longer; reuse until a 401 rather than fetching a new one every minute.
  return { token, expiresIn: doc.expires_in === undefined ? undefined : (expiresIn ?? DEFAULT_TOKEN_SECONDS) };
}

/** Reads a body into memory, refusing one larger than `limit`. */
export async function readLimited(body: AsyncIterable<Uint8Array> & { destroy?: (e?: Error) => void }, limit: number): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.byteLength;
    if (size > limit) {
      body.destroy?.();
      throw new UpstreamInvalid(`upstream answer is larger than ${limit} bytes`);
    }
    chunks.push(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength));
  }
  return Buffer.concat(chunks, size);
}
