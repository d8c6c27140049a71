// What the guard decided per (key set, upstream, repository, digest), kept so that a warm
// pull does no lookup and no cryptography. A valid verdict stays until the LRU drops it
// (a digest's content never changes, nor does a signature over it); a failure is kept
// briefly, so a signature pushed after a refused pull is found within the minute while a
// client retrying in a loop causes no work meanwhile.
import type { LRUCache } from 'lru-cache';
import { countBoundedLru } from '../lru.js';
import type { FailReason, SignatureFormat } from './outcome.js';

export type Verdict =
  | { ok: true; key: string; format: SignatureFormat | 'index' | 'artifact'; via?: string }
  | { ok: false; reason: FailReason; detail?: string };

export const FAILURE_TTL_MS = 30_000;

export class Verdicts {
  readonly #lru: LRUCache<string, Verdict>;

  constructor(max = 20_000) {
    this.#lru = countBoundedLru<string, Verdict>(max, { ttlAutopurge: false });
  }

  static key(keySet: string, upstream: string, repository: string, digest: string): string {
    return `${keySet}\n${upstream}\n${repository}\n${digest}`;
  }

  get(key: string): Verdict | undefined {
    return this.#lru.get(key);
  }

  set(key: string, v: Verdict): void {
    this.#lru.set(key, v, v.ok ? {} : { ttl: FAILURE_TTL_MS });
  }
}
