// Coalesces concurrent work on the same key: the first caller starts it, later callers
// share its promise, and the key is deleted when the work settles so the next call after
// a failure starts clean.

/** A map of in-flight work by key. */
export class SingleFlight<K, V> {
  readonly #inflight = new Map<K, Promise<V>>();

  /** Runs `fn` unless work for `key` is already in flight, in which case that work's result is shared. */
  run(key: K, fn: () => Promise<V>): Promise<V> {
    const existing = this.#inflight.get(key);
    if (existing) return existing;
    const p = fn().finally(() => {
      if (this.#inflight.get(key) === p) this.#inflight.delete(key);
    });
    this.#inflight.set(key, p);
    return p;
  }

  get size(): number {
    return this.#inflight.size;
  }
}
