// Upstream authentication: the WWW-Authenticate parser and the Authorizer that turns a
// challenge into an Authorization header. Docker Hub, GHCR, Quay and any standard token
// server share the Bearer path; a registry that challenges with Basic gets the static
// credentials. Credentials go only to the upstream itself and to token realms on its own
// site or listed in its configuration. Where they come from (the config file, or a Docker
// config.json and its credential helpers) is a CredentialSource's business.
import type { Dispatcher } from 'undici';
import { request } from './undici-core.js';
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

/** A user name and password (Basic), or an OAuth2 refresh token (`identitytoken` in a Docker config). */
export type UpstreamCredential = { kind: 'password'; username: string; password: string } | { kind: 'identity-token'; token: string };

/** Where an upstream's credentials come from; undefined: anonymous. */
export interface CredentialSource {
  get(): Promise<UpstreamCredential | undefined>;
  /** The upstream refused `sent`: look again now; the new credential, or undefined when there is none other. */
  refused(sent: UpstreamCredential): Promise<UpstreamCredential | undefined>;
}

/** The username and password of the config file: they never change while the process runs. */
export function fixedCredentials(c: Credentials): CredentialSource {
  const credential: UpstreamCredential = { kind: 'password', username: c.username, password: c.password };
  return { get: async () => credential, refused: async () => undefined };
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
  /** Credentials that may change at runtime; takes the place of `credentials`. */
  credentialSource?: CredentialSource;
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

/** OAuth2 client_id sent with a refresh token, as the distribution token spec asks. */
const CLIENT_ID = 'regmirror';

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
  readonly #source?: CredentialSource;
  #bearer?: { realm: string; service?: string };
  #basic = false;

  constructor(opts: RegistryAuthorizerOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#source = opts.credentialSource ?? (opts.credentials ? fixedCredentials(opts.credentials) : undefined);
  }

  async header(scope: string): Promise<string | undefined> {
    if (this.#basic) return basicHeader(await this.#source?.get());
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
      // Basic was sent and refused: the credentials may have changed since.
      const refused = this.#basic;
      this.#basic = true;
      const sent = await this.#source?.get();
      return basicHeader(refused && sent ? ((await this.#source!.refused(sent)) ?? sent) : sent);
    }
    return undefined;
  }

  invalidate(scope: string): void {
    this.#tokens.delete(scope);
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
    let credential: UpstreamCredential | undefined;
    if (this.#source) {
      if (await this.#realmTrusted(url)) credential = await this.#source.get();
      else this.#opts.log.warn('token realm is outside the upstream; asking for an anonymous token', { realm: url.host });
    }
    let answer = await this.#askToken(url, service, scope, credential);
    if ((answer.status === 401 || answer.status === 403) && credential) {
      const fresh = await this.#source!.refused(credential);
      if (fresh) answer = await this.#askToken(url, service, scope, (credential = fresh));
    }
    const { status, body } = answer;
    if (status === 401 || status === 403) {
      throw new UpstreamUnauthorized(`token server ${url.host} refused the ${credential ? 'configured credentials' : 'anonymous request'} (${status})`, status);
    }
    if (status === 404 && credential?.kind === 'identity-token') throw new UpstreamInvalid(`token server ${url.host} does not take an identity token (no OAuth2 POST endpoint)`);
    if (status >= 500) throw new UpstreamUnavailable(`token server ${url.host} answered ${status}`);
    if (status !== 200) throw new UpstreamInvalid(`token server ${url.host} answered ${status}`);
    return this.#remember(scope, parseTokenResponse(body));
  }

  /**
   * A password goes as Basic on the GET of the token spec; an identity token is an OAuth2
   * refresh token, exchanged by a form POST (grant_type=refresh_token) to the same realm.
   */
  async #askToken(realm: URL, service: string | undefined, scope: string, credential: UpstreamCredential | undefined): Promise<{ status: number; body: Buffer }> {
    const url = new URL(realm);
    let init: { method: 'GET' | 'POST'; headers: Record<string, string>; body?: string };
    if (credential?.kind === 'identity-token') {
      const form = new URLSearchParams({ grant_type: 'refresh_token', refresh_token: credential.token, client_id: CLIENT_ID, scope });
      if (service) form.set('service', service);
      init = { method: 'POST', headers: { 'content-type': 'application/x-www-form-urlencoded' }, body: form.toString() };
    } else {
      if (service) url.searchParams.set('service', service);
      url.searchParams.append('scope', scope);
      const authorization = basicHeader(credential);
      init = { method: 'GET', headers: authorization ? { authorization } : {} };
    }
    const started = performance.now();
    // Realm and scope only: never the token, nor the credentials.
    const trace = { realm: url.origin + url.pathname, service, scope, credentials: credential?.kind ?? 'anonymous' };
    const res = await request(url, { ...init, dispatcher: this.#opts.dispatcher, headersTimeout: this.#opts.timeoutMs, bodyTimeout: this.#opts.timeoutMs }).catch((err: unknown) => {
      this.#opts.log.debug('token request failed', { ...trace, err });
      if (err instanceof EgressRefused) throw err;
      throw new UpstreamUnavailable(describeNetworkFailure(`token server ${url.host}`, url.origin, err, { connectMs: this.#opts.connectTimeoutMs, headersMs: this.#opts.timeoutMs }));
    });
    this.#opts.log.debug('token request', { ...trace, status: res.statusCode, ms: Math.round(performance.now() - started) });
    return { status: res.statusCode, body: await readLimited(res.body, MAX_TOKEN_RESPONSE) };
  }

  #remember(scope: string, token: { token: string; expiresIn?: number }): string {
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
   * or github.io) or to realms its configuration names. tldts (the list, ~1 MiB of heap) is
   * loaded the first time a credential might go to another host, not by every process.
   */
  async #realmTrusted(realm: URL): Promise<boolean> {
    const upstream = new URL(this.#opts.upstreamUrl).hostname;
    const listed = this.#opts.tokenRealms ?? [];
    if (realm.hostname === upstream || listed.includes(realm.hostname) || listed.includes(realm.host)) return true;
    const { getDomain } = await import('tldts');
    const site = getDomain(upstream, { allowPrivateDomains: true });
    return site !== null && getDomain(realm.hostname, { allowPrivateDomains: true }) === site;
  }
}

/** Basic for a user name and password; an identity token has no Basic form. */
function basicHeader(c: UpstreamCredential | undefined): string | undefined {
  return c?.kind === 'password' ? 'Basic ' + Buffer.from(`${c.username}:${c.password}`).toString('base64') : undefined;
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
