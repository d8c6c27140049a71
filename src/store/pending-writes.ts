// Counters and access times gathered in memory between flushes, so that a cache hit writes
// nothing to the database: Metadata takes them every few seconds and writes them in one
// transaction.
import type { PendingBatch } from './metadata-store.js';
import { mergeSubject, type RateLimitRow, type SubjectMetric } from './rows.js';

/**
 * Distinct subject roll-ups one batch holds: clients name repositories, so beyond this a
 * batch counts further image roll-ups under OTHER_SUBJECT rather than growing.
 */
export const MAX_SUBJECTS = 5000;
export const OTHER_SUBJECT = '(other)';

export type { PendingBatch } from './metadata-store.js';

/** The writes waiting for the next flush. */
type Gathered = Required<PendingBatch>;

export class PendingWrites {
  #batch: Gathered = empty();

  touch(digest: string, at: number): void {
    const p = this.#batch.touches.get(digest);
    if (p) {
      p.hits++;
      p.at = at;
    } else this.#batch.touches.set(digest, { at, hits: 1 });
  }

  addRollup(hour: number, upstream: string, metric: string, n: number): void {
    const key = `${hour}\n${upstream}\n${metric}`;
    this.#batch.rollups.set(key, (this.#batch.rollups.get(key) ?? 0) + n);
  }

  addSubject(hour: number, upstream: string, subject: string, metric: SubjectMetric, n: number): void {
    const rollups = this.#batch.subjectRollups;
    let key = `${hour}\n${upstream}\n${subject}\n${metric}`;
    // Credentials come from the config, repositories from clients: only the latter are capped.
    if (metric !== 'budget_low' && !rollups.has(key) && rollups.size >= MAX_SUBJECTS) key = `${hour}\n${upstream}\n${OTHER_SUBJECT}\n${metric}`;
    const was = rollups.get(key);
    rollups.set(key, was === undefined ? n : mergeSubject(metric, was, n));
  }

  rateLimit(row: RateLimitRow): void {
    this.#batch.rateLimits.set(`${row.upstream}\n${row.credential}`, row);
  }

  /** Everything gathered since the last take, or undefined when there is nothing. */
  take(): PendingBatch | undefined {
    const b = this.#batch;
    if (b.touches.size === 0 && b.rollups.size === 0 && b.rateLimits.size === 0 && b.subjectRollups.size === 0) return undefined;
    this.#batch = empty();
    return b;
  }

  /** Writes what is pending with `write`; a batch whose write throws is put back, and the error rethrown. */
  async writeWith(write: (b: PendingBatch) => Promise<void>): Promise<void> {
    const batch = this.take();
    if (!batch) return;
    try {
      await write(batch);
    } catch (err) {
      this.restore(batch);
      throw err;
    }
  }

  /** As writeWith, but a failure goes to `failed` instead of up: this runs in timers, which must never throw. */
  async tryWriteWith(write: (b: PendingBatch) => Promise<void>, failed: (err: Error, b: PendingBatch) => void): Promise<void> {
    try {
      await this.writeWith(write);
    } catch (err) {
      try {
        failed(err as Error, this.#batch);
      } catch {
        // A reporter's own failure must not escape a timer either.
      }
    }
  }

  /** Puts back a batch whose write failed, under what was gathered since it was taken. */
  restore(b: PendingBatch): void {
    for (const [digest, t] of b.touches) {
      const p = this.#batch.touches.get(digest);
      if (p) {
        p.hits += t.hits;
        p.at = Math.max(p.at, t.at);
      } else this.#batch.touches.set(digest, { ...t });
    }
    for (const [key, n] of b.rollups) this.#batch.rollups.set(key, (this.#batch.rollups.get(key) ?? 0) + n);
    for (const [key, n] of b.subjectRollups ?? []) {
      const was = this.#batch.subjectRollups.get(key);
      this.#batch.subjectRollups.set(key, was === undefined ? n : mergeSubject(key.slice(key.lastIndexOf('\n') + 1), was, n));
    }
    // A budget observed since the take is newer than the one that failed to be written.
    for (const [key, r] of b.rateLimits) if (!this.#batch.rateLimits.has(key)) this.#batch.rateLimits.set(key, r);
  }
}

function empty(): Gathered {
  return { touches: new Map(), rollups: new Map(), rateLimits: new Map(), subjectRollups: new Map() };
}
