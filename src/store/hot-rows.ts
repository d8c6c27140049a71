// Warm hits read the same few rows (a tag, a manifest, a link) thousands of times a
// second. HotRows remembers each read for a second; the owner's own writes set the rows
// they change (and mark stale the ones derived from them), so that a cold pull does not
// cost every warm one its memo, and another process's writes (prewarm, import, cache rm,
// another replica) show within the second. Where the backend has a write mark (SQLite:
// its data_version and total_changes), a row older than a second is kept for as long as
// the mark, read at most once a second, says nothing was committed since it was read:
// under warm traffic that is one cheap query a second instead of every row again.
// A forgotten row is kept as the last known answer: when the database cannot be reached,
// warm pulls go on from it.
import { countBoundedLru } from '../lru.js';
import { MetadataUnavailable } from '../errors.js';
import type { TagKey } from './rows.js';

const HOT_MS = 1000;
const HOT_MAX = 50_000;

interface Entry {
  value: unknown;
  at: number;
  generation: number;
  /** The write mark when the row was read; undefined when the backend has none. */
  mark: string | undefined;
}

/** The backend's write mark (see MetadataStore.writeMark). */
export type WriteMark = () => string | undefined;

/** A short-lived memo of row reads, keyed by the caller, that doubles as a fallback. */
export class HotRows {
  readonly #rows = countBoundedLru<string, Entry>(HOT_MAX);
  /** Loads in flight, so that one expired row is read once however many requests ask. */
  readonly #loading = new Map<string, Promise<unknown>>();
  #generation = 0;
  readonly #writeMark?: WriteMark;
  #mark: string | undefined;
  #markAt = -Infinity;

  constructor(writeMark?: WriteMark) {
    this.#writeMark = writeMark;
  }

  /**
   * The remembered row, or `load()`'s answer (sync or async). When the load throws
   * MetadataUnavailable, the last known row answers if there is one, `unavailable(err)`
   * otherwise.
   */
  read<T>(key: string, load: () => Promise<T>, unavailable: (err: MetadataUnavailable) => T): T | Promise<T> {
    const now = performance.now();
    const hit = this.#rows.get(key);
    if (hit && hit.generation === this.#generation && (now - hit.at < HOT_MS || this.#unchanged(hit, now))) return hit.value as T;
    const running = this.#loading.get(key);
    if (running) return running as Promise<T>;
    const generation = this.#generation;
    const mark = this.#markAsOf(now);
    const p = load().then(
      (value) => {
        // A write of this row (set, stale) or forget() since the load began took it out of
        // #loading: what the load read is then older than what they left.
        if (this.#loading.get(key) === p) this.#rows.set(key, { value, at: performance.now(), generation, mark });
        return value;
      },
      (err: unknown) => {
        if (!(err instanceof MetadataUnavailable)) throw err;
        return hit ? (hit.value as T) : unavailable(err);
      },
    );
    this.#loading.set(key, p);
    const done = () => {
      if (this.#loading.get(key) === p) this.#loading.delete(key);
    };
    p.then(done, done);
    return p;
  }

  /** What this process just wrote: fresh now, and the last known answer should the database go away. */
  set(key: string, value: unknown): void {
    this.#loading.delete(key);
    const now = performance.now();
    this.#rows.set(key, { value, at: now, generation: this.#generation, mark: this.#markAsOf(now) });
  }

  /** Nothing was committed since the row was read: its mark is the one read within the last second. */
  #unchanged(hit: Entry, now: number): boolean {
    return hit.mark !== undefined && hit.mark === this.#markAsOf(now);
  }

  /**
   * The write mark, read again when the last reading is a second old. A commit after a
   * reading changes the next one, so a row is never kept more than a second past a write.
   */
  #markAsOf(now: number): string | undefined {
    if (!this.#writeMark) return undefined;
    if (now - this.#markAt >= HOT_MS) {
      this.#mark = this.#writeMark();
      this.#markAt = now;
    }
    return this.#mark;
  }

  /** Read again before the next use (a row derived from one just written); kept as the last known answer. */
  stale(key: string): void {
    this.#loading.delete(key);
    const hit = this.#rows.get(key);
    if (hit) hit.generation = -1;
  }

  /** The last known value of a key, fresh or not. */
  peek<T>(key: string): T | undefined {
    return this.#rows.get(key)?.value as T | undefined;
  }

  /** Every row read before now is stale (read again before use), but kept as the last known answer. */
  forget(): void {
    this.#generation++;
    this.#loading.clear();
  }
}

// The memo's keys: one letter for the kind of row, then what names it.

export function tagKey(k: TagKey): string {
  return `T${k.upstream}\n${k.repository}\n${k.tag}\n${k.accept}`;
}

export function tagRowsKey(k: Pick<TagKey, 'upstream' | 'repository' | 'tag'>): string {
  return `R${k.upstream}\n${k.repository}\n${k.tag}`;
}

export function linkKey(upstream: string, repository: string, digest: string): string {
  return `L${upstream}\n${repository}\n${digest}`;
}
