// UpstreamClient: one per configured upstream. Holds the undici Agent (keep-alive pool,
// timeouts, redirects that drop Authorization across origins), the concurrency bound and
// the Authorizer, and maps upstream statuses onto domain errors. Registry differences
// live in the Authorizer, not here. With a parent configured, every request goes to the
// parent first (parent.ts) and to the upstream itself only when the parent fails.
import type { Readable } from 'node:stream';
import pLimit, { type LimitFunction } from 'p-limit';
import type { Agent, Dispatcher } from 'undici';
import { request } from './undici-core.js';
import type { ParentConfig, UpstreamConfig } from '../config.js';
import {
  BlobNotFound,
  EgressRefused,
  ManifestNotFound,
  NotInOfflineCache,
  RegmirrorError,
  RepositoryNotFound,
  UpstreamInvalid,
  UpstreamRateLimited,
  UpstreamUnauthorized,
  UpstreamUnavailable,
} from '../errors.js';
import type { Logger } from '../log.js';
import { acceptHeader, MAX_MANIFEST_BYTES } from '../oci/manifest.js';
import { parseChallenges, readLimited, RegistryAuthorizer } from './auth.js';
import { DockerConfigSource } from './docker-config.js';
import { ECR_EXPIRED_TOKEN, EcrAuthorizer } from './ecr.js';
import { connectionPool, hopUrl, withRedirects, type Hop } from './hop.js';
import { describeNetworkFailure } from './network-error.js';
import { header, mediaTypeOf, numberHeader, ociCode } from './response.js';
import { ParentHop } from './parent.js';
import { acquireSlot } from './slots.js';
import { parseRateLimit, parseRetryAfter, UpstreamState, type UpstreamObserver, type UpstreamRequestKind } from './rate-limit.js';

export interface ManifestHead {
  digest?: string;
  mediaType?: string;
  size?: number;
}

export interface ManifestBody {
  bytes: Buffer;
  mediaType?: string;
  /** The Docker-Content-Digest header, when the upstream sent one. */
  digest?: string;
}

export interface BlobBody {
  /** 200 or 206 */
  status: number;
  /** Bytes in this response (Content-Length), when known. */
  length?: number;
  body: Readable;
  /** Must be called once the body is consumed or abandoned: frees the concurrency slot. */
  release(): void;
}

export interface PassThroughBody {
  bytes: Buffer;
  contentType?: string;
  link?: string;
}

type Headers = Record<string, string | string[] | undefined>;

interface Sent {
  status: number;
  headers: Headers;
  body: Readable;
  release(): void;
}

interface SendOptions {
  method: 'GET' | 'HEAD';
  path: string;
  scope: string;
  headers?: Record<string, string>;
  signal?: AbortSignal;
  /** How to name a 404. */
  notFound: () => RegmirrorError;
  kind: UpstreamRequestKind;
}

/** Tag lists and referrer indexes larger than this are refused. */
const MAX_LIST_BYTES = 4 * 1024 * 1024;

export interface UpstreamClientOptions {
  log: Logger;
  now?: () => number;
  /** Tests may inject a dispatcher; by default an Agent with the configured timeouts. */
  dispatcher?: Dispatcher;
  /** Told of rate-limit headers and counted requests (MetadataDb batches them). */
  observer?: UpstreamObserver;
  /** Offline mode: no request is ever sent. */
  offline?: boolean;
  /** Fetch through this mirror first (unless the upstream opts out with `parent: false`). */
  parent?: ParentConfig;
}

/** Talks to one upstream registry. */
export class UpstreamClient {
  readonly name: string;
  readonly config: UpstreamConfig;
  /** Rate limit, budget and recent failures of this upstream. */
  readonly state: UpstreamState;
  readonly #observer?: UpstreamObserver;
  readonly #offline: boolean;
  readonly #now: () => number;
  readonly #agent?: Agent;
  readonly #direct: Hop;
  readonly #parent?: ParentHop;
  /** Blob bodies hold their slot while they stream… */
  readonly #bodies: LimitFunction;
  /** …so manifest, HEAD, tag-list and referrer requests (and their tokens) have slots of their own. */
  readonly #small: LimitFunction;
  readonly #log: Logger;

