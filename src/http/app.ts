// The HTTP app: GET /v2/, one `/v2/*` route that parses the path itself (OCI names
// contain slashes) and dispatches by resource kind, the access log, and the one place
// that renders errors as OCI error JSON.
import { randomUUID } from 'node:crypto';
import { Hono, type Context } from 'hono';
import { RegExpRouter } from 'hono/router/reg-exp-router';
import type { BlobCache } from '../cache/blobs.js';
import type { ManifestCache } from '../cache/manifests.js';
import { OciError, toOciError } from '../errors.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { ClientAuth, clientAddress } from './access.js';
import { adminRoutes, type AdminDeps } from './admin.js';
import { parseDigest } from '../oci/digest.js';
import { parseV2Path } from '../oci/reference.js';
import { serveBlob } from './blobs.js';
import { outgoingOf, type Streamed } from './direct-response.js';
import { countSentBytes } from './sent-bytes.js';
import { serveManifest } from './manifests.js';
import { peerRoutes, type PeerDeps } from './peer.js';
import { PEER_PREFIX } from '../cluster/peer-client.js';
import { serveReferrers, serveTags } from './tags.js';
import type { SignatureGuard } from '../policy/signature-guard.js';
import { resolveTarget, type UpstreamTable } from './target.js';

export interface AppDeps {
  upstreams: UpstreamTable;
  blobs: BlobCache;
  manifests: ManifestCache;
  log: Logger;
  metrics?: Metrics;
  admin?: AdminDeps;
  /** Client access control; absent: anyone may pull. */
  clientAuth?: ClientAuth;
  /** A replica of a cluster: the peer endpoint, on this listener (or on its own, createPeerApp). */
  peer?: PeerDeps;
  /** The signature policies, checked before a manifest is answered; absent: none. */
  signatures?: SignatureGuard;
}

export type AppEnv = { Variables: { cache: string; upstream: string; repo: string; route: string; requestId: string; streamed?: Streamed } };

const API_VERSION = { 'docker-distribution-api-version': 'registry/2.0' };
/** Logged at debug: kube probes and Prometheus scrapes. */
const QUIET_PATHS = new Set(['/healthz', '/readyz', '/metrics']);

export function createApp(deps: AppDeps): Hono<AppEnv> {
  // Every route compiles into one regular expression: a route it cannot take fails the
  // first request (and every test) instead of silently moving each request to the trie.
  const app = new Hono<AppEnv>({ router: new RegExpRouter() });
  const log = deps.log.child({ component: 'http' });

  app.use('*', async (c, next) => {
    const started = performance.now();
    c.set('requestId', requestId(c.req.header('x-request-id')));
    await next();
    // An answer written straight into the Node response says itself how it ended.
    const streamed = c.get('streamed');
    if (streamed) return void streamed.then((end) => record(c, end, started));
    c.res.headers.set('docker-distribution-api-version', 'registry/2.0');
    c.res.headers.set('x-request-id', c.get('requestId'));
    const status = c.res.status;
    // @hono/node-server writes the Response once this returns: counted from here.
    const outgoing = outgoingOf(c);
    if (!outgoing) return record(c, { status, complete: true }, started);
    const sent = countSentBytes(outgoing);
    void sent.done.then(({ complete }) => record(c, { status, complete, bytes: sent.bytes }, started));
  });
  const record = (c: Context<AppEnv>, end: { status: number; complete: boolean; bytes?: number }, started: number) => {
    deps.metrics?.requests.inc({ route: c.get('route') ?? 'other', method: c.req.method, status: end.status, result: end.complete ? 'complete' : 'aborted' });
    // Probes and scrapes come every few seconds: at info they would drown the pulls.
    const level = QUIET_PATHS.has(c.req.path) ? 'debug' : 'info';
    log[level]('request', {
      id: c.get('requestId'),
      method: c.req.method,
      path: c.req.path,
      status: end.status,
      ...(end.complete ? {} : { aborted: true }),
      bytes: end.bytes,
      client: clientAddress(c.env),
      upstream: c.get('upstream'),
      repo: c.get('repo'),
      cache: c.get('cache'),
      ms: Math.round((performance.now() - started) * 10) / 10,
    });
  };

  if (deps.clientAuth) {
    const auth = deps.clientAuth;
    const guard = async (c: Context<AppEnv>, next: () => Promise<void>) => {
      const verdict = await auth.check(c.req.header('authorization'), clientAddress(c.env));
      if (verdict === 'throttled') throw new OciError('TOOMANYREQUESTS', 'too many failed logins from this address; try again later', { headers: { 'retry-after': '60' } });
      if (verdict !== 'ok') throw new OciError('UNAUTHORIZED', 'authentication required', { headers: { 'www-authenticate': ClientAuth.challenge } });
      await next();
    };
    app.use('/v2', guard);
    app.use('/v2/*', guard);
  }
  app.use('/v2/*', async (c, next) => {
    if (hasDotSegment(c)) throw new OciError('NAME_INVALID', 'path segments . and .. are not allowed');
    await next();
  });
  if (deps.admin) app.route('/', adminRoutes(deps.admin));
  // Outside /v2: the peer endpoint checks the cluster's signature, not client credentials.
  if (deps.peer) app.route(PEER_PREFIX, peerRoutes(deps.peer));
  app.on(['GET', 'HEAD'], '/v2', (c) => c.json({}, 200, API_VERSION));
  app.on(['GET', 'HEAD'], '/v2/', (c) => c.json({}, 200, API_VERSION));
  app.on(['GET', 'HEAD'], '/v2/*', (c) => dispatch(c, deps));
  app.all('/v2/*', () => {
    throw new OciError('UNSUPPORTED', 'this mirror is read-only: only pulls are supported');
  });
  renderErrors(app, log);
  return app;
}

