// The guarded-tag part of the metadata seam (src/store/guarded-tags.ts), run by
// metadataContract on every backend: a tag is guarded once, a change is recorded once,
// accept moves the guard, and classes of one tag are kept apart.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import type { MetadataStore } from '../../src/store/metadata-store.js';
import type { GuardKey } from '../../src/store/guarded-tags.js';

type Setup = (t: import('node:test').TestContext) => Promise<MetadataStore>;
type Advance = (s: MetadataStore, ms: number) => void;

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const C = `sha256:${'c'.repeat(64)}`;
const K: GuardKey = { upstream: 'docker.io', repository: 'library/nginx', tag: 'v1.0', class: 'index' };

export function guardedTagContract(setup: Setup, advance: Advance): void {
  describe('guarded tags', () => {
    test('a tag is guarded at the first digest; guarding again keeps it', async (t) => {
      const s = await setup(t);
      assert.equal(await s.guardedTags.get(K), undefined);
      const first = await s.guardedTags.guard(K, A);
      assert.equal(first.digest, A);
      assert.equal(first.change, undefined);
      advance(s, 1000);
      const again = await s.guardedTags.guard(K, B);
      assert.deepEqual(again, first, 'the row in force, unchanged');
      assert.deepEqual(await s.guardedTags.get(K), first);
      assert.deepEqual(await s.guardedTags.changes(), []);
    });

    test('a change is recorded once, with the time first seen; another digest replaces it', async (t) => {
      const s = await setup(t);
      const g = s.guardedTags;
      await g.guard(K, A);
      const t0 = (await g.get(K))!.guardedAt;
      advance(s, 1000);
      assert.equal(await g.recordChange(K, B, 'keep'), true);
      advance(s, 1000);
      assert.equal(await g.recordChange(K, B, 'keep'), false, 'the same change again is not news');
      assert.equal(await g.recordChange(K, A, 'keep'), false, 'the guarded digest is no change');
      const row = (await g.get(K))!;
      assert.equal(row.digest, A);
      assert.deepEqual(row.change, { digest: B, since: t0 + 1000, action: 'keep' });
      advance(s, 1000);
      assert.equal(await g.recordChange(K, C, 'refuse'), true);
      assert.deepEqual((await g.get(K))!.change, { digest: C, since: t0 + 3000, action: 'refuse' });
      assert.deepEqual(await g.changes(), [await g.get(K)]);
    });

    test('a tag not guarded records no change', async (t) => {
      const s = await setup(t);
      assert.equal(await s.guardedTags.recordChange(K, B, 'keep'), false);
      assert.equal(await s.guardedTags.get(K), undefined);
    });

    test('clearChange forgets the pending change and keeps the guard', async (t) => {
      const s = await setup(t);
      const g = s.guardedTags;
      await g.guard(K, A);
      await g.recordChange(K, B, 'follow');
      await g.clearChange(K);
      const row = (await g.get(K))!;
      assert.equal(row.digest, A);
      assert.equal(row.change, undefined);
      assert.deepEqual(await g.changes(), []);
      assert.equal(await g.recordChange(K, B, 'follow'), true, 'seen again after clearing: news again');
    });

    test('accept makes each class\'s pending digest the guarded one, and says what it accepted', async (t) => {
      const s = await setup(t);
      const g = s.guardedTags;
      const single: GuardKey = { ...K, class: '4' };
      const other: GuardKey = { ...K, tag: 'v2.0' };
      await g.guard(K, A);
      await g.guard(single, C);
      await g.guard(other, A);
      await g.recordChange(K, B, 'refuse');
      await g.recordChange(other, B, 'refuse');
      const since = (await g.get(K))!.change!.since;
      advance(s, 5000);
      const accepted = await g.accept(K.upstream, K.repository, K.tag);
      assert.deepEqual(accepted.map((r) => [r.class, r.digest, r.change]), [['index', A, { digest: B, since, action: 'refuse' }]], 'only the class with a change');
      const now = (await g.get(K))!;
      assert.equal(now.digest, B);
      assert.equal(now.change, undefined);
      assert.equal(now.guardedAt, since + 5000);
      assert.equal((await g.get(single))!.digest, C, 'the other class untouched');
      assert.deepEqual((await g.changes()).map((r) => r.tag), ['v2.0'], 'the other tag still pending');
      assert.deepEqual(await g.accept(K.upstream, K.repository, K.tag), [], 'nothing left to accept');
      assert.deepEqual(await g.accept('docker.io', 'library/redis', 'v1.0'), []);
    });

    test('changes lists every pending change, ordered', async (t) => {
      const s = await setup(t);
      const g = s.guardedTags;
      const keys: GuardKey[] = [
        { ...K, repository: 'library/redis', tag: 'v1' },
        { ...K, upstream: 'ghcr.io', repository: 'a/b', tag: '1.0' },
        { ...K, tag: 'v1.0', class: '8' },
        { ...K, tag: 'v1.0' },
      ];
      for (const k of keys) {
        await g.guard(k, A);
        await g.recordChange(k, B, 'follow');
      }
      await g.guard({ ...K, tag: 'v9' }, A);
      assert.deepEqual((await g.changes()).map((r) => `${r.upstream} ${r.repository}:${r.tag} ${r.class}`), [
        'docker.io library/nginx:v1.0 8',
        'docker.io library/nginx:v1.0 index',
        'docker.io library/redis:v1 index',
        'ghcr.io a/b:1.0 index',
      ]);
    });
  });
}
