// The same limits over TLS as over plain HTTP: slow headers are cut after headersTimeout,
// one HTTP/2 connection carries a bounded number of streams, and the per-client
// connection limit and idle timeout hold for TLS connections too.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { connect as http2Connect } from 'node:http2';
import { connect, type TLSSocket } from 'node:tls';
import type { Config } from '../src/config.js';
import { startMirror, type Mirror } from './helpers.js';

let dir: string;
let cert: string;
let key: string;
let ca: Buffer;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-tls-limits-'));
  cert = join(dir, 'server.crt');
  key = join(dir, 'server.key');
  execFileSync('openssl', ['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', cert, '-days', '2', '-subj', '/CN=127.0.0.1', '-addext', 'subjectAltName=IP:127.0.0.1'], { stdio: 'pipe' });
  ca = await readFile(cert);
});
after(async () => {
  await rm(dir, { recursive: true, force: true });
});

function mirror(limits: Partial<Config['limits']>): Promise<Mirror> {
  return startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }], tls: { cert, key }, limits });
}

function open(port: number, alpn: string): Promise<TLSSocket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, ALPNProtocols: [alpn] }, () => resolve(s));
    s.once('error', reject);
  });
}

/** Resolves with how long the socket took to close, or undefined if it is still open after `withinMs`. */
function closedWithin(s: TLSSocket, withinMs: number): Promise<number | undefined> {
  const started = Date.now();
  return new Promise((resolve) => {
    if (s.destroyed) return resolve(0);
    const timer = setTimeout(() => resolve(undefined), withinMs);
    s.on('error', () => {});
    // A paused TLS socket never reads, so it would never see the server's close.
    if (!s.listenerCount('data')) s.resume();
    s.once('close', () => {
      clearTimeout(timer);
      resolve(Date.now() - started);
    });
  });
}

test('13.11 over TLS, a client that sends its headers slowly is cut after headersTimeout', async () => {
  const m = await mirror({ headersTimeoutMs: 600, clientIdleTimeoutMs: 10_000 });
  try {
    const s = await open(m.port, 'http/1.1');
    s.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n');
    // A byte every 100 ms: never idle, never done.
    const drip = setInterval(() => s.writable && s.write('x'), 100);
    try {
      const took = await closedWithin(s, 5000);
      assert.ok(took !== undefined, 'the connection is closed');
    } finally {
      clearInterval(drip);
      s.destroy();
    }
    // A client that sends its request at once is served as before.
    const ok = await open(m.port, 'http/1.1');
    const answer = await new Promise<string>((resolve) => {
      let seen = '';
      ok.on('data', (c: Buffer) => {
        seen += c.toString();
        if (seen.includes('\r\n\r\n')) resolve(seen);
      });
      ok.write('GET /v2/ HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n');
    });
    ok.destroy();
    assert.match(answer, /^HTTP\/1\.1 200/);
  } finally {
    await m.close();
  }
});

test('13.11 over TLS, an HTTP/2 client that opens no request within headersTimeout is cut', async () => {
  const m = await mirror({ headersTimeoutMs: 600, clientIdleTimeoutMs: 10_000 });
  try {
    const s = await open(m.port, 'h2');
    assert.equal(s.alpnProtocol, 'h2');
    s.write(PREFACE);
    s.write(frame(TYPE.SETTINGS, 0, 0, Buffer.alloc(0)));
    // PINGs keep bytes moving, so only the header deadline can close it.
    const ping = setInterval(() => s.writable && s.write(frame(TYPE.PING, 0, 0, Buffer.alloc(8))), 100);
    try {
      assert.ok((await closedWithin(s, 5000)) !== undefined, 'the session is closed');
    } finally {
      clearInterval(ping);
      s.destroy();
    }
  } finally {
    await m.close();
  }
});

test('13.11 over TLS, one HTTP/2 connection carries at most 100 concurrent streams', async () => {
  const m = await mirror({});
  try {
    const s = await open(m.port, 'h2');
    const frames = readFrames(s);
    s.write(PREFACE);
    s.write(frame(TYPE.SETTINGS, 0, 0, Buffer.alloc(0)));
    const settings = await frames.next((f) => f.type === TYPE.SETTINGS && (f.flags & FLAG.ACK) === 0);
    assert.equal(settingValue(settings.payload, SETTINGS_MAX_CONCURRENT_STREAMS), 100, 'the limit is advertised');
    s.write(frame(TYPE.SETTINGS, FLAG.ACK, 0, Buffer.alloc(0)));
    await frames.next((f) => f.type === TYPE.SETTINGS && (f.flags & FLAG.ACK) !== 0);
    // Requests whose body never ends keep their streams open; a client that ignores the
    // advertised limit opens 120 of them anyway.
    const ids = Array.from({ length: 120 }, (_, i) => 2 * i + 1);
    for (const id of ids) s.write(frame(TYPE.HEADERS, FLAG.END_HEADERS, id, REQUEST_BLOCK));
    // Each stream ends answered, or refused (RST_STREAM), or with the connection closed.
    const refused = new Set<number>();
    const answered = new Set<number>();
    try {
      while (refused.size + answered.size < ids.length) {
        const f = await frames.next((x) => x.type === TYPE.RST_STREAM || x.type === TYPE.HEADERS);
        (f.type === TYPE.HEADERS ? answered : refused).add(f.stream);
      }
    } catch {
      // closed: whatever was not answered by now never will be
    }
    assert.ok(answered.size > 0 && answered.size <= 100, `${answered.size} streams were served`);
    assert.ok(Math.max(...answered) <= 199, 'no stream beyond the 100th is served');
    s.destroy();
  } finally {
    await m.close();
  }
});