/** The peer endpoint alone, for cluster.listen: the other replicas are its only clients. */
export function createPeerApp(peer: PeerDeps, log: Logger): Hono {
  const app = new Hono();
  app.route(PEER_PREFIX, peerRoutes(peer));
  renderErrors(app, log.child({ component: 'peer' }));
  return app;
}

function renderErrors(app: Hono<AppEnv> | Hono, log: Logger): void {
  app.notFound(() => errorResponse(new OciError('NAME_UNKNOWN', 'not a registry API endpoint', { status: 404 })));
  app.onError((err, c) => {
    const oci = toOciError(err);
    if (oci.status >= 500) log.warn('request failed', { method: c.req.method, path: c.req.path, status: oci.status, err });
    return errorResponse(oci, c.req.method === 'HEAD');
  });
}

async function dispatch(c: Context<AppEnv>, deps: AppDeps): Promise<Response> {
  const parsed = parseV2Path(c.req.path);
  if (!parsed || parsed.kind === 'base') throw new OciError('NAME_UNKNOWN', 'not a registry API endpoint', { status: 404 });
  c.set('route', parsed.kind);
  const target = resolveTarget(parsed.name, c.req.query('ns'), deps.upstreams);
  c.set('upstream', target.upstream.name);
  c.set('repo', target.repository);
  switch (parsed.kind) {
    case 'blob':
      return serveBlob(c, deps.blobs, target, parseDigest(parsed.reference));
    case 'manifest':
      return serveManifest(c, deps.manifests, target, parsed.reference, deps.signatures);
    case 'tags':
      return serveTags(c, deps.manifests, target);
    case 'referrers':
      return serveReferrers(c, deps.manifests, target, parsed.reference);
  }
}

/** The client's X-Request-Id when it is a plain token (as hono's middleware accepts), else a new one. */
function requestId(given: string | undefined): string {
  return given && given.length <= 255 && /^[\w\-=]+$/.test(given) ? given : randomUUID();
}

/**
 * The URL parser resolves `..` and `%2e%2e` before routing, so `/v2/a/../b` would quietly
 * become `/v2/b`; a registry name never holds such segments, so the raw path is checked.
 */
function hasDotSegment(c: Context<AppEnv>): boolean {
  const raw = (c.env as { incoming?: { url?: string } } | undefined)?.incoming?.url ?? c.req.url;
  const path = raw.split('?')[0];
  return /(^|\/)(\.|%2e){1,2}(\/|$)/i.test(path);
}

/** The only place an OCI error body is built. HEAD answers carry no body. */
function errorResponse(err: OciError, head = false): Response {
  const headers = { 'content-type': 'application/json', ...API_VERSION, ...err.headers };
  return new Response(head ? null : JSON.stringify(err.toBody()), { status: err.status, headers });
}
