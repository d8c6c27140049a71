// The behaviour every MetadataStore must have, as a reusable suite: register it with
// metadataContract('name', open) from a *.test.ts file. It holds the row semantics the
// SQLite backend has always had (the memo and the batching belong to the wrapper, not
// here) and knows nothing of the backend under test: rows are set up and checked through
// the interface alone. `open` gives a new, empty store whose clock is `clock.now`.
import assert from 'node:assert/strict';
import { describe, test, type TestContext } from 'node:test';
import type { MetadataStore, PendingBatch, RowBatch, StoredRows } from '../../src/store/metadata-store.js';
import type { RateLimitRow, SubjectMetric, TagKey } from '../../src/store/rows.js';
import { guardedTagContract } from './guarded-tags.contract.js';
import { eventContract } from './events.contract.js';
import { leaseContract } from './leases.contract.js';

export interface OpenedStore {
  store: MetadataStore;
  clock: { now: number };
  close(): Promise<void>;
}

export type OpenStore = () => Promise<OpenedStore>;

const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const D3 = `sha256:${'3'.repeat(64)}`;
const D4 = `sha256:${'4'.repeat(64)}`;
const HOUR = 3_600_000;
const T0 = 1_700_000_000_000;
const INDEX = 'application/vnd.oci.image.index.v1+json';
const nginx = { upstream: 'docker.io', repository: 'library/nginx' };
const key: TagKey = { ...nginx, tag: 'latest', accept: 15 };

/** A PendingBatch from plain lists, as the wrapper would gather it. */
function batch(p: {
  touches?: Array<[string, number, number]>;
  rollups?: Array<[number, string, string, number]>;
  rateLimits?: RateLimitRow[];
  subjects?: Array<[number, string, string, SubjectMetric, number]>;
}): PendingBatch {
  return {
    touches: new Map((p.touches ?? []).map(([d, at, hits]) => [d, { at, hits }])),
    rollups: new Map((p.rollups ?? []).map(([hour, upstream, metric, n]) => [`${hour}\n${upstream}\n${metric}`, n])),
    rateLimits: new Map((p.rateLimits ?? []).map((r) => [`${r.upstream}\n${r.credential}`, r])),
    subjectRollups: new Map((p.subjects ?? []).map(([hour, upstream, subject, metric, n]) => [`${hour}\n${upstream}\n${subject}\n${metric}`, n])),
  };
}

/** Every row a store exports, table by table, with the batch sizes seen. */
async function collect(store: MetadataStore): Promise<{ rows: { [T in keyof StoredRows]?: Array<StoredRows[T]> }; sizes: number[] }> {
  const rows: Record<string, unknown[]> = {};
  const sizes: number[] = [];
  for await (const b of store.exportRows()) {
    (rows[b.table] ??= []).push(...b.rows);
    sizes.push(b.rows.length);
  }
  return { rows: rows as { [T in keyof StoredRows]?: Array<StoredRows[T]> }, sizes };
}

async function* batchesOf(...batches: RowBatch[]): AsyncIterable<RowBatch> {
  yield* batches;
}

