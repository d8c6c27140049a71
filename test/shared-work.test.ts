// One replica of a cluster does a piece of shared work (a tag's revalidation) while the
// others wait for its result; the work must not be done twice when a replica comes to the
// lease just after another has finished and released it.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { SharedWork } from '../src/cluster/shared-work.js';
import { tempSqliteStore } from './helpers.js';

const OPTS = { ttlMs: 10_000, waitMs: 2_000 };

test('shared work finished and released by one replica is not done again by the next', async (t) => {
  const store = await tempSqliteStore(t, 'regmirror-shared-work-');
  const a = new SharedWork(store.leases, 'replica-a');
  const b = new SharedWork(store.leases, 'replica-b');
  let done: string | undefined;
  let runs = 0;
  const work = async (): Promise<string> => {
    runs += 1;
    done = 'revalidated';
    return done;
  };
  const result = async (): Promise<string | undefined> => done;
  assert.equal(await a.run('tag:x', OPTS, work, result), 'revalidated');
  // A's lease is released (asynchronously): B finds the lease free, and the result there.
  await new Promise((r) => setTimeout(r, 20));
  assert.equal((await store.leases.list('tag:')).length, 0, 'the lease was released');
  assert.equal(await b.run('tag:x', OPTS, work, result), 'revalidated');
  assert.equal(runs, 1, 'the work ran once');
});

test('shared work: a replica waiting on another holder takes the result it leaves, and does the work itself only once the lease is free and no result is there', async (t) => {
  const store = await tempSqliteStore(t, 'regmirror-shared-work-');
  const a = new SharedWork(store.leases, 'replica-a');
  const b = new SharedWork(store.leases, 'replica-b');
  let release!: () => void;
  const gate = new Promise<void>((r) => (release = r));
  let done: string | undefined;
  const runs: string[] = [];
  const slow = async (): Promise<string> => {
    runs.push('a');
    await gate;
    done = 'from-a';
    return done;
  };
  const first = a.run('tag:y', OPTS, slow, async () => done);
  await new Promise((r) => setTimeout(r, 20));
  const second = b.run('tag:y', OPTS, async () => (runs.push('b'), 'from-b'), async () => done);
  await new Promise((r) => setTimeout(r, 120));
  release();
  assert.deepEqual(await Promise.all([first, second]), ['from-a', 'from-a']);
  assert.deepEqual(runs, ['a'], 'B waited for A and did not do the work');

  // With no result left behind (A's work failed), B does it once the lease is free.
  done = undefined;
  const failed = a.run('tag:z', OPTS, async () => {
    throw new Error('upstream down');
  }, async () => undefined);
  await assert.rejects(failed, /upstream down/);
  assert.equal(await b.run('tag:z', OPTS, async () => 'from-b', async () => undefined), 'from-b');
});