test('13.11 over TLS, connections beyond connectionsPerClient are refused and idle ones closed', async () => {
  const m = await mirror({ connectionsPerClient: 3, clientIdleTimeoutMs: 400 });
  try {
    const held = [await open(m.port, 'h2'), await open(m.port, 'http/1.1'), await open(m.port, 'h2')];
    const extra = open(m.port, 'http/1.1');
    // The fourth is dropped before its handshake completes, or right after.
    const refusedFourth = await extra.then((s) => closedWithin(s, 1000), () => 0);
    assert.ok(refusedFourth !== undefined, 'the fourth connection from one address is closed at once');
    const started = Date.now();
    const times = await Promise.all(held.map((s) => closedWithin(s, 3000)));
    assert.ok(times.every((t) => t !== undefined), 'idle TLS connections are closed');
    assert.ok(Date.now() - started >= 250);
    const again = await open(m.port, 'http/1.1');
    again.destroy();
  } finally {
    await m.close();
  }
});

test('13.11 over TLS, an idle HTTP/2 connection does not hold a graceful shutdown', async () => {
  const m = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }], tls: { cert, key }, limits: { shutdownGraceMs: 10_000 } });
  const session = http2Connect(m.url, { ca });
  session.on('error', () => {});
  try {
    const status = await new Promise<number>((resolve, reject) => {
      const req = session.request({ ':path': '/v2/' });
      req.on('response', (h) => resolve(Number(h[':status'])));
      req.on('error', reject);
      req.resume();
      req.end();
    });
    assert.equal(status, 200);
    const goaway = new Promise<void>((resolve) => session.once('goaway', () => resolve()));
    const started = Date.now();
    await m.shutdown();
    assert.ok(Date.now() - started < 3000, `shutdown took ${Date.now() - started} ms with an idle HTTP/2 client (grace 10 s)`);
    await goaway;
  } finally {
    session.destroy();
    await m.close();
  }
});

// ---- a few HTTP/2 frames by hand: node's own client obeys the limit, a hostile one need not ----

const PREFACE = Buffer.from('PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n');
const TYPE = { HEADERS: 1, RST_STREAM: 3, SETTINGS: 4, PING: 6 } as const;
const FLAG = { ACK: 1, END_HEADERS: 4 } as const;
const SETTINGS_MAX_CONCURRENT_STREAMS = 3;
// HPACK: :method GET, :scheme https, :path /v2/ (literal, name indexed), :authority 127.0.0.1 (literal).
const REQUEST_BLOCK = Buffer.concat([Buffer.from([0x82, 0x87, 0x04, 4]), Buffer.from('/v2/'), Buffer.from([0x01, 9]), Buffer.from('127.0.0.1')]);

function frame(type: number, flags: number, stream: number, payload: Buffer): Buffer {
  const head = Buffer.alloc(9);
  head.writeUIntBE(payload.length, 0, 3);
  head.writeUInt8(type, 3);
  head.writeUInt8(flags, 4);
  head.writeUInt32BE(stream, 5);
  return Buffer.concat([head, payload]);
}

function settingValue(payload: Buffer, id: number): number | undefined {
  for (let i = 0; i + 6 <= payload.length; i += 6) if (payload.readUInt16BE(i) === id) return payload.readUInt32BE(i + 2);
  return undefined;
}

interface Frame {
  type: number;
  flags: number;
  stream: number;
  payload: Buffer;
}

/** Frames as they arrive; next() waits for the first one (not yet taken) that matches. */
function readFrames(s: TLSSocket): { next(match: (f: Frame) => boolean): Promise<Frame> } {
  let buf = Buffer.alloc(0);
  const queue: Frame[] = [];
  let waiter: (() => void) | undefined;
  let ended = false;
  s.on('data', (c: Buffer) => {
    buf = Buffer.concat([buf, c]);
    while (buf.length >= 9 && buf.length >= 9 + buf.readUIntBE(0, 3)) {
      const len = buf.readUIntBE(0, 3);
      queue.push({ type: buf[3], flags: buf[4], stream: buf.readUInt32BE(5) & 0x7fffffff, payload: buf.subarray(9, 9 + len) });
      buf = buf.subarray(9 + len);
    }
    waiter?.();
  });
  s.on('close', () => {
    ended = true;
    waiter?.();
  });
  return {
    async next(match) {
      for (;;) {
        const i = queue.findIndex(match);
        if (i >= 0) return queue.splice(i, 1)[0];
        if (ended) throw new Error('connection closed before the frame came');
        await new Promise<void>((r) => (waiter = r));
      }
    },
  };
}
