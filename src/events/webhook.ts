// Sends each event to the operator's webhook: one POST per event, JSON, in the order the
// events happened. The receiver may be down, slow or answer nonsense: events then wait in
// a bounded queue (the oldest dropped first, counted) and the head is tried again with a
// growing delay. Nothing the receiver does can throw out of here.
import { createHmac } from 'node:crypto';
import { Agent, request } from '../upstream/undici-core.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { MirrorEvent } from './event.js';

export interface WebhookOptions {
  url: string;
  /** Signs each body: `x-regmirror-signature: sha256=<hex HMAC-SHA256 of the body>`. */
  secret?: string;
  /** Events waiting at most; past it the oldest is dropped. */
  queueSize: number;
  log: Logger;
  metrics?: Metrics;
  /** One delivery's limit, connect to the end of the answer (default 10 s). */
  timeoutMs?: number;
  /** The first retry's delay, doubled per failure up to maxBackoffMs (defaults 1 s and 30 s). */
  minBackoffMs?: number;
  maxBackoffMs?: number;
}

export const SIGNATURE_HEADER = 'x-regmirror-signature';
export const TIMESTAMP_HEADER = 'x-regmirror-timestamp';

/** The body of one event's POST: the event, with its time also as ISO 8601 for people. */
export function webhookBody(e: MirrorEvent): string {
  return JSON.stringify({ ...e, time: new Date(e.at).toISOString() });
}

/** The signature header's value for `body` under `secret`. */
export function sign(body: string, secret: string): string {
  return `sha256=${createHmac('sha256', secret).update(body).digest('hex')}`;
}

export class Webhook {
  readonly #opts: WebhookOptions;
  readonly #agent: Agent;
  readonly #queue: MirrorEvent[] = [];
  #running = false;
  #closed = false;
  #backoffMs = 0;
  #retry?: { timer: NodeJS.Timeout; wake: () => void };
  #inFlight?: AbortController;
  #lastWarned = 0;

  constructor(opts: WebhookOptions) {
    this.#opts = opts;
    const timeout = opts.timeoutMs ?? 10_000;
    this.#agent = new Agent({ connect: { timeout }, headersTimeout: timeout, bodyTimeout: timeout, keepAliveTimeout: 10_000 });
  }

  /** Events waiting (the one being sent included). */
  get pending(): number {
    return this.#queue.length;
  }

  /** Queues the event and starts delivering if idle; never waits. */
  send(e: MirrorEvent): void {
    if (this.#closed) return;
    this.#queue.push(e);
    while (this.#queue.length > this.#opts.queueSize) {
      this.#queue.shift();
      this.#opts.metrics?.eventsDropped.inc({ where: 'webhook' });
    }
    if (!this.#running) this.#run().catch((err: unknown) => this.#opts.log.warn('events webhook stopped delivering', { err: String(err) }));
  }

  /**
   * Gives what is queued up to `drainMs` to go out, then stops: a retry waiting is cut
   * short, a delivery under way aborted, the connections closed.
   */
  async close(drainMs = 0): Promise<void> {
    if (drainMs > 0 && this.#queue.length > 0) {
      const until = Date.now() + drainMs;
      this.#retry?.wake();
      while (this.#queue.length > 0 && Date.now() < until && !this.#closed) await new Promise((r) => setTimeout(r, 20));
    }
    this.#closed = true;
    this.#retry?.wake();
    this.#inFlight?.abort();
    await this.#agent.close().catch(() => undefined);
  }

  async #run(): Promise<void> {
    this.#running = true;
    try {
      while (this.#queue.length > 0 && !this.#closed) {
        const head = this.#queue[0];
        const failure = await this.#deliver(head);
        if (failure === undefined) {
          // The head may have been dropped for a newer one while it was being sent.
          if (this.#queue[0] === head) this.#queue.shift();
          this.#backoffMs = 0;
          continue;
        }
        if (this.#closed) break;
        this.#failed(failure);
        await this.#sleep(this.#backoffMs);
      }
    } finally {
      this.#running = false;
    }
  }

  /** One POST; undefined when the receiver took it (2xx), else why not. */
  async #deliver(e: MirrorEvent): Promise<string | undefined> {
    const body = webhookBody(e);
    const headers: Record<string, string> = { 'content-type': 'application/json', 'user-agent': 'regmirror', [TIMESTAMP_HEADER]: String(Date.now()) };
    if (this.#opts.secret !== undefined) headers[SIGNATURE_HEADER] = sign(body, this.#opts.secret);
    const abort = new AbortController();
    this.#inFlight = abort;
    const timer = setTimeout(() => abort.abort(), this.#opts.timeoutMs ?? 10_000);
    try {
      const res = await request(this.#opts.url, { method: 'POST', body, headers, dispatcher: this.#agent, signal: abort.signal });
      await res.body.dump().catch(() => undefined);
      return res.statusCode >= 200 && res.statusCode < 300 ? undefined : `answered ${res.statusCode}`;
    } catch (err) {
      return (err as Error).message || String(err);
    } finally {
      clearTimeout(timer);
      this.#inFlight = undefined;
    }
  }

  #failed(reason: string): void {
    const { minBackoffMs = 1000, maxBackoffMs = 30_000 } = this.#opts;
    this.#backoffMs = Math.min(maxBackoffMs, this.#backoffMs === 0 ? minBackoffMs : this.#backoffMs * 2);
    this.#opts.metrics?.webhookFailures.inc();
    // A receiver that is down fails every try: one line a minute says so.
    const now = Date.now();
    if (now - this.#lastWarned < 60_000) return;
    this.#lastWarned = now;
    this.#opts.log.warn('events webhook delivery failed; retrying', { reason, pending: this.#queue.length, retryInMs: this.#backoffMs });
  }

  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const wake = () => {
        clearTimeout(timer);
        this.#retry = undefined;
        resolve();
      };
      const timer = setTimeout(wake, ms);
      timer.unref();
      this.#retry = { timer, wake };
    });
  }
}
