// Reading an upstream body chunk by chunk: every chunk in order and untouched, the
// consumer's backpressure respected, the end counted only once the consumer is done, and
// a body that fails or closes early reported as such (a download must never take a cut
// body for a whole one).
import assert from 'node:assert/strict';
import { PassThrough, Readable } from 'node:stream';
import { setTimeout as delay } from 'node:timers/promises';
import { test } from 'node:test';
import { readChunks } from '../src/upstream/read-chunks.js';

const chunk = (i: number) => Buffer.alloc(64 * 1024, i);

test('every chunk arrives in order; a slow consumer pauses the body and the end waits for it', async () => {
  const sent = Array.from({ length: 40 }, (_, i) => chunk(i));
  const body = Readable.from(sent, { objectMode: false, highWaterMark: 64 * 1024 });
  const got: Buffer[] = [];
  let busy = false;
  let overlapped = false;
  let finishedBeforeLast = false;
  await readChunks(body, (c) => {
    if (busy) overlapped = true;
    got.push(c);
    if (got.length % 5 !== 0) return undefined;
    busy = true;
    return delay(5).then(() => {
      busy = false;
    });
  }).then(() => {
    finishedBeforeLast = busy;
  });
  assert.equal(overlapped, false, 'no chunk was handed over while the consumer was busy');
  assert.equal(finishedBeforeLast, false, 'the end was reported only after the last chunk was taken');
  assert.ok(Buffer.concat(got).equals(Buffer.concat(sent)));
});

test('a body that fails mid-way rejects with its error', async () => {
  const body = new PassThrough();
  const done = readChunks(body, () => undefined);
  body.write(chunk(1));
  await delay(1);
  body.destroy(new Error('socket hang up'));
  await assert.rejects(done, /socket hang up/);
});

test('a body closed before its end rejects', async () => {
  const body = new PassThrough();
  const done = readChunks(body, () => undefined);
  body.write(chunk(1));
  await delay(1);
  body.destroy();
  await assert.rejects(done, /closed before its end/);
});

test('what the consumer throws or rejects with ends the read with that error', async () => {
  const thrown = readChunks(Readable.from([chunk(1), chunk(2)]), () => {
    throw new Error('disk gone');
  });
  await assert.rejects(thrown, /disk gone/);
  const rejected = readChunks(Readable.from([chunk(1), chunk(2)]), () => Promise.reject(new Error('store full')));
  await assert.rejects(rejected, /store full/);
});