export function metadataContract(name: string, open: OpenStore): void {
  async function setup(t: TestContext): Promise<MetadataStore> {
    const opened = await open();
    t.after(() => opened.close());
    opened.clock.now = T0;
    clocks.set(opened.store, opened.clock);
    return opened.store;
  }
  const clocks = new WeakMap<MetadataStore, { now: number }>();
  const advance = (s: MetadataStore, ms: number) => (clocks.get(s)!.now += ms);

  describe(`MetadataStore contract: ${name}`, () => {
    leaseContract(setup, advance);
    guardedTagContract(setup, advance);
    eventContract(setup);
    test('a new store is migrated and empty', async (t) => {
      const s = await setup(t);
      assert.ok((await s.schemaVersion()) >= 1);
      for (const table of ['blobs', 'manifests', 'links', 'tags'] as const) assert.equal(await s.count(table), 0, table);
      assert.deepEqual(await s.storeSize(), { blobs: 0, bytes: 0, pinnedBytes: 0 });
      assert.deepEqual(await s.listTags(), []);
      assert.deepEqual(await s.rateLimits(), []);
      assert.deepEqual(await collect(s), { rows: {}, sizes: [] });
    });

    describe('tags', () => {
      test('put then get, with fetched and expiry times from the clock', async (t) => {
        const s = await setup(t);
        assert.equal(await s.getTag(key), undefined);
        await s.putTag(key, D1, INDEX, 5 * 60_000);
        assert.deepEqual(await s.getTag(key), { digest: D1, mediaType: INDEX, fetchedAt: T0, expiresAt: T0 + 5 * 60_000, pinned: false });
      });

      test('a tag is keyed by upstream, repository, tag and Accept class', async (t) => {
        const s = await setup(t);
        await s.putTag(key, D1, INDEX, 1000);
        await s.putTag({ ...key, accept: 8 }, D2, 'application/vnd.docker.distribution.manifest.v2+json', 1000);
        assert.equal((await s.getTag(key))?.digest, D1);
        assert.equal((await s.getTag({ ...key, accept: 8 }))?.digest, D2);
        for (const other of [{ accept: 1 }, { tag: 'stable' }, { repository: 'library/alpine' }, { upstream: 'ghcr.io' }]) {
          assert.equal(await s.getTag({ ...key, ...other }), undefined, JSON.stringify(other));
        }
        assert.equal(await s.count('tags'), 2);
      });

      test('put again replaces the digest, the times and the media type', async (t) => {
        const s = await setup(t);
        await s.putTag(key, D1, 'a', 1000);
        advance(s, 10_000);
        await s.putTag(key, D2, 'b', 2000);
        assert.deepEqual(await s.getTag(key), { digest: D2, mediaType: 'b', fetchedAt: T0 + 10_000, expiresAt: T0 + 12_000, pinned: false });
        assert.equal(await s.count('tags'), 1);
      });

      test('refresh moves the times and keeps the digest; an unknown tag is not created', async (t) => {
        const s = await setup(t);
        await s.putTag(key, D1, 'a', 60_000);
        advance(s, 90_000);
        await s.refreshTag(key, 60_000);
        assert.deepEqual(await s.getTag(key), { digest: D1, mediaType: 'a', fetchedAt: T0 + 90_000, expiresAt: T0 + 150_000, pinned: false });
        await s.refreshTag({ ...key, tag: 'missing' }, 60_000);
        assert.equal(await s.getTag({ ...key, tag: 'missing' }), undefined);
        assert.equal(await s.count('tags'), 1);
      });

      test('a pinned tag keeps its pin through a refresh; putTag replaces it with an unpinned row', async (t) => {
        const s = await setup(t);
        await s.recordImport({ blobs: [], tags: [{ key, digest: D1, mediaType: 'a' }] });
        assert.deepEqual(await s.getTag(key), { digest: D1, mediaType: 'a', fetchedAt: T0, expiresAt: T0, pinned: true });
        advance(s, 1000);
        await s.refreshTag(key, 5000);
        assert.equal((await s.getTag(key))?.pinned, true);
        await s.putTag(key, D2, 'b', 5000);
        assert.deepEqual(await s.getTag(key), { digest: D2, mediaType: 'b', fetchedAt: T0 + 1000, expiresAt: T0 + 6000, pinned: false });
      });

      test('tagRows: every Accept class of one tag, newest first; listTags: every row in key order', async (t) => {
        const s = await setup(t);
        await s.putTag({ ...key, accept: 4 }, D2, 'b', 1000);
        await s.putTag({ ...key, accept: 2 }, D2, 'b', 1000);
        advance(s, 1000);
        await s.recordImport({ blobs: [], tags: [{ key, digest: D1, mediaType: 'a' }] });
        await s.putTag({ ...key, tag: 'other' }, D1, 'a', 1000);
        await s.putTag({ ...key, repository: 'library/alpine' }, D1, 'a', 1000);
        await s.putTag({ ...key, upstream: 'Docker.io' }, D1, 'a', 1000);
        assert.deepEqual(
          (await s.tagRows('docker.io', 'library/nginx', 'latest')).map((r) => [r.accept, r.digest, r.pinned]),
          [
            [15, D1, true],
            [4, D2, false],
            [2, D2, false],
          ],
          'by fetch time, then Accept class, descending',
        );
        assert.deepEqual(await s.tagRows('docker.io', 'library/nginx', 'missing'), []);
        const list = await s.listTags();
        assert.deepEqual(
          list.map((r) => `${r.upstream} ${r.repository}:${r.tag} ${r.accept} ${r.pinned}`),
          [
            // Bytewise order: upper case before lower case.
            'Docker.io library/nginx:latest 15 false',
            'docker.io library/alpine:latest 15 false',
            'docker.io library/nginx:latest 2 false',
            'docker.io library/nginx:latest 4 false',
            'docker.io library/nginx:latest 15 true',
            'docker.io library/nginx:other 15 false',
          ],
        );
        assert.deepEqual(list[4], { ...key, digest: D1, mediaType: 'a', fetchedAt: T0 + 1000, expiresAt: T0 + 1000, pinned: true });
        const one = await s.listTags({ upstream: 'docker.io', repository: 'library/nginx' });
        assert.deepEqual(one.map((r) => `${r.tag} ${r.accept}`), ['latest 2', 'latest 4', 'latest 15', 'other 15'], 'one repository: its rows only, exactly');
        assert.deepEqual(await s.listTags({ upstream: 'docker.io', repository: 'library/none' }), []);
      });

      test('setTagPinned pins or unpins every Accept class of a tag and counts the rows', async (t) => {
        const s = await setup(t);
        await s.putTag(key, D1, 'a', 1000);
        await s.putTag({ ...key, accept: 4 }, D1, 'a', 1000);
        await s.putTag({ ...key, tag: 'other' }, D1, 'a', 1000);
        assert.equal(await s.setTagPinned('docker.io', 'library/nginx', 'latest', true), 2);
        assert.deepEqual((await s.listTags()).map((r) => [r.tag, r.accept, r.pinned]), [
          ['latest', 4, true],
          ['latest', 15, true],
          ['other', 15, false],
        ]);
        assert.equal(await s.setTagPinned('docker.io', 'library/nginx', 'latest', false), 2);
        assert.equal((await s.getTag(key))?.pinned, false);
        assert.equal(await s.setTagPinned('docker.io', 'library/nginx', 'missing', true), 0);
      });
    });

    describe('blobs, manifests and links', () => {
      test('recordBlob with a link: known, and linked to that repository only', async (t) => {
        const s = await setup(t);
        assert.equal(await s.getBlob(D1), undefined);
        await s.recordBlob(D1, 1234, nginx);
        assert.deepEqual(await s.getBlob(D1), { size: 1234, pinned: false });
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D1), true);
        assert.equal(await s.isLinked('docker.io', 'library/alpine', D1), false);
        assert.equal(await s.isLinked('ghcr.io', 'library/nginx', D1), false);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D2), false);
        assert.deepEqual(await s.blobStats(D1), { lastAccess: T0, hits: 0 });
        assert.equal(await s.blobStats(D2), undefined);
      });

      test('recordBlob without a link links nothing; link() adds one, idempotently', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 5);
        assert.equal(await s.count('links'), 0);
        await s.link('docker.io', 'library/nginx', D1);
        await s.link('docker.io', 'library/nginx', D1);
        await s.link('ghcr.io', 'org/app', D1);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D1), true);
        assert.equal(await s.isLinked('ghcr.io', 'org/app', D1), true);
        assert.equal(await s.count('links'), 2);
      });

      test('the blob store version is kept with the row, and a later record without one keeps it', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 5, undefined, 'v1');
        assert.deepEqual(await s.getBlob(D1), { size: 5, version: 'v1', pinned: false });
        await s.recordBlob(D1, 5, nginx);
        assert.deepEqual(await s.getBlob(D1), { size: 5, version: 'v1', pinned: false });
        await s.recordBlob(D1, 5, undefined, 'v2');
        assert.equal((await s.getBlob(D1))?.version, 'v2');
      });

      test('recording a blob again updates its size but keeps its creation time, access time, hits and pin', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 5);
        await s.writeBatch(batch({ touches: [[D1, T0 + 10, 1]] }));
        await s.setBlobPins([D1], []);
        advance(s, HOUR);
        await s.recordBlob(D1, 6, nginx);
        assert.deepEqual(await s.getBlob(D1), { size: 6, pinned: true });
        assert.deepEqual(await s.blobStats(D1), { lastAccess: T0 + 10, hits: 1 });
        const { rows } = await collect(s);
        assert.deepEqual(rows.blobs, [{ digest: D1, size: 6, createdAt: T0, lastAccess: T0 + 10, hits: 1, pinned: true }]);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D1), true);
      });

      test('recordManifest: a blob with a media type, linked; recorded again it takes the new media type', async (t) => {
        const s = await setup(t);
        const link = { upstream: 'ghcr.io', repository: 'org/app' };
        assert.equal(await s.getManifest(D1), undefined);
        await s.recordManifest(D1, INDEX, 789, link, 'v1');
        assert.deepEqual(await s.getManifest(D1), { mediaType: INDEX, size: 789 });
        assert.deepEqual(await s.getBlob(D1), { size: 789, version: 'v1', pinned: false });
        assert.equal(await s.isLinked('ghcr.io', 'org/app', D1), true);
        assert.equal(await s.isLinked('ghcr.io', 'org/other', D1), false);
        await s.recordManifest(D1, 'application/vnd.docker.distribution.manifest.list.v2+json', 789, link);
        assert.equal((await s.getManifest(D1))?.mediaType, 'application/vnd.docker.distribution.manifest.list.v2+json');
        assert.equal(await s.count('manifests'), 1);
        assert.equal(await s.count('links'), 1);
        await s.recordBlob(D2, 10, link);
        assert.equal(await s.getManifest(D2), undefined, 'a plain blob is no manifest');
      });

      test('forgetBlobs removes the blobs with their manifest rows and links, and nothing else', async (t) => {
        const s = await setup(t);
        await s.recordManifest(D1, INDEX, 10, nginx);
        await s.link('ghcr.io', 'org/app', D1);
        await s.recordBlob(D2, 20, nginx);
        await s.recordBlob(D3, 30, nginx);
        await s.forgetBlobs([D1, D2, D4]);
        assert.equal(await s.getBlob(D1), undefined);
        assert.equal(await s.getManifest(D1), undefined);
        assert.equal(await s.getBlob(D2), undefined);
        assert.equal(await s.isLinked('ghcr.io', 'org/app', D1), false);
        assert.deepEqual(await s.allBlobs(), [{ digest: D3, size: 30 }]);
        assert.equal(await s.count('links'), 1);
        assert.equal(await s.count('manifests'), 0);
        await s.forgetBlobs([]);
        assert.equal(await s.count('blobs'), 1);
      });

      test('setBlobPins pins and unpins together; storeSize counts pinned bytes; unknown digests get no row', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 10);
        await s.recordBlob(D2, 20);
        await s.recordManifest(D3, INDEX, 30, nginx);
        await s.setBlobPins([D1, D3, D4], []);
        assert.deepEqual(await s.storeSize(), { blobs: 3, bytes: 60, pinnedBytes: 40 });
        await s.setBlobPins([D2], [D1]);
        assert.deepEqual(
          await Promise.all([D1, D2, D3].map(async (d) => (await s.getBlob(d))?.pinned)),
          [false, true, true],
        );
        assert.deepEqual(await s.storeSize(), { blobs: 3, bytes: 60, pinnedBytes: 50 });
        assert.equal(await s.getBlob(D4), undefined);
      });

      test('allBlobs lists every blob row by digest', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D3, 3);
        await s.recordManifest(D1, INDEX, 1, nginx);
        await s.recordBlob(D2, 2);
        assert.deepEqual(await s.allBlobs(), [
          { digest: D1, size: 1 },
          { digest: D2, size: 2 },
          { digest: D3, size: 3 },
        ]);
      });

      test('blobPage walks the blob rows by digest, a page after the last digest seen', async (t) => {
        const s = await setup(t);
        for (const d of [D4, D2, D1, D3]) await s.recordBlob(d, 5);
        await s.setBlobPins([D2], []);
        assert.deepEqual(await s.blobPage('', 2), [
          { digest: D1, size: 5, pinned: false },
          { digest: D2, size: 5, pinned: true },
        ]);
        assert.deepEqual((await s.blobPage(D2, 2)).map((b) => b.digest), [D3, D4]);
        assert.deepEqual(await s.blobPage(D4, 2), []);
      });

      test('knownBlobs answers which digests have a row, in one call however many', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 1);
        await s.recordManifest(D3, INDEX, 3, nginx);
        assert.deepEqual((await s.knownBlobs([D4, D3, D2, D1])).sort(), [D1, D3]);
        assert.deepEqual(await s.knownBlobs([]), []);
        const many = Array.from({ length: 40_000 }, (_, i) => `sha256:${i.toString(16).padStart(64, '0')}`);
        assert.deepEqual(await s.knownBlobs([...many, D1]), [D1]);
      });
    });

    describe('eviction', () => {
      test('evictionCandidates: unpinned blobs, least recently used first (access times from writeBatch)', async (t) => {
        const s = await setup(t);
        for (const d of [D1, D2, D3, D4]) await s.recordBlob(d, 10);
        await s.writeBatch(batch({ touches: [[D1, T0 + 300, 1], [D2, T0 + 100, 1], [D4, T0 + 200, 1]] }));
        await s.setBlobPins([D2], []);
        assert.deepEqual(
          (await s.evictionCandidates(10)).map((c) => c.digest),
          [D3, D4, D1],
          'D3 untouched since T0, then by access time; D2 is pinned',
        );
        assert.deepEqual(await s.evictionCandidates(1), [{ digest: D3, size: 10, lastAccess: T0 }]);
        await s.writeBatch(batch({ touches: [[D3, T0 + 400, 1]] }));
        assert.deepEqual((await s.evictionCandidates(10)).map((c) => c.digest), [D4, D1, D3]);
      });

      test('evictionCandidates breaks ties by digest', async (t) => {
        const s = await setup(t);
        for (const d of [D3, D1, D2]) await s.recordBlob(d, 10);
        assert.deepEqual((await s.evictionCandidates(10)).map((c) => c.digest), [D1, D2, D3]);
      });

      test('evictionCandidates goes on after a position in the LRU order, a page at a time', async (t) => {
        const s = await setup(t);
        for (const d of [D1, D2, D3, D4]) await s.recordBlob(d, 10);
        await s.writeBatch(batch({ touches: [[D1, T0 + 100, 1]] }));
        const walk: string[] = [];
        for (let page = await s.evictionCandidates(2); page.length > 0; page = await s.evictionCandidates(2, page[page.length - 1])) walk.push(...page.map((c) => c.digest));
        assert.deepEqual(walk, [D2, D3, D4, D1], 'ties at T0 by digest, then D1 used later');
        assert.deepEqual(await s.evictionCandidates(10, { lastAccess: T0, digest: D3 }), [{ digest: D4, size: 10, lastAccess: T0 }, { digest: D1, size: 10, lastAccess: T0 + 100 }]);
      });

      test('evictBlobs with usedBefore keeps the blobs used after it', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 10, nginx);
        await s.recordBlob(D2, 10, nginx);
        await s.writeBatch(batch({ touches: [[D2, T0 + 100, 1]] }));
        assert.deepEqual(await s.evictBlobs([D1, D2], T0 + 99), [D1]);
        assert.equal(await s.getBlob(D1), undefined);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D2), true);
        assert.deepEqual(await s.evictBlobs([D2], T0 + 100), [D2]);
      });

      test('evictBlobs forgets the unpinned ones (with manifest rows and links) and returns them; pinned ones stay', async (t) => {
        const s = await setup(t);
        await s.recordManifest(D1, INDEX, 10, nginx);
        await s.recordBlob(D2, 20, nginx);
        await s.recordBlob(D3, 30, nginx);
        await s.setBlobPins([D2], []);
        assert.deepEqual(await s.evictBlobs([D3, D2, D1, D4]), [D3, D1]);
        assert.equal(await s.getBlob(D1), undefined);
        assert.equal(await s.getManifest(D1), undefined);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D1), false);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D3), false);
        assert.deepEqual(await s.getBlob(D2), { size: 20, pinned: true });
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D2), true);
        assert.deepEqual(await s.evictBlobs([]), []);
      });
    });

    describe('counters', () => {
      test('writeBatch: access times only move forward, hits add up, unknown digests get no row', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 10);
        await s.writeBatch(batch({ touches: [[D1, T0 + 7000, 2], [D2, T0, 1]] }));
        assert.deepEqual(await s.blobStats(D1), { lastAccess: T0 + 7000, hits: 2 });
        await s.writeBatch(batch({ touches: [[D1, T0 - HOUR, 3]] }));
        assert.deepEqual(await s.blobStats(D1), { lastAccess: T0 + 7000, hits: 5 }, 'an older clock never moves last_access back');
        assert.equal(await s.getBlob(D2), undefined);
        assert.equal(await s.count('blobs'), 1);
        await s.writeBatch(batch({}));
        assert.deepEqual(await s.blobStats(D1), { lastAccess: T0 + 7000, hits: 5 });
      });

      test('writeBatch adds roll-ups; rollupsSince sums whole hours per upstream and metric', async (t) => {
        const s = await setup(t);
        const h0 = Math.floor(T0 / HOUR) * HOUR;
        await s.writeBatch(batch({ rollups: [[h0, 'docker.io', 'pulls_served', 3], [h0, 'docker.io', 'manifest_get', 1], [h0, 'ghcr.io', 'cache_hits', 4]] }));
        await s.writeBatch(batch({ rollups: [[h0 + HOUR, 'docker.io', 'pulls_served', 2], [h0, 'docker.io', 'pulls_served', 1]] }));
        assert.deepEqual(await s.rollupsSince(h0), [
          { upstream: 'docker.io', metric: 'manifest_get', value: 1 },
          { upstream: 'docker.io', metric: 'pulls_served', value: 6 },
          { upstream: 'ghcr.io', metric: 'cache_hits', value: 4 },
        ]);
        assert.deepEqual(await s.rollupsSince(h0 + HOUR + 59 * 60_000), [{ upstream: 'docker.io', metric: 'pulls_served', value: 2 }], 'the hour holding sinceMs counts whole');
        assert.deepEqual(await s.rollupsSince(h0 + 2 * HOUR), []);
      });

      test('18.1 subject roll-ups: pulls and bytes add up per repository and hour, a budget keeps the hour\'s lowest', async (t) => {
        const s = await setup(t);
        const h0 = Math.floor(T0 / HOUR) * HOUR;
        await s.writeBatch(batch({ subjects: [[h0, 'docker.io', 'library/nginx', 'image_pulls', 2], [h0, 'docker.io', 'library/alpine', 'image_pulls', 1], [h0, 'docker.io', 'anonymous', 'budget_low', 50]] }));
        await s.writeBatch(
          batch({
            subjects: [
              [h0, 'docker.io', 'library/alpine', 'image_pulls', 4],
              [h0 + HOUR, 'docker.io', 'library/nginx', 'image_pulls', 1],
              [h0 + HOUR, 'ghcr.io', 'org/app', 'image_bytes', 900],
              [h0, 'docker.io', 'anonymous', 'budget_low', 60],
              [h0 + HOUR, 'docker.io', 'anonymous', 'budget_low', 40],
            ],
          }),
        );
        assert.deepEqual(await s.topSubjects('image_pulls', h0, 10), [
          { upstream: 'docker.io', subject: 'library/alpine', value: 5 },
          { upstream: 'docker.io', subject: 'library/nginx', value: 3 },
        ]);
        assert.deepEqual(await s.topSubjects('image_pulls', h0, 1), [{ upstream: 'docker.io', subject: 'library/alpine', value: 5 }]);
        assert.deepEqual(await s.topSubjects('image_pulls', h0 + HOUR, 10), [{ upstream: 'docker.io', subject: 'library/nginx', value: 1 }], 'only the hours since');
        assert.deepEqual(await s.topSubjects('image_bytes', 0, 10), [{ upstream: 'ghcr.io', subject: 'org/app', value: 900 }]);
        assert.deepEqual(await s.subjectHours('budget_low', h0), [
          { hour: h0, upstream: 'docker.io', key: 'anonymous', value: 50 },
          { hour: h0 + HOUR, upstream: 'docker.io', key: 'anonymous', value: 40 },
        ]);
      });

      test('18.1 rollupHours gives the roll-ups hour by hour', async (t) => {
        const s = await setup(t);
        const h0 = Math.floor(T0 / HOUR) * HOUR;
        await s.writeBatch(batch({ rollups: [[h0, 'docker.io', 'pulls_served', 3], [h0 + HOUR, 'docker.io', 'pulls_served', 2], [h0 + HOUR, 'docker.io', 'manifest_get', 1]] }));
        assert.deepEqual(await s.rollupHours(h0 + 30 * 60_000), [
          { hour: h0, upstream: 'docker.io', key: 'pulls_served', value: 3 },
          { hour: h0 + HOUR, upstream: 'docker.io', key: 'manifest_get', value: 1 },
          { hour: h0 + HOUR, upstream: 'docker.io', key: 'pulls_served', value: 2 },
        ]);
      });

      test('writeBatch keeps the latest budget per upstream and credential; absent fields are omitted', async (t) => {
        const s = await setup(t);
        const anon = { upstream: 'docker.io', credential: 'anonymous' };
        await s.writeBatch(batch({ rateLimits: [{ ...anon, limit: 100, remaining: 42, windowSeconds: 21600, source: '1.2.3.4', observedAt: T0 }, { upstream: 'ghcr.io', credential: 'me', observedAt: T0 }] }));
        await s.writeBatch(batch({ rateLimits: [{ ...anon, limit: 100, remaining: 41, windowSeconds: 21600, observedAt: T0 + HOUR }] }));
        assert.deepEqual(await s.rateLimits(), [
          { ...anon, limit: 100, remaining: 41, windowSeconds: 21600, observedAt: T0 + HOUR },
          { upstream: 'ghcr.io', credential: 'me', observedAt: T0 },
        ]);
      });

      test('writeBatch is one transaction: touches, roll-ups and budgets land together', async (t) => {
        const s = await setup(t);
        await s.recordBlob(D1, 10);
        const h0 = Math.floor(T0 / HOUR) * HOUR;
        await assert.rejects(
          s.writeBatch(batch({ touches: [[D1, T0 + 1, 1]], rollups: [[h0, 'docker.io', 'pulls_served', 1]], rateLimits: [{ upstream: 'docker.io', credential: 'x', observedAt: null as unknown as number }] })),
        );
        assert.deepEqual(await s.blobStats(D1), { lastAccess: T0, hits: 0 });
        assert.deepEqual(await s.rollupsSince(h0), []);
        assert.deepEqual(await s.rateLimits(), []);
      });
    });

    describe('commands', () => {
      test('recordImport records, links and pins the blobs and manifests, and pins the tags', async (t) => {
        const s = await setup(t);
        await s.recordImport({
          blobs: [
            { digest: D1, size: 100, mediaType: INDEX, link: nginx, version: 'v1' },
            { digest: D2, size: 200, link: nginx },
            { digest: D3, size: 300 },
          ],
          tags: [
            { key, digest: D1, mediaType: INDEX },
            { key: { ...key, accept: 1 }, digest: D1, mediaType: INDEX },
          ],
        });
        assert.deepEqual(await s.getBlob(D1), { size: 100, version: 'v1', pinned: true });
        assert.deepEqual(await s.getBlob(D2), { size: 200, pinned: true });
        assert.deepEqual(await s.getBlob(D3), { size: 300, pinned: true });
        assert.deepEqual(await s.getManifest(D1), { mediaType: INDEX, size: 100 });
        assert.equal(await s.getManifest(D2), undefined);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D2), true);
        assert.equal(await s.count('links'), 2);
        assert.deepEqual((await s.tagRows('docker.io', 'library/nginx', 'latest')).map((r) => [r.accept, r.pinned, r.fetchedAt, r.expiresAt]), [
          [15, true, T0, T0],
          [1, true, T0, T0],
        ]);
        assert.deepEqual(await s.storeSize(), { blobs: 3, bytes: 600, pinnedBytes: 600 });
      });

      test('recordImport is all or nothing: a bad row leaves nothing written', async (t) => {
        const s = await setup(t);
        await s.putTag(key, D4, 'old', 1000);
        await assert.rejects(
          s.recordImport({
            blobs: [{ digest: D1, size: 100, mediaType: INDEX, link: nginx }],
            tags: [
              { key, digest: D1, mediaType: INDEX },
              { key: { ...key, accept: 1 }, digest: D1, mediaType: null as unknown as string },
            ],
          }),
        );
        assert.equal(await s.count('blobs'), 0);
        assert.equal(await s.count('manifests'), 0);
        assert.equal(await s.count('links'), 0);
        assert.deepEqual(await s.getTag(key), { digest: D4, mediaType: 'old', fetchedAt: T0, expiresAt: T0 + 1000, pinned: false });
      });

      test('removeImages forgets every Accept class of the tags and the blobs given, with their manifest rows and links', async (t) => {
        const s = await setup(t);
        await s.recordManifest(D1, INDEX, 10, nginx);
        await s.recordBlob(D2, 20, nginx);
        await s.recordBlob(D3, 30, nginx);
        await s.putTag(key, D1, INDEX, 1000);
        await s.putTag({ ...key, accept: 1 }, D1, INDEX, 1000);
        await s.putTag({ ...key, tag: 'other' }, D1, INDEX, 1000);
        await s.removeImages([{ ...nginx, tag: 'latest' }], [D2]);
        assert.deepEqual((await s.listTags()).map((r) => r.tag), ['other']);
        assert.equal(await s.getBlob(D2), undefined);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D2), false);
        assert.deepEqual((await s.allBlobs()).map((b) => b.digest), [D1, D3]);
        await s.removeImages([{ ...nginx, tag: 'other' }], [D1]);
        assert.equal(await s.count('tags'), 0);
        assert.equal(await s.getManifest(D1), undefined);
        assert.equal(await s.count('links'), 1);
      });

      test('reconcile counts (dry run) or removes rows that point at nothing and old roll-ups', async (t) => {
        const s = await setup(t);
        const h0 = Math.floor(T0 / HOUR) * HOUR;
        const tag = (t2: string, digest: string) => ({ ...nginx, tag: t2, accept: 15, digest, mediaType: INDEX, fetchedAt: T0, expiresAt: T0, pinned: false });
        // Rows no operation would leave behind, loaded as a store moved from elsewhere.
        await s.importRows(
          batchesOf(
            { table: 'blobs', rows: [{ digest: D1, size: 1, createdAt: T0, lastAccess: T0, hits: 0, pinned: false }] },
            { table: 'manifests', rows: [{ digest: D1, mediaType: INDEX }, { digest: D2, mediaType: INDEX }] },
            { table: 'links', rows: [{ ...nginx, digest: D1 }, { ...nginx, digest: D3 }] },
            { table: 'tags', rows: [tag('ok', D1), tag('blob-gone', D2), tag('manifest-gone', D4)] },
            { table: 'rollups', rows: [{ hour: h0 - 31 * 24 * HOUR, upstream: 'docker.io', metric: 'pulls_served', value: 1 }, { hour: h0, upstream: 'docker.io', metric: 'pulls_served', value: 2 }] },
            { table: 'subjectRollups', rows: [{ hour: h0 - 31 * 24 * HOUR, upstream: 'docker.io', subject: 'library/nginx', metric: 'image_pulls', value: 1 }, { hour: h0, upstream: 'docker.io', subject: 'library/nginx', metric: 'image_pulls', value: 2 }] },
          ),
        );
        const cutoff = h0 - 30 * 24 * HOUR;
        // A dry run judges each kind against the rows as they are: the tag of D2 still has its manifest row.
        assert.deepEqual(await s.reconcile(cutoff, true), { links: 1, manifests: 1, tags: 1, rollups: 2 });
        assert.equal(await s.count('links'), 2, 'a dry run changes nothing');
        assert.equal(await s.count('tags'), 3);
        assert.deepEqual(await s.reconcile(cutoff, false), { links: 1, manifests: 1, tags: 2, rollups: 2 });
        assert.deepEqual(await s.topSubjects('image_pulls', 0, 10), [{ upstream: 'docker.io', subject: 'library/nginx', value: 2 }], 'old subject roll-ups go with the others');
        assert.deepEqual((await s.listTags()).map((r) => r.tag), ['ok']);
        assert.equal(await s.isLinked('docker.io', 'library/nginx', D3), false);
        assert.deepEqual(await s.getManifest(D1), { mediaType: INDEX, size: 1 });
        assert.deepEqual(await s.rollupsSince(0), [{ upstream: 'docker.io', metric: 'pulls_served', value: 2 }]);
        assert.deepEqual(await s.reconcile(cutoff, false), { links: 0, manifests: 0, tags: 0, rollups: 0 });
      });
    });

    describe('moving a store', () => {
      test('exportRows then importRows copies every row of every table', async (t) => {
        const a = await setup(t);
        const h0 = Math.floor(T0 / HOUR) * HOUR;
        await a.recordImport({ blobs: [{ digest: D1, size: 100, mediaType: INDEX, link: nginx, version: 'v1' }], tags: [{ key, digest: D1, mediaType: INDEX }] });
        await a.recordBlob(D2, 200, { upstream: 'ghcr.io', repository: 'org/app' });
        await a.putTag({ ...key, tag: 'other', accept: 4 }, D1, INDEX, 1000);
        await a.writeBatch(
          batch({
            touches: [[D2, T0 + 5, 3]],
            rollups: [[h0, 'docker.io', 'pulls_served', 7]],
            rateLimits: [{ upstream: 'docker.io', credential: 'anonymous', limit: 100, remaining: 9, observedAt: T0 }],
            subjects: [[h0, 'docker.io', 'anonymous', 'budget_low', 9]],
          }),
        );
        const exported = await collect(a);
        assert.deepEqual(exported.rows, {
          blobs: [
            { digest: D1, size: 100, createdAt: T0, lastAccess: T0, hits: 0, pinned: true, version: 'v1' },
            { digest: D2, size: 200, createdAt: T0, lastAccess: T0 + 5, hits: 3, pinned: false },
          ],
          manifests: [{ digest: D1, mediaType: INDEX }],
          links: [{ ...nginx, digest: D1 }, { upstream: 'ghcr.io', repository: 'org/app', digest: D2 }],
          tags: [
            { ...key, digest: D1, mediaType: INDEX, fetchedAt: T0, expiresAt: T0, pinned: true },
            { ...key, tag: 'other', accept: 4, digest: D1, mediaType: INDEX, fetchedAt: T0, expiresAt: T0 + 1000, pinned: false },
          ],
          rateLimits: [{ upstream: 'docker.io', credential: 'anonymous', limit: 100, remaining: 9, observedAt: T0 }],
          rollups: [{ hour: h0, upstream: 'docker.io', metric: 'pulls_served', value: 7 }],
          subjectRollups: [{ hour: h0, upstream: 'docker.io', subject: 'anonymous', metric: 'budget_low', value: 9 }],
        });
        const b = await setup(t);
        assert.equal(await b.importRows(a.exportRows()), 10);
        assert.deepEqual((await collect(b)).rows, exported.rows);
        assert.deepEqual(await b.getBlob(D1), { size: 100, version: 'v1', pinned: true });
        assert.equal(await b.isLinked('ghcr.io', 'org/app', D2), true);
      });

      test('exportRows yields batches of at most 1000 rows', async (t) => {
        const a = await setup(t);
        const links = Array.from({ length: 2500 }, (_, i) => ({ ...nginx, digest: `sha256:${i.toString(16).padStart(64, '0')}` }));
        assert.equal(await a.importRows(batchesOf({ table: 'links', rows: links })), 2500);
        const { rows, sizes } = await collect(a);
        assert.ok(sizes.every((n) => n > 0 && n <= 1000), `batch sizes ${sizes.join(', ')}`);
        assert.equal(sizes.length, 3);
        assert.deepEqual(rows.links, links);
      });

      test('importRows refuses a store that has rows, and loads nothing into it', async (t) => {
        const a = await setup(t);
        await a.recordBlob(D1, 1);
        const b = await setup(t);
        await b.putTag(key, D2, INDEX, 1000);
        await assert.rejects(b.importRows(a.exportRows()), (err: Error) => {
          assert.match(err.message, /not empty/);
          assert.doesNotMatch(err.message, /\n/);
          return true;
        });
        assert.equal(await b.count('blobs'), 0);
        assert.equal(await b.count('tags'), 1);
      });

      test('importRows is all or nothing: a bad row in a later batch leaves the store empty', async (t) => {
        const s = await setup(t);
        await assert.rejects(
          s.importRows(
            batchesOf(
              { table: 'blobs', rows: [{ digest: D1, size: 1, createdAt: T0, lastAccess: T0, hits: 0, pinned: false }] },
              { table: 'manifests', rows: [{ digest: D1, mediaType: null as unknown as string }] },
            ),
          ),
        );
        assert.equal(await s.count('blobs'), 0);
        assert.deepEqual(await collect(s), { rows: {}, sizes: [] });
      });
    });
  });
}
