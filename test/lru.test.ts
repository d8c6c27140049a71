import assert from 'node:assert/strict';
import { test } from 'node:test';
import { countBoundedLru } from '../src/lru.js';

test('a count-bounded cache keeps at most its count, dropping the least recently used', () => {
  const lru = countBoundedLru<string, number>(3);
  for (const [i, k] of ['a', 'b', 'c'].entries()) lru.set(k, i);
  assert.equal(lru.get('a'), 0); // a is now the most recent; b the least
  lru.set('d', 3);
  assert.equal(lru.size, 3);
  assert.equal(lru.has('b'), false);
  assert.deepEqual([...lru.keys()].sort(), ['a', 'c', 'd']);
});

test('a count-bounded cache keeps its other options, such as a TTL', async () => {
  const lru = countBoundedLru<string, true>(10, { ttl: 20 });
  lru.set('k', true);
  assert.equal(lru.get('k'), true);
  await new Promise((r) => setTimeout(r, 40));
  assert.equal(lru.get('k'), undefined);
});

test('a large count-bounded cache does not hold its slots before it has entries', () => {
  // lru-cache with `max` allocates a slot array of that length up front; the count bound
  // must not, or every idle process pays for its largest cache.
  const before = process.memoryUsage().heapUsed;
  const caches = Array.from({ length: 20 }, () => countBoundedLru<string, number>(50_000));
  const grown = process.memoryUsage().heapUsed - before;
  assert.ok(grown < 2 * 1024 * 1024, `20 empty caches took ${grown} bytes of heap`);
  assert.equal(caches.length, 20);
});
