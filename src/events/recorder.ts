// The EventSink of a running mirror: record() only counts and buffers (it never waits or
// throws, for it is called on the serving path); a timer writes the buffer to the
// metadata store in one batch a second, and every event stored is handed to the webhook.
// A flood (one tag served stale to every pull of an outage) is folded: the first
// occurrence of a kind and subject is stored at once, the others of the next minute
// become one row whose details carry their count.
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import type { EventRow, EventStore } from '../store/events.js';
import type { EventsConfig } from '../config-policies.js';
import type { EventSink, MirrorEvent, NewEvent } from './event.js';
import { Webhook } from './webhook.js';

export interface RecorderOptions {
  store: EventStore;
  config: EventsConfig;
  log: Logger;
  metrics?: Metrics;
  now?: () => number;
  /** How often the buffer is written (default 1 s). */
  flushEveryMs?: number;
  /** The window in which occurrences of one kind and subject are folded (default 1 min). */
  coalesceMs?: number;
  /** How often rows past the retention are deleted (default 1 h; the first a minute after start). */
  pruneEveryMs?: number;
  /** Prune at all: the server does, a one-shot command leaves it to the server. */
  prune?: boolean;
}

/** Rows kept in memory while the database cannot take them; older ones go first. */
const MAX_UNWRITTEN = 10_000;
/** Distinct subjects folded at once; past it every open window is closed early. */
const MAX_WINDOWS = 10_000;
/** How long close() lets the webhook deliver what is queued. */
const CLOSE_DRAIN_MS = 2000;

interface Window {
  start: number;
  /** Occurrences since the last stored row of this subject, and the latest of them. */
  folded: number;
  latest?: MirrorEvent;
}

export class EventRecorder implements EventSink {
  readonly #opts: RecorderOptions;
  readonly #now: () => number;
  readonly #coalesceMs: number;
  readonly #webhook?: Webhook;
  readonly #windows = new Map<string, Window>();
  #unwritten: EventRow[] = [];
  #flushing?: Promise<void>;
  #closed = false;
  #lastWarned = 0;
  readonly #timers: NodeJS.Timeout[] = [];

  constructor(opts: RecorderOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
    this.#coalesceMs = opts.coalesceMs ?? 60_000;
    const hook = opts.config.webhook;
    if (hook) this.#webhook = new Webhook({ url: hook.url, ...(hook.secret === undefined ? {} : { secret: hook.secret }), queueSize: opts.config.queueSize, log: opts.log, ...(opts.metrics ? { metrics: opts.metrics } : {}) });
    this.#every(opts.flushEveryMs ?? 1000, () => this.flush());
    if (opts.prune) {
      const every = opts.pruneEveryMs ?? 3_600_000;
      const first = setTimeout(() => void this.#prune(), Math.min(60_000, every));
      first.unref();
      this.#timers.push(first);
      this.#every(every, () => this.#prune());
    }
  }

  record(event: NewEvent): void {
    try {
      if (this.#closed) return;
      const e: MirrorEvent = { ...event, at: event.at ?? this.#now() };
      this.#opts.metrics?.events.inc({ kind: e.kind });
      const key = subjectOf(e);
      const w = this.#windows.get(key);
      if (w && e.at - w.start < this.#coalesceMs) {
        w.folded++;
        w.latest = e;
        return;
      }
      if (w) this.#closeWindow(w);
      if (this.#windows.size >= MAX_WINDOWS) this.#closeWindows(() => true);
      this.#windows.set(key, { start: e.at, folded: 0 });
      this.#keep(e);
    } catch (err) {
      this.#warn('an event could not be recorded', err);
    }
  }

  /** Writes what is buffered (and the folded counts of windows past their minute) in one batch. */
  flush(): Promise<void> {
    this.#flushing ??= this.#write().finally(() => (this.#flushing = undefined));
    return this.#flushing;
  }

  /** Stores what is left, gives the webhook a moment to deliver, and stops. */
  async close(): Promise<void> {
    if (this.#closed) return;
    for (const t of this.#timers) clearInterval(t);
    this.#closeWindows(() => true);
    this.#closed = true;
    await this.#flushing;
    await this.#write();
    await this.#webhook?.close(CLOSE_DRAIN_MS);
  }

  async #write(): Promise<void> {
    const now = this.#now();
    this.#closeWindows((w) => now - w.start >= this.#coalesceMs);
    if (this.#unwritten.length === 0) return;
    const rows = this.#unwritten;
    this.#unwritten = [];
    try {
      await this.#opts.store.append(rows);
    } catch (err) {
      // Kept for the next tick, ahead of what came since, so the order holds.
      this.#unwritten = [...rows, ...this.#unwritten];
      const over = this.#unwritten.length - MAX_UNWRITTEN;
      if (over > 0) {
        this.#unwritten.splice(0, over);
        this.#opts.metrics?.eventsDropped.inc({ where: 'store' }, over);
      }
      this.#warn('events could not be stored; kept for the next try', err);
    }
  }

  /** One stored row (and one webhook delivery) for what a window folded, if anything. */
  #closeWindow(w: Window): void {
    if (w.folded === 0 || !w.latest) return;
    const e = w.latest;
    this.#keep({ ...e, details: { ...e.details, count: w.folded } }, w.folded);
    w.folded = 0;
    w.latest = undefined;
  }

  #closeWindows(expired: (w: Window) => boolean): void {
    for (const [key, w] of this.#windows) {
      if (!expired(w)) continue;
      this.#closeWindow(w);
      this.#windows.delete(key);
    }
  }

  #keep(e: MirrorEvent, count = 1): void {
    this.#unwritten.push(count === 1 ? e : { ...e, count });
    this.#webhook?.send(e);
  }

  async #prune(): Promise<void> {
    try {
      const removed = await this.#opts.store.prune(this.#now() - this.#opts.config.retentionMs);
      if (removed > 0) this.#opts.log.debug('pruned events past their retention', { removed });
    } catch (err) {
      this.#warn('events past their retention could not be pruned', err);
    }
  }

  #every(ms: number, fn: () => Promise<void>): void {
    const t = setInterval(() => void fn().catch((err: unknown) => this.#warn('event timer failed', err)), ms);
    t.unref();
    this.#timers.push(t);
  }

  /** An outage meets every tick: one line a minute. */
  #warn(msg: string, err: unknown): void {
    const now = Date.now();
    if (now - this.#lastWarned < 60_000) return;
    this.#lastWarned = now;
    this.#opts.log.warn(msg, { err: err instanceof Error ? err.message : String(err) });
  }
}

/** What a flood has in common: the kind and what it is about. */
function subjectOf(e: MirrorEvent): string {
  return [e.kind, e.upstream ?? '', e.repository ?? '', e.tag ?? '', e.digest ?? ''].join('\n');
}
