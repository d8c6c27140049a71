// The parent hop: another mirror (a central regmirror, or any registry mirror that honours
// containerd's `?ns=`) that an upstream's requests go through first, so a cluster fetches
// from the internet once and every node serves from its own disk. The upstream's name
// travels in `ns=`, so every upstream works through one parent; the upstream's credentials
// stay here (the parent holds its own), and the parent's go only to the parent.
import type { Agent, Dispatcher } from 'undici';
import type { ParentConfig, UpstreamConfig } from '../config.js';
import { EgressRefused, UpstreamUnavailable } from '../errors.js';
import type { Logger } from '../log.js';
import { RegistryAuthorizer } from './auth.js';
import { connectionPool, withRedirects, type Hop } from './hop.js';
import { UpstreamState } from './rate-limit.js';

export interface ParentHopOptions {
  log: Logger;
  now: () => number;
  /** Tests may inject one; by default a pool behind the egress rule of the parent's own host. */
  dispatcher?: Dispatcher;
  onRefused: (err: EgressRefused) => void;
}

/** The parent as one hop of one upstream: health is tracked per upstream, since a parent may fail for one upstream and not another. */
export class ParentHop implements Hop {
  readonly label: string;
  readonly origin: string;
  readonly query: string;
  readonly dispatcher: Dispatcher;
  readonly auth: RegistryAuthorizer;
  readonly state: UpstreamState;
  readonly direct = false;
  readonly fallback: boolean;
  readonly #pool?: Agent;

  constructor(parent: ParentConfig, upstream: UpstreamConfig, o: ParentHopOptions) {
    this.label = `parent ${new URL(parent.url).host}`;
    this.origin = parent.url;
    this.query = `ns=${encodeURIComponent(upstream.name)}`;
    this.fallback = parent.fallback;
    // The upstream's timeouts: the parent stands in for it, and a hung parent must not outwait it.
    const pool = o.dispatcher
      ? undefined
      : connectionPool({
          url: parent.url,
          listed: [],
          connectTimeoutMs: upstream.connectTimeoutMs,
          headersTimeoutMs: upstream.headersTimeoutMs,
          idleTimeoutMs: upstream.idleTimeoutMs,
          connections: 2 * upstream.concurrency,
          onRefused: o.onRefused,
        });
    this.#pool = pool;
    this.dispatcher = withRedirects(o.dispatcher ?? pool!);
    this.state = new UpstreamState({ name: this.label, now: o.now, budgetFloor: 0, failureBackoffMs: upstream.failureBackoffMs });
    this.auth = new RegistryAuthorizer({
      upstreamUrl: parent.url,
      credentials: parent.credentials,
      tokenRealms: [],
      dispatcher: this.dispatcher,
      log: o.log,
      now: o.now,
      timeoutMs: upstream.headersTimeoutMs,
      connectTimeoutMs: upstream.connectTimeoutMs,
    });
  }

  /**
   * Whether a failed request should be asked of the upstream itself: the parent could not
   * be reached or answered 5xx (its own UNAVAILABLE included). A 401, 403, 404 or 429 is an
   * answer: the upstream would say the same, or is the one out of budget.
   */
  failedOver(err: unknown, signal?: AbortSignal): boolean {
    if (!this.fallback || signal?.aborted) return false;
    return err instanceof UpstreamUnavailable || err instanceof EgressRefused;
  }

  /** While the parent is backing off, undefined (go direct) with fallback, else the error; otherwise the probe's end. */
  admit(): (() => void) | undefined {
    try {
      return this.state.admit();
    } catch (err) {
      if (this.fallback) return undefined;
      throw err;
    }
  }

  async close(): Promise<void> {
    await this.#pool?.close();
  }
}
