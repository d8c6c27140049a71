// The replicas of a cluster spend one upstream budget: what one of them learns about an
// upstream (a 429 and its Retry-After, an outage and its backoff, the budget it reported)
// reaches the others within seconds, so they do not each spend requests to find out.
// Deadlines travel as leases (`upstream:<name>:<replica>`, living as long as the
// deadline); budgets as the rate_limits rows every replica already writes.
import type { Logger } from '../log.js';
import type { LeaseStore } from '../store/leases.js';
import type { RateLimitRow } from '../store/rows.js';
import type { UpstreamState } from '../upstream/rate-limit.js';

const EVERY_MS = 2_000;
/** Budgets are written with the batched counters (every 5 s): read them about as often. */
const BUDGET_EVERY_MS = 5_000;
const PREFIX = 'upstream:';

export interface SharedUpstream {
  name: string;
  state: UpstreamState;
}

export class SharedUpstreamState {
  readonly #leases: LeaseStore;
  readonly #holder: string;
  readonly #upstreams: Map<string, UpstreamState>;
  readonly #budgets: () => Promise<RateLimitRow[]>;
  readonly #log: Logger;
  readonly #timer: NodeJS.Timeout;
  /** What this replica last published per upstream (JSON), to write only changes. */
  readonly #published = new Map<string, string>();
  /** Others' leases already adopted: adopted once, so a recovery seen here is not undone every tick. */
  readonly #adopted = new Map<string, string>();
  #running = false;
  #budgetsAt = 0;

  constructor(leases: LeaseStore, holder: string, upstreams: readonly SharedUpstream[], budgets: () => Promise<RateLimitRow[]>, log: Logger) {
    this.#leases = leases;
    this.#holder = holder;
    this.#upstreams = new Map(upstreams.map((u) => [u.name, u.state]));
    this.#budgets = budgets;
    this.#log = log;
    this.#timer = setInterval(() => void this.sync(), EVERY_MS);
    this.#timer.unref();
  }

  /** Publishes this replica's deadlines and adopts the others'; one at a time, never throws. */
  async sync(now = Date.now()): Promise<void> {
    if (this.#running) return;
    this.#running = true;
    try {
      for (const [name, state] of this.#upstreams) await this.#publish(name, state, now);
      const live = await this.#leases.list(PREFIX);
      for (const lease of live) {
        if (lease.holder === this.#holder || !lease.data || this.#adopted.get(lease.key) === lease.data) continue;
        this.#adopted.set(lease.key, lease.data);
        const state = this.#upstreams.get(lease.key.slice(PREFIX.length).split('\n')[0]);
        state?.adopt(JSON.parse(lease.data) as { limitedUntil?: number; downUntil?: number; reason?: string });
      }
      for (const key of this.#adopted.keys()) if (!live.some((l) => l.key === key)) this.#adopted.delete(key);
      if (now - this.#budgetsAt >= BUDGET_EVERY_MS) {
        this.#budgetsAt = now;
        for (const row of await this.#budgets()) this.#upstreams.get(row.upstream)?.adoptBudget(row, row.observedAt);
      }
    } catch (err) {
      this.#log.warn('could not share upstream state with the other replicas', { err: err as Error });
    } finally {
      this.#running = false;
    }
  }

  async #publish(name: string, state: UpstreamState, now: number): Promise<void> {
    const hold = state.holdBack;
    const until = Math.max(hold.limitedUntil, hold.downUntil);
    const key = `${PREFIX}${name}\n${this.#holder}`;
    const text = until > now ? JSON.stringify(hold) : '';
    if (text === (this.#published.get(name) ?? '')) return;
    if (text) await this.#leases.acquire(key, this.#holder, until - now, text);
    else await this.#leases.release(key, this.#holder);
    this.#published.set(name, text);
  }

  close(): void {
    clearInterval(this.#timer);
  }
}
