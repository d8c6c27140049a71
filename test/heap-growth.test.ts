// `serve` tells V8 to grow its old generation by at most REGMIRROR_HEAP_GROWING_PERCENT
// past the live heap when it is set (V8's own factor when not): the setting is read,
// checked and applied, and it does bound the heap.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { test } from 'node:test';
import { DEFAULT_HEAP_GROWING_PERCENT, EnvironmentError, HEAP_GROWING_ENV, heapGrowingPercent } from '../src/cli/heap-growth.js';
import { cli } from './helpers.js';

test("the heap growing percent is V8's own (0) unless set, and anything but a whole number up to 300 is refused by name", () => {
  assert.equal(DEFAULT_HEAP_GROWING_PERCENT, 0);
  assert.equal(heapGrowingPercent({}), 0);
  assert.equal(heapGrowingPercent({ [HEAP_GROWING_ENV]: '' }), 0);
  assert.equal(heapGrowingPercent({ [HEAP_GROWING_ENV]: '0' }), 0);
  assert.equal(heapGrowingPercent({ [HEAP_GROWING_ENV]: '120' }), 120);
  for (const bad of ['-1', '1.5', '301', 'fifty', ' 50']) {
    assert.throws(() => heapGrowingPercent({ [HEAP_GROWING_ENV]: bad }), (err: Error) => err instanceof EnvironmentError && err.message.includes(HEAP_GROWING_ENV), bad);
  }
});

test('serve with a bad REGMIRROR_HEAP_GROWING_PERCENT exits 1 with one line naming it', async () => {
  const r = await cli(['serve', '--config', '/nonexistent/mirror.yaml'], { [HEAP_GROWING_ENV]: 'lots' });
  assert.equal(r.code, 1);
  const lines = r.stderr.trim().split('\n');
  assert.equal(lines.length, 1, r.stderr);
  assert.match(lines[0], /^regmirror: REGMIRROR_HEAP_GROWING_PERCENT="lots": expected a whole number/);
});

/** The largest heapTotal, MiB, of a child that keeps ~30 MiB live and churns objects that live long enough to be promoted. */
function churnPeak(percent: string): Promise<number> {
  const script = `
    const { applyHeapGrowing } = await import(${JSON.stringify(new URL('../src/cli/heap-growth.ts', import.meta.url).pathname)});
    applyHeapGrowing();
    const live = [];
    for (let i = 0; i < 200000; i++) live.push({ i, s: 'live ' + i, a: [i] });
    const ring = new Array(200000);
    let peak = 0;
    for (let i = 0; i < 1e7; i++) {
      ring[i % 200000] = { i, s: 'churn ' + i };
      if (i % 100000 === 0) peak = Math.max(peak, process.memoryUsage().heapTotal);
    }
    console.log(peak / 1048576, live.length);`;
  return new Promise((resolve, reject) => {
    execFile(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { env: { ...process.env, [HEAP_GROWING_ENV]: percent } }, (err, stdout) => {
      if (err) reject(err);
      else resolve(Number(stdout.trim().split(' ')[0]));
    });
  });
}

test('set to 100 the heap peaks well below where V8 left to itself (the default) takes it, under the same churn', async (t) => {
  const own = await churnPeak('');
  const bounded = await churnPeak('100');
  t.diagnostic(`peak heap ${bounded.toFixed(0)} MiB at 100 %, ${own.toFixed(0)} MiB with V8's own factor`);
  assert.ok(bounded < own * 0.8, `peak heap ${bounded.toFixed(0)} MiB with 100 %, ${own.toFixed(0)} MiB with V8's own factor`);
});