  constructor(config: UpstreamConfig, opts: UpstreamClientOptions) {
    this.name = config.name;
    this.config = config;
    this.#now = opts.now ?? Date.now;
    this.#observer = opts.observer;
    this.#offline = opts.offline ?? false;
    this.state = new UpstreamState({ name: config.name, now: this.#now, budgetFloor: config.budgetFloor, failureBackoffMs: config.failureBackoffMs });
    this.#log = opts.log.child({ component: 'upstream', upstream: config.name });
    const onRefused = (err: EgressRefused) => {
      this.#log.warn('refused to follow the upstream to a restricted address', { reason: err.message });
      this.#observer?.egressRefused?.(config.name, err.kind);
    };
    // Every connection (the registry, its redirects, its token realm) passes the egress rule.
    this.#agent = opts.dispatcher
      ? undefined
      : connectionPool({
          url: config.url,
          listed: [...config.tokenRealms, ...config.redirectHosts],
          connectTimeoutMs: config.connectTimeoutMs,
          headersTimeoutMs: config.headersTimeoutMs,
          idleTimeoutMs: config.idleTimeoutMs,
          // Blob bodies and small requests each have `concurrency` slots.
          connections: 2 * config.concurrency,
          onRefused,
        });
    const dispatcher = withRedirects(opts.dispatcher ?? this.#agent!);
    this.#bodies = pLimit(config.concurrency);
    this.#small = pLimit(config.concurrency);
    const auth =
      config.type === 'ecr'
        ? EcrAuthorizer.fromConfig(config, { log: this.#log, now: opts.now })
        : new RegistryAuthorizer({
            upstreamUrl: config.url,
            credentials: config.credentials,
            ...(config.dockerConfig ? { credentialSource: DockerConfigSource.fromConfig(config.dockerConfig, config, this.#log) } : {}),
            tokenRealms: config.tokenRealms,
            dispatcher,
            log: this.#log,
            now: opts.now,
            timeoutMs: config.headersTimeoutMs,
            connectTimeoutMs: config.connectTimeoutMs,
          });
    this.#direct = { label: config.name, origin: config.url, query: '', dispatcher, auth, state: this.state, direct: true };
    if (opts.parent && config.viaParent !== false) {
      this.#parent = new ParentHop(opts.parent, config, { log: this.#log, now: this.#now, dispatcher: opts.dispatcher, onRefused });
    }
  }

  async headManifest(repo: string, ref: string, accept: number, signal?: AbortSignal): Promise<ManifestHead> {
    const res = await this.#send(
      { method: 'HEAD', kind: 'manifest_head', path: `/v2/${repo}/manifests/${ref}`, scope: pullScope(repo), headers: { accept: acceptHeader(accept) }, signal, notFound: () => new ManifestNotFound(ref) },
    );
    res.release();
    return { digest: header(res.headers, 'docker-content-digest'), mediaType: mediaTypeOf(res.headers), size: numberHeader(res.headers, 'content-length') };
  }

  async getManifest(repo: string, ref: string, accept: number, signal?: AbortSignal): Promise<ManifestBody> {
    const res = await this.#send(
      { method: 'GET', kind: 'manifest_get', path: `/v2/${repo}/manifests/${ref}`, scope: pullScope(repo), headers: { accept: acceptHeader(accept) }, signal, notFound: () => new ManifestNotFound(ref) },
    );
    try {
      const bytes = await readLimited(res.body, MAX_MANIFEST_BYTES);
      return { bytes, mediaType: mediaTypeOf(res.headers), digest: header(res.headers, 'docker-content-digest') };
    } finally {
      res.release();
    }
  }

  async headBlob(repo: string, digest: string, signal?: AbortSignal): Promise<{ size?: number }> {
    const res = await this.#send({ method: 'HEAD', kind: 'blob_head', path: `/v2/${repo}/blobs/${digest}`, scope: pullScope(repo), signal, notFound: () => new BlobNotFound(digest) });
    res.release();
    return { size: numberHeader(res.headers, 'content-length') };
  }

  /** Starts a blob download; follows the redirect to the CDN. `from` resumes at a byte offset. */
  async getBlob(repo: string, digest: string, signal: AbortSignal, from = 0): Promise<BlobBody> {
    const headers: Record<string, string> = from > 0 ? { range: `bytes=${from}-` } : {};
    const res = await this.#send({ method: 'GET', kind: 'blob_get', path: `/v2/${repo}/blobs/${digest}`, scope: pullScope(repo), headers, signal, notFound: () => new BlobNotFound(digest) });
    if (from > 0 && res.status !== 206) {
      res.body.destroy();
      res.release();
      throw new UpstreamUnavailable(`upstream ignored a Range request while resuming ${digest}`);
    }
    return { status: res.status, length: numberHeader(res.headers, 'content-length'), body: res.body, release: res.release };
  }

  async tags(repo: string, query: string, signal?: AbortSignal): Promise<PassThroughBody> {
    return this.#passThrough(`/v2/${repo}/tags/list${query}`, repo, signal, () => new RepositoryNotFound(repo));
  }

  async referrers(repo: string, digest: string, query: string, signal?: AbortSignal): Promise<PassThroughBody> {
    return this.#passThrough(`/v2/${repo}/referrers/${digest}${query}`, repo, signal, () => new ManifestNotFound(digest));
  }

  async close(): Promise<void> {
    if (this.#direct.auth instanceof EcrAuthorizer) this.#direct.auth.close();
    await Promise.all([this.#agent?.close(), this.#parent?.close()]);
  }

  async #passThrough(path: string, repo: string, signal: AbortSignal | undefined, notFound: () => RegmirrorError): Promise<PassThroughBody> {
    const res = await this.#send({ method: 'GET', kind: 'other', path, scope: pullScope(repo), signal, notFound });
    try {
      const bytes = await readLimited(res.body, MAX_LIST_BYTES);
      return { bytes, contentType: header(res.headers, 'content-type'), link: header(res.headers, 'link') };
    } finally {
      res.release();
    }
  }

  async #send(o: SendOptions): Promise<Sent> {
    if (this.#offline) throw offlineMiss(o);
    const parent = this.#parent;
    const viaParent = parent?.admit();
    if (!parent || !viaParent) return this.#inSlot(this.state.admit(), o, (release) => this.#sendVia(this.#direct, o, release));
    return this.#inSlot(viaParent, o, async (release) => {
      try {
        return await this.#sendVia(parent, o, release);
      } catch (err) {
        if (!parent.failedOver(err, o.signal)) throw err;
        this.#log.warn('the parent failed; asking the upstream itself', { parent: parent.label, reason: (err as Error).message });
        this.#observer?.parentFallback?.(this.name);
      } finally {
        viaParent();
      }
      const endDirect = this.state.admit();
      try {
        return await this.#sendVia(this.#direct, o, release);
      } finally {
        endDirect();
      }
    });
  }

  /**
   * Runs `send` holding a slot of the request's kind; the slot is handed to the caller
   * with the response and released here only on failure, so a blob body counts against
   * the bound while it streams. Admission (`end` is its probe's end) comes first: a hop
   * that is rate-limited or backing off fails at once instead of waiting for a slot. A
   * small request waits for its slot no longer than the connect timeout: a caller with a
   * cached answer serves it instead.
   */
  async #inSlot(end: () => void, o: SendOptions, send: (release: () => void) => Promise<Sent>): Promise<Sent> {
    try {
      const release = o.kind === 'blob_get' ? await acquireSlot(this.#bodies, this.name) : await acquireSlot(this.#small, this.name, this.config.connectTimeoutMs);
      try {
        return await send(release);
      } catch (err) {
        release();
        throw err;
      }
    } finally {
      end();
    }
  }

  /** Sends one request to `hop`, answering a 401 challenge once with fresh credentials. */
  async #sendVia(hop: Hop, o: SendOptions, release: () => void): Promise<Sent> {
    let auth = await this.#authorize(hop, () => hop.auth.header(o.scope));
    for (let attempt = 0; ; attempt++) {
      const res = await this.#request(hop, o, auth);
      this.#observe(hop, o, res);
      // ECR refuses an expired password with 403 DENIED, not 401: answered like a challenge.
      const ecrExpired = attempt === 0 && res.statusCode === 403 && hop.direct && this.config.type === 'ecr' && (await ecrTokenExpired(res, o.method));
      if ((res.statusCode === 401 || ecrExpired) && attempt === 0) {
        res.body.resume();
        const sent = auth;
        auth = await this.#authorize(hop, () => hop.auth.onChallenge(o.scope, parseChallenges(res.headers['www-authenticate'])));
        if (auth !== undefined && !(ecrExpired && auth === sent)) continue;
      }
      if (res.statusCode >= 200 && res.statusCode < 300) {
        return { status: res.statusCode, headers: res.headers, body: res.body, release };
      }
      throw await this.#failure(hop, res, o);
    }
  }

  async #request(hop: Hop, o: SendOptions, auth: string | undefined): Promise<Dispatcher.ResponseData> {
    const started = performance.now();
    // The query may carry a CDN's or a parent's parameters: the trace names the path alone.
    const trace = { method: o.method, url: hop.origin + o.path.split('?')[0], via: hop.label };
    try {
      const res = await request(hopUrl(hop, o.path), {
        method: o.method,
        headers: { ...o.headers, ...(auth ? { authorization: auth } : {}), 'user-agent': 'regmirror' },
        dispatcher: hop.dispatcher,
        signal: o.signal,
      });
      this.#log.debug('upstream request', { ...trace, status: res.statusCode, ms: msSince(started) });
      return res;
    } catch (err) {
      this.#log.debug('upstream request failed', { ...trace, ms: msSince(started), err });
      if (o.signal?.aborted) throw err;
      // The upstream pointed somewhere it may not: its fault, not an outage.
      if (err instanceof EgressRefused) throw err;
      const message = describeNetworkFailure(hop.label, hop.origin, err, { connectMs: this.config.connectTimeoutMs, headersMs: this.config.headersTimeoutMs });
      this.#failed(hop, message);
      throw new UpstreamUnavailable(message);
    }
  }

  /** A token server that cannot be reached makes the hop as unusable as the registry itself. */
  async #authorize(hop: Hop, fn: () => Promise<string | undefined>): Promise<string | undefined> {
    try {
      return await fn();
    } catch (err) {
      if (err instanceof UpstreamUnavailable) this.#failed(hop, err.message);
      throw err;
    }
  }

  /** Marks the hop down; the upstream's own failures are also counted (the status page's failures). */
  #failed(hop: Hop, reason: string): void {
    hop.state.failed(reason);
    if (hop.direct) this.#observer?.failed?.(this.name);
  }

  #observe(hop: Hop, o: SendOptions, res: Dispatcher.ResponseData): void {
    hop.state.answered();
    // The parent's answers are not the upstream's requests, nor its budget.
    if (!hop.direct) return;
    const now = this.#now();
    // A 401 answered by a token and a retry is one request as far as the budget goes.
    if (res.statusCode !== 401) this.#observer?.request(this.name, o.kind, res.statusCode, now);
    const rl = parseRateLimit(res.headers);
    if (rl) {
      this.state.observe(rl);
      const credential = this.config.type === 'ecr' ? 'ecr' : this.config.dockerConfig ? 'docker-config' : (this.config.credentials?.username ?? 'anonymous');
      this.#observer?.rateLimit(this.name, credential, rl, now);
    }
  }

  async #failure(hop: Hop, res: Dispatcher.ResponseData, o: SendOptions): Promise<RegmirrorError> {
    const body = o.method === 'GET' ? await readLimited(res.body, 64 * 1024).catch(() => Buffer.alloc(0)) : (res.body.resume(), Buffer.alloc(0));
    const status = res.statusCode;
    if (status === 401 || status === 403) {
      hop.auth.invalidate(o.scope);
      return new UpstreamUnauthorized(`${hop.label} refused access to ${o.scope.split(':')[1]} (${status})`, status);
    }
    if (status === 404) return ociCode(body) === 'NAME_UNKNOWN' ? new RepositoryNotFound(o.scope.split(':')[1]) : o.notFound();
    if (status === 429) {
      const retryAfter = parseRetryAfter(header(res.headers, 'retry-after'), this.#now());
      // A parent's 429 passes its upstream's limit on; the next request asks the parent again.
      const seconds = hop.direct ? this.state.limited(retryAfter) : (retryAfter ?? 60);
      this.#log.warn('upstream rate limit reached', { retryAfter: seconds, via: hop.label });
      return new UpstreamRateLimited(`${hop.label} rate limit reached`, seconds);
    }
    if (status === 502 || status === 503 || status === 504) this.#failed(hop, `answered ${status}`);
    if (status >= 500) return new UpstreamUnavailable(`${hop.label} answered ${status}`);
    return new UpstreamInvalid(`${hop.label} answered ${status} to ${o.method} ${o.path.split('?')[0]}`);
  }

}

function pullScope(repo: string): string {
  return `repository:${repo}:pull`;
}

/** ECR's 403 for an expired password says so in a GET's body; a HEAD has none, so its 403 may be one. */
async function ecrTokenExpired(res: Dispatcher.ResponseData, method: string): Promise<boolean> {
  if (method === 'HEAD') return true;
  const body = await readLimited(res.body, 64 * 1024).catch(() => Buffer.alloc(0));
  return ECR_EXPIRED_TOKEN.test(body.toString('utf8'));
}

function msSince(started: number): number {
  return Math.round((performance.now() - started) * 10) / 10;
}

function offlineMiss(o: SendOptions): NotInOfflineCache {
  const [, repo, what, ref] = /^\/v2\/(.+)\/(manifests|blobs|tags|referrers)\/([^?]*)/.exec(o.path) ?? [];
  const kind = o.kind.startsWith('manifest') ? 'manifest' : o.kind.startsWith('blob') ? 'blob' : 'other';
  const subject = what === undefined ? o.path : `${what === 'blobs' ? 'blob' : what === 'manifests' ? 'manifest' : what} ${ref ? `${ref} ` : ''}of ${repo}`;
  return new NotInOfflineCache(kind, `${subject} is not in the offline cache (this mirror runs offline and never asks an upstream)`);
}
