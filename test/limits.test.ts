// Slow or greedy clients: connections beyond the per-client limit are refused, and a
// connection that moves no byte for clientIdleTimeout is closed, without slowing others.
import assert from 'node:assert/strict';
import { connect, type Socket } from 'node:net';
import { test } from 'node:test';
import { get, startMirror } from './helpers.js';

function open(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect(port, '127.0.0.1', () => resolve(s));
    s.once('error', reject);
  });
}

function closed(s: Socket, withinMs: number): Promise<boolean> {
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), withinMs);
    s.once('close', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

test('connections beyond connectionsPerClient are refused; idle ones are closed', async () => {
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }], limits: { connectionsPerClient: 3, clientIdleTimeoutMs: 400 } });
  try {
    const held = [await open(m.port), await open(m.port), await open(m.port)];
    const extra = await open(m.port);
    assert.ok(await closed(extra, 1000), 'the fourth connection from one address is closed at once');
    // The held ones stay open until they have been idle for clientIdleTimeout.
    const started = Date.now();
    assert.ok(await closed(held[0], 3000), 'an idle connection is closed');
    assert.ok(Date.now() - started >= 250);
    await Promise.all(held.slice(1).map((s) => closed(s, 3000)));
    // With the idle ones gone, the client is served again.
    assert.equal((await get(`${m.url}/v2/`)).status, 200);
  } finally {
    await m.close();
  }
});
