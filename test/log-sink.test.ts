// The stderr sink batches a turn's lines into one write, sends warnings at once after what
// waits, and loses nothing at exit; the JSON lines' fast path redacts as the replacer does.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { test } from 'node:test';
import { createLogger } from '../src/log.js';
import { batchedSink } from '../src/log-sink.js';

const turn = () => new Promise((r) => setImmediate(r));

test('lines logged in one turn of the event loop go out in one write, in order', async () => {
  const writes: string[] = [];
  const sink = batchedSink((t) => writes.push(t));
  sink.line('a');
  sink.line('b');
  assert.deepEqual(writes, [], 'nothing is written before the turn ends');
  await turn();
  assert.deepEqual(writes, ['a\nb\n']);
  sink.line('c');
  await turn();
  assert.deepEqual(writes, ['a\nb\n', 'c\n']);
});

test('a flush writes what waits and then its own line, at once', async () => {
  const writes: string[] = [];
  const sink = batchedSink((t) => writes.push(t));
  sink.line('info');
  sink.flush('warn');
  assert.deepEqual(writes, ['info\nwarn\n']);
  await turn();
  assert.deepEqual(writes, ['info\nwarn\n'], 'the turn has nothing left to write');
});

test('64 KiB waiting are written without waiting for the turn', () => {
  const writes: string[] = [];
  const sink = batchedSink((t) => writes.push(t));
  const line = 'x'.repeat(1023);
  for (let i = 0; i < 64; i++) sink.line(line);
  assert.equal(writes.length, 1);
  assert.equal(writes[0].length, 64 * 1024);
});

const LOGGER = new URL('../src/log.ts', import.meta.url).href;

function child(script: string): { stderr: string; status: number } {
  try {
    const stderr = execFileSync(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', script], { encoding: 'utf8', stdio: ['ignore', 'ignore', 'pipe'] });
    return { stderr, status: 0 };
  } catch (err) {
    const e = err as { stderr: string; status: number };
    return { stderr: e.stderr, status: e.status };
  }
}

test('lines still waiting when the process exits are written: process.exit and an uncaught exception', () => {
  const exited = child(`import { createLogger } from ${JSON.stringify(LOGGER)}; const log = createLogger('info'); log.info('one'); log.info('two'); process.exit(3);`);
  assert.equal(exited.status, 3);
  assert.deepEqual(exited.stderr.trim().split('\n').map((l) => JSON.parse(l).msg), ['one', 'two']);
  const crashed = child(`import { createLogger } from ${JSON.stringify(LOGGER)}; const log = createLogger('info'); log.info('before the crash'); throw new Error('boom');`);
  assert.notEqual(crashed.status, 0);
  assert.match(crashed.stderr, /"msg":"before the crash"/);
  assert.match(crashed.stderr, /boom/);
});

test('JSON lines: flat fields as they are, secrets and signed queries redacted, nested ones too', () => {
  const lines: string[] = [];
  const log = createLogger('info', (l) => lines.push(l));
  log.info('request', { path: '/v2/a/blobs/x', status: 200, ms: 1.5, aborted: true });
  log.info('token', { token: 'abc', authorization: 'Bearer x', count: 2 });
  log.info('redirect', { url: 'https://s3/x?X-Amz-Signature=deadbeef&a=1' });
  log.info('nested', { headers: { cookie: 'c=1', accept: 'x' }, err: new Error('https://s3/x?sig=1') });
  const [req, tok, red, nested] = lines.map((l) => JSON.parse(l));
  assert.deepEqual({ path: req.path, status: req.status, ms: req.ms, aborted: req.aborted }, { path: '/v2/a/blobs/x', status: 200, ms: 1.5, aborted: true });
  assert.equal(tok.token, '[redacted]');
  assert.equal(tok.authorization, '[redacted]');
  assert.equal(tok.count, 2);
  assert.equal(red.url, 'https://s3/x?[redacted]');
  assert.deepEqual(nested.headers, { cookie: '[redacted]', accept: 'x' });
  assert.equal(nested.err.message, 'https://s3/x?[redacted]');
});
