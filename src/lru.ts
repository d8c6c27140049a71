// Caches bounded by a count of entries. Given `max`, lru-cache allocates and fills its
// slot arrays for all of them at once (about 28 bytes a slot: a 50,000-entry cache holds
// 1.1 MiB before its first entry). Bounding the same count through `maxSize`, one unit
// an entry, lets the arrays grow with what is actually kept, so an idle mirror holds
// none of it.
import { LRUCache } from 'lru-cache';

type CountOptions<K extends {}, V extends {}> = Omit<LRUCache.Options<K, V, unknown>, 'max' | 'maxSize' | 'sizeCalculation'>;

/** An LRU cache of at most `max` entries whose memory grows with its entries. */
export function countBoundedLru<K extends {}, V extends {}>(max: number, options: CountOptions<K, V> = {}): LRUCache<K, V> {
  return new LRUCache<K, V>({ ...options, maxSize: max, sizeCalculation: () => 1 });
}
