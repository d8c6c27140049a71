// The lease part of the metadata seam (src/store/leases.ts), run by metadataContract on
// every backend: who holds a claim, when it ends, and that two asking at once cannot both
// get it.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MetadataStore } from '../../src/store/metadata-store.js';

type Setup = (t: import('node:test').TestContext) => Promise<MetadataStore>;
type Advance = (s: MetadataStore, ms: number) => void;

const KEY = 'blob:sha256:' + 'a'.repeat(64);

export function leaseContract(setup: Setup, advance: Advance): void {
  describe('leases', () => {
    test('the first holder gets a free lease; another asking meanwhile is told who holds it', async (t) => {
      const { leases } = await setup(t);
      const a = await leases.acquire(KEY, 'replica-a', 10_000, '{"at":"http://a"}');
      assert.equal(a.holder, 'replica-a');
      assert.equal(a.data, '{"at":"http://a"}');
      const seen = await leases.acquire(KEY, 'replica-b', 10_000, '{"at":"http://b"}');
      assert.deepEqual(seen, a, 'b sees a\'s lease, data and expiry unchanged');
    });

    test('a lease its holder stopped renewing goes to the next one to ask', async (t) => {
      const s = await setup(t);
      await s.leases.acquire(KEY, 'replica-a', 10_000);
      advance(s, 9_999);
      assert.equal((await s.leases.acquire(KEY, 'replica-b', 10_000)).holder, 'replica-a');
      advance(s, 1);
      const b = await s.leases.acquire(KEY, 'replica-b', 10_000, 'b');
      assert.equal(b.holder, 'replica-b');
      assert.equal(b.data, 'b');
      assert.deepEqual(await s.leases.renew('replica-a', [KEY], 10_000), [], 'a no longer holds it');
    });

    test('renew extends only the holder\'s own leases; acquire by the holder renews and replaces its data', async (t) => {
      const s = await setup(t);
      await s.leases.acquire('k1', 'replica-a', 10_000);
      await s.leases.acquire('k2', 'replica-b', 10_000);
      advance(s, 8_000);
      assert.deepEqual(await s.leases.renew('replica-a', ['k1', 'k2', 'k3'], 10_000), ['k1']);
      advance(s, 5_000);
      assert.equal((await s.leases.acquire('k1', 'replica-c', 10_000)).holder, 'replica-a', 'k1 was renewed');
      assert.equal((await s.leases.acquire('k2', 'replica-c', 10_000)).holder, 'replica-c', 'k2 expired');
      const again = await s.leases.acquire('k1', 'replica-a', 10_000, 'new');
      assert.equal(again.data, 'new');
      assert.deepEqual(await s.leases.renew('replica-a', [], 10_000), []);
    });

    test('release ends only the holder\'s own lease', async (t) => {
      const { leases } = await setup(t);
      await leases.acquire(KEY, 'replica-a', 10_000);
      await leases.release(KEY, 'replica-b');
      assert.equal((await leases.acquire(KEY, 'replica-b', 10_000)).holder, 'replica-a');
      await leases.release(KEY, 'replica-a');
      assert.equal((await leases.acquire(KEY, 'replica-b', 10_000)).holder, 'replica-b');
    });

    test('takeOver moves a lease from the holder named, and from no other', async (t) => {
      const { leases } = await setup(t);
      await leases.acquire(KEY, 'replica-a', 10_000);
      const wrong = await leases.takeOver(KEY, 'replica-x', 'replica-b', 10_000);
      assert.equal(wrong.holder, 'replica-a', 'a still holds it');
      const moved = await leases.takeOver(KEY, 'replica-a', 'replica-b', 10_000, 'b');
      assert.equal(moved.holder, 'replica-b');
      assert.equal(moved.data, 'b');
      // Two replicas that both saw a gone: the second finds b holding it.
      assert.equal((await leases.takeOver(KEY, 'replica-a', 'replica-c', 10_000)).holder, 'replica-b');
      // A lease released meanwhile is simply taken.
      await leases.release(KEY, 'replica-b');
      assert.equal((await leases.takeOver(KEY, 'replica-b', 'replica-c', 10_000)).holder, 'replica-c');
    });

    test('list gives the leases in force under a prefix; prune forgets long-expired ones', async (t) => {
      const s = await setup(t);
      await s.leases.acquire('replica:a', 'a', 10_000, 'A');
      await s.leases.acquire('replica:b', 'b', 20_000, 'B');
      await s.leases.acquire('replicas-other', 'c', 20_000);
      await s.leases.acquire('blob:x', 'a', 20_000);
      const live = await s.leases.list('replica:');
      assert.deepEqual(live.map((l) => [l.key, l.holder, l.data]), [['replica:a', 'a', 'A'], ['replica:b', 'b', 'B']]);
      advance(s, 15_000);
      assert.deepEqual((await s.leases.list('replica:')).map((l) => l.key), ['replica:b']);
      assert.equal(await s.leases.prune(10_000), 0, 'expired 5 s ago: kept');
      advance(s, 6_000);
      assert.equal(await s.leases.prune(10_000), 1);
      assert.equal((await s.leases.acquire('replica:a', 'z', 1_000)).holder, 'z');
    });

    test('of many holders asking for one free lease at once, exactly one gets it and all agree who', async (t) => {
      const { leases } = await setup(t);
      const answers = await Promise.all(Array.from({ length: 12 }, (_, i) => leases.acquire(KEY, `replica-${i}`, 10_000)));
      const holders = new Set(answers.map((a) => a.holder));
      assert.equal(holders.size, 1, `one holder, saw ${[...holders].join(', ')}`);
    });
  });
}
