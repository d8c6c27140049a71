// A hop is one origin an upstream's requests are sent to: the upstream itself, or a parent
// mirror in front of it. Each hop has its own connection pool behind the egress rule, its
// own Authorizer and its own health, so the parent's credentials, failures and (missing)
// rate-limit headers never mix with the upstream's.
import type { Dispatcher } from 'undici';
import { Agent, interceptors } from './undici-core.js';
import type { EgressRefused } from '../errors.js';
import type { Authorizer } from './auth.js';
import { EgressPolicy } from './egress.js';
import type { UpstreamState } from './rate-limit.js';

export interface Hop {
  /** Names it in errors and logs: the upstream's name, or `parent <host>`. */
  readonly label: string;
  /** Scheme, host and port; no trailing slash. */
  readonly origin: string;
  /** Appended to every request's query (`ns=docker.io`), or ''. */
  readonly query: string;
  readonly dispatcher: Dispatcher;
  readonly auth: Authorizer;
  readonly state: UpstreamState;
  /** The upstream itself: its answers carry its rate limit and count as its requests. */
  readonly direct: boolean;
}

/** The URL of `path` (which may hold a query) on this hop. */
export function hopUrl(hop: Hop, path: string): string {
  if (!hop.query) return hop.origin + path;
  return `${hop.origin}${path}${path.includes('?') ? '&' : '?'}${hop.query}`;
}

export interface PoolOptions {
  /** The hop's own origin: its addresses may be loopback or private. */
  url: string;
  /** Other hosts the operator trusts on loopback and private addresses. */
  listed: readonly string[];
  connectTimeoutMs: number;
  headersTimeoutMs: number;
  idleTimeoutMs: number;
  connections: number;
  onRefused: (err: EgressRefused) => void;
}

/** A keep-alive pool whose every connection (the hop, its redirects, its token realm) passes the egress rule. */
export function connectionPool(o: PoolOptions): Agent {
  const egress = new EgressPolicy({ upstreamUrl: o.url, listed: o.listed, onRefused: o.onRefused });
  return new Agent({
    connect: egress.connector({ timeout: o.connectTimeoutMs }),
    headersTimeout: o.headersTimeoutMs,
    bodyTimeout: o.idleTimeoutMs,
    keepAliveTimeout: 30_000,
    connections: o.connections,
  });
}

/**
 * Follows redirects, dropping Authorization and Cookie when a hop changes origin, which is
 * what CDN and S3 presigned blob URLs require.
 */
export function withRedirects(d: Dispatcher): Dispatcher {
  return d.compose(interceptors.redirect({ maxRedirections: 5 }));
}
