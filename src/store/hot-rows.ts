// Warm hits read the same few rows (a tag, a manifest, a link) thousands of times a
// second. HotRows remembers each read for a second; the owner forgets them all on any
// write of its own (writes are rare next to reads), and another process's writes
// (prewarm, import, cache rm) show within the second.

const HOT_MS = 1000;
const HOT_MAX = 50_000;

/** A short-lived memo of row reads, keyed by the caller. */
export class HotRows {
  readonly #rows = new Map<string, { value: unknown; at: number }>();

  read<T>(key: string, load: () => T): T {
    const now = performance.now();
    const hit = this.#rows.get(key);
    if (hit && now - hit.at < HOT_MS) return hit.value as T;
    const value = load();
    if (this.#rows.size >= HOT_MAX) this.#rows.clear();
    this.#rows.set(key, { value, at: now });
    return value;
  }

  forget(): void {
    this.#rows.clear();
  }
}
