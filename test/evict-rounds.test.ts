// The evictor's pass on its own, on SQLite with a test clock: it chooses the least recently
// used blobs, forgets them by digest, and spares one used between being chosen and being
// forgotten (the pass then takes the next least recently used instead).
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { Evictor } from '../src/cache/evict.js';
import { createLogger } from '../src/log.js';
import { Metadata } from '../src/store/metadata.js';
import { SqliteMetadataStore } from '../src/store/sqlite/metadata-sqlite.js';

const D = [1, 2, 3, 4].map((i) => `sha256:${String(i).repeat(64)}`);
const T0 = 1_700_000_000_000;

async function setup(t: { after: (fn: () => Promise<void>) => void }) {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-evict-rounds-'));
  const clock = { now: T0 };
  const m = new Metadata(new SqliteMetadataStore(join(dir, 'mirror.db'), { now: () => clock.now }), { now: () => clock.now, flushEveryMs: 3_600_000 });
  t.after(async () => {
    await m.close();
    await rm(dir, { recursive: true, force: true });
  });
  // D[0] used first, D[3] last: 10 bytes each.
  for (const d of D) {
    await m.recordBlob(d, 10);
    clock.now += 1000;
  }
  return { m, clock };
}

test('a pass spares a blob used after it was chosen, and takes the next least recently used instead', async (t) => {
  const { m, clock } = await setup(t);
  const removed: string[] = [];
  const asked = new Map<string, number>();
  const evictor = new Evictor({
    metadata: m,
    log: createLogger('error'),
    holder: 'test',
    limitBytes: 40,
    highWatermark: 50,
    lowWatermark: 25,
    // Asked when choosing, then again just before the rows go: at that second look, D[1] is
    // served (a hit this process counts in memory, not yet written).
    inUse: (d) => {
      const n = (asked.get(d) ?? 0) + 1;
      asked.set(d, n);
      if (d === D[1] && n === 2) {
        clock.now += 1000;
        m.touch(d);
      }
      return false;
    },
    remove: async (ds) => void removed.push(...ds),
  });
  // 40 bytes over a high watermark of 20: 30 must go to reach the low one (10).
  assert.deepEqual(await evictor.run(), { removed: 3, freed: 30 });
  assert.deepEqual(removed.sort(), [D[0], D[2], D[3]]);
  assert.deepEqual(await m.getBlob(D[1]), { size: 10, pinned: false }, 'the blob used meanwhile stays');
  assert.equal((await m.storeSize()).bytes, 10);
});

test('a pass forgets the least recently used and none of the rest, whatever its round', async (t) => {
  const { m } = await setup(t);
  const removed: string[] = [];
  const evictor = new Evictor({ metadata: m, log: createLogger('error'), holder: 'test', limitBytes: 40, highWatermark: 50, lowWatermark: 50, inUse: (d) => d === D[0], remove: async (ds) => void removed.push(...ds) });
  assert.deepEqual(await evictor.run(), { removed: 2, freed: 20 });
  assert.deepEqual(removed.sort(), [D[1], D[2]], 'D[0] is in use: the next two least recently used go');
});
