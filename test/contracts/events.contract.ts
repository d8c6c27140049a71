// The event part of the metadata seam (src/store/events.ts), run by metadataContract on
// every backend: rows come back as appended, newest first, filtered by time and kind,
// counted by kind with their counts added up, and pruned by age.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { EventRow } from '../../src/store/events.js';
import type { MetadataStore } from '../../src/store/metadata-store.js';

type Setup = (t: import('node:test').TestContext) => Promise<MetadataStore>;

const T0 = 1_700_000_000_000;
const MIN = 60_000;
const stale = (at: number, tag: string, extra: Partial<EventRow> = {}): EventRow => ({
  at,
  kind: 'stale_served',
  upstream: 'docker.io',
  repository: 'library/nginx',
  tag,
  message: `served nginx:${tag} stale`,
  ...extra,
});

export function eventContract(setup: Setup): void {
  describe('events', () => {
    test('a new store has no events', async (t) => {
      const { events } = await setup(t);
      assert.deepEqual(await events.list(), []);
      assert.deepEqual(await events.countByKind(0), {});
    });

    test('rows come back newest first, every field as appended, absent ones left out', async (t) => {
      const { events } = await setup(t);
      const mismatch: EventRow = {
        at: T0 + MIN,
        kind: 'digest_mismatch',
        upstream: 'ghcr.io',
        repository: 'org/app',
        digest: `sha256:${'a'.repeat(64)}`,
        message: 'upstream sent bytes that do not match',
        details: { got: `sha256:${'b'.repeat(64)}`, size: 1234, blob: true },
      };
      await events.append([stale(T0, 'latest', { count: 7, details: { count: 7 } }), mismatch]);
      await events.append([{ at: T0 + 2 * MIN, kind: 'pinned_eviction_refused', message: 'nothing left to evict' }]);
      const rows = await events.list();
      assert.deepEqual(rows.map(({ id: _id, ...r }) => r), [
        { at: T0 + 2 * MIN, kind: 'pinned_eviction_refused', message: 'nothing left to evict', count: 1 },
        { ...mismatch, count: 1 },
        { ...stale(T0, 'latest'), details: { count: 7 }, count: 7 },
      ]);
      assert.ok(rows[0].id > rows[1].id && rows[1].id > rows[2].id, 'ids increase in the order appended');
    });

    test('rows at the same time come back in reverse order of appending', async (t) => {
      const { events } = await setup(t);
      await events.append([stale(T0, 'a'), stale(T0, 'b'), stale(T0, 'c')]);
      await events.append([stale(T0, 'd')]);
      assert.deepEqual((await events.list()).map((e) => e.tag), ['d', 'c', 'b', 'a']);
    });

    test('since is inclusive, until exclusive; kinds and limit filter', async (t) => {
      const { events } = await setup(t);
      await events.append([stale(T0, 't0'), stale(T0 + MIN, 't1'), { ...stale(T0 + 2 * MIN, 't2'), kind: 'tag_changed' }, stale(T0 + 3 * MIN, 't3')]);
      const tags = async (q: Parameters<MetadataStore['events']['list']>[0]) => (await events.list(q)).map((e) => e.tag);
      assert.deepEqual(await tags({ since: T0 + MIN }), ['t3', 't2', 't1']);
      assert.deepEqual(await tags({ until: T0 + 2 * MIN }), ['t1', 't0']);
      assert.deepEqual(await tags({ since: T0 + MIN, until: T0 + 3 * MIN }), ['t2', 't1']);
      assert.deepEqual(await tags({ kinds: ['tag_changed'] }), ['t2']);
      assert.deepEqual(await tags({ kinds: ['tag_changed', 'stale_served'], limit: 2 }), ['t3', 't2']);
      assert.deepEqual(await tags({ kinds: ['image_refused'] }), []);
      assert.deepEqual(await tags({ kinds: [] }), ['t3', 't2', 't1', 't0'], 'an empty kind list is every kind');
    });

    test('countByKind adds up the counts of the rows since the time given', async (t) => {
      const { events } = await setup(t);
      await events.append([stale(T0, 'a', { count: 5 }), stale(T0 + MIN, 'b', { count: 3 }), { ...stale(T0 + MIN, 'c'), kind: 'digest_mismatch' }]);
      assert.deepEqual(await events.countByKind(T0), { digest_mismatch: 1, stale_served: 8 });
      assert.deepEqual(await events.countByKind(T0 + MIN), { digest_mismatch: 1, stale_served: 3 });
      assert.deepEqual(await events.countByKind(T0 + 2 * MIN), {});
    });

    test('prune removes the rows older than the time given, and says how many', async (t) => {
      const { events } = await setup(t);
      await events.append([stale(T0, 'a'), stale(T0 + MIN, 'b'), stale(T0 + 2 * MIN, 'c')]);
      assert.equal(await events.prune(T0 + MIN), 1);
      assert.deepEqual((await events.list()).map((e) => e.tag), ['c', 'b']);
      assert.equal(await events.prune(T0 + MIN), 0);
    });

    test('text of any kind is kept as given (quotes, newlines, non-ASCII)', async (t) => {
      const { events } = await setup(t);
      const message = `it's "odd"\n; DROP TABLE events; -- ünïcødé ✓`;
      await events.append([{ at: T0, kind: 'image_refused', message, details: { reason: message } }]);
      const [row] = await events.list();
      assert.equal(row.message, message);
      assert.deepEqual(row.details, { reason: message });
    });
  });
}
