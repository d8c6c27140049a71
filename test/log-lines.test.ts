// The log as an operator reads it, from `regmirror serve` run as a process: request lines
// written when the body ends (bytes, client, cut transfers), shutdown's start and end,
// probes at debug, upstream and token traces without secrets, text or JSON, and network
// errors that name the upstream, its URL and the cause.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { createLogger } from '../src/log.js';
import { get, serveChild, type ChildServer } from './helpers.js';
import { freePort } from './support/daemons.js';

const MB = 1024 * 1024;
const PASSWORD = 's3cret-hub-password';

let up: FakeUpstream;
let dir: string;
const big = largeBlobImage('library/big', '1', 64 * MB, 'log-lines-big');
const [bigDigest] = [...big.blobs].sort((a, b) => b[1].length - a[1].length)[0];
const small = largeBlobImage('library/small', '1', 64 * 1024, 'log-lines-small');

before(async () => {
  up = await FakeUpstream.start({ credentials: { username: 'hub-user', password: PASSWORD } });
  up.addImage(big);
  up.addImage(small);
  dir = await mkdtemp(join(tmpdir(), 'regmirror-log-lines-'));
});
after(async () => {
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

type Line = Record<string, unknown> & { msg: string; level: string };

/** Writes a config and starts `regmirror serve` on it. */
async function serve(name: string, extra: string, upstreams = ''): Promise<ChildServer> {
  const file = join(dir, `${name}.yaml`);
  await writeFile(
    file,
    `listen: "127.0.0.1:0"\ndataDir: ${join(dir, name)}\n${extra}\ndefaultUpstream: docker.io\nupstreams:\n` +
      `  docker.io:\n    url: ${up.url}\n    credentials:\n      username: hub-user\n      password: ${PASSWORD}\n${upstreams}`,
  );
  return serveChild(file);
}

function lines(s: ChildServer): Line[] {
  return s.stderr().split('\n').filter(Boolean).map((l) => JSON.parse(l) as Line);
}

/** Waits for a log line the predicate picks. */
async function waitLine(s: ChildServer, pick: (l: Line) => boolean, timeoutMs = 15_000): Promise<Line> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const found = lines(s).find(pick);
    if (found) return found;
    if (Date.now() > deadline) throw new Error(`no such log line in:\n${s.stderr()}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function stop(s: ChildServer): Promise<void> {
  s.kill('SIGTERM');
  await s.exited;
}

describe('18.6 a debug mirror, JSON by default', () => {
  let s: ChildServer;
  let url: string;
  before(async () => {
    s = await serve('debug', 'log:\n  level: debug');
    url = await s.url;
  });
  after(() => stop(s));

  test('18.6 a blob cut mid-way is logged when it ends: aborted, bytes short of its size, the client, the whole duration', async () => {
    const warm = await request(`${url}/v2/library/big/blobs/${bigDigest}`);
    await warm.body.dump({ limit: Infinity });
    await waitLine(s, (l) => l.msg === 'request' && l.path === `/v2/library/big/blobs/${bigDigest}` && l.status === 200);
    const { hostname, port } = new URL(url);
    let firstByte = 0;
    let received = 0;
    await new Promise<void>((resolve, reject) => {
      const req = httpRequest({ host: hostname, port, path: `/v2/library/big/blobs/${bigDigest}`, headers: { 'x-request-id': 'cut-mid-way' } }, (res) => {
        res.on('data', (c: Buffer) => {
          firstByte ||= Date.now();
          received += c.length;
          // A slow reader: pause a while after the first few MB, then hang up.
          if (received >= 4 * MB && !res.isPaused()) {
            res.pause();
            setTimeout(() => {
              req.destroy();
              resolve();
            }, 400);
          }
        });
      });
      req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
      req.end();
    });
    // The server began before its first byte reached the client: its time covers at least this.
    const transfer = Date.now() - firstByte;
    const line = await waitLine(s, (l) => l.msg === 'request' && l.id === 'cut-mid-way');
    assert.equal(line.level, 'info');
    assert.equal(line.status, 200);
    assert.equal(line.aborted, true);
    assert.equal(typeof line.bytes, 'number');
    assert.ok((line.bytes as number) >= received, `logged ${line.bytes} bytes, the client got ${received}`);
    assert.ok((line.bytes as number) < 64 * MB, `logged ${line.bytes} bytes of a 64 MiB blob that was cut`);
    assert.equal(line.client, '127.0.0.1');
    assert.ok((line.ms as number) >= transfer, `logged ${line.ms} ms; the transfer ran ${transfer} ms before the client hung up`);
  });

  test('18.6 a complete answer logs the bytes sent and the client', async () => {
    const r = await get(`${url}/v2/library/small/manifests/1`, { headers: { 'x-request-id': 'manifest-bytes' } });
    assert.equal(r.status, 200);
    const line = await waitLine(s, (l) => l.msg === 'request' && l.id === 'manifest-bytes');
    assert.equal(line.bytes, r.body.length);
    assert.equal(line.client, '127.0.0.1');
    assert.equal(line.aborted, undefined);
  });

  test('18.6 HEADs of a manifest and a blob are answered and logged once each, and nothing but log lines reaches stderr', async () => {
    const [smallBlob] = [...small.blobs][0];
    for (const [id, path] of [['head-manifest', '/v2/library/small/manifests/1'], ['head-blob', `/v2/library/small/blobs/${smallBlob}`]]) {
      const r = await get(`${url}${path}`, { method: 'HEAD', headers: { 'x-request-id': id } });
      assert.equal(r.status, 200, path);
      assert.equal(r.headers['x-request-id'], id);
      assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
      await waitLine(s, (l) => l.msg === 'request' && l.id === id);
    }
    // A second write of the same answer would surface as a Node error on stderr.
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(lines(s).filter((l) => l.msg === 'request' && String(l.id).startsWith('head-')).length, 2);
  });

  test('18.6 debug traces upstream and token requests, and no secret reaches the log', async () => {
        const traced = await waitLine(s, (l) => l.msg === 'upstream request' && l.method === 'GET' && String(l.url).endsWith('/v2/library/small/manifests/1'));
    assert.equal(traced.level, 'debug');
    assert.equal(traced.status, 200);
    assert.equal(traced.url, `${up.url}/v2/library/small/manifests/1`);
    assert.equal(typeof traced.ms, 'number');
    const token = await waitLine(s, (l) => l.msg === 'token request' && l.scope === 'repository:library/small:pull');
    assert.equal(token.status, 200);
    assert.equal(token.realm, up.realm);
    const bearer = up.requests.map((q) => q.headers.authorization).find((h): h is string => typeof h === 'string' && h.startsWith('Bearer '));
    assert.ok(bearer, 'the upstream was sent a token');
    const text = s.stderr();
    assert.ok(!text.includes(bearer.slice('Bearer '.length)), 'the token is not logged');
    assert.ok(!text.includes(PASSWORD), 'the password is not logged');
    assert.ok(!text.includes(Buffer.from(`hub-user:${PASSWORD}`).toString('base64')), 'the Basic header is not logged');
  });

  test('18.6 /healthz, /readyz and /metrics are logged at debug', async () => {
    for (const path of ['/healthz', '/readyz', '/metrics']) {
      assert.equal((await get(`${url}${path}`)).status, 200);
      const line = await waitLine(s, (l) => l.msg === 'request' && l.path === path);
      assert.equal(line.level, 'debug', path);
    }
  });
});

test('18.6 at info, probes leave no line while pulls do; the log is JSON when stderr is no terminal', async () => {
  const s = await serve('info', 'log:\n  level: info');
  try {
    const url = await s.url;
    for (const path of ['/healthz', '/readyz', '/metrics']) assert.equal((await get(`${url}${path}`)).status, 200);
    assert.equal((await get(`${url}/v2/`)).status, 200);
    await waitLine(s, (l) => l.msg === 'request' && l.path === '/v2/');
    const paths = lines(s).filter((l) => l.msg === 'request').map((l) => l.path);
    assert.deepEqual(paths, ['/v2/']);
    assert.ok(!lines(s).some((l) => l.msg === 'upstream request'), 'no trace at info');
  } finally {
    await stop(s);
  }
});

test('18.6 log.format: text is one readable line per event', async () => {
  const s = await serve('text', 'log:\n  level: debug\n  format: text');
  try {
    const url = await new Promise<string>((resolve, reject) => {
      const deadline = Date.now() + 20_000;
      const poll = () => {
        const m = /INFO listening url=(\S+)/.exec(s.stderr());
        if (m) return resolve(m[1]);
        if (Date.now() > deadline) return reject(new Error(`no listening line in:\n${s.stderr()}`));
        setTimeout(poll, 20);
      };
      poll();
    });
    assert.equal((await get(`${url}/v2/library/small/manifests/1`)).status, 200);
    const deadline = Date.now() + 10_000;
    let line: string | undefined;
    while (!(line = s.stderr().split('\n').find((l) => l.includes(' INFO request GET /v2/library/small/manifests/1 ')))) {
      if (Date.now() > deadline) throw new Error(`no request line in:\n${s.stderr()}`);
      await new Promise((r) => setTimeout(r, 20));
    }
    assert.match(line, /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z INFO request GET \/v2\/library\/small\/manifests\/1 200 [\d.]+ms .*\bbytes=\d+ client=127\.0\.0\.1 upstream=docker\.io repo=library\/small/);
    assert.match(s.stderr(), / DEBUG token request .*realm=\S+ .*scope=repository:library\/small:pull .*status=200/);
    assert.ok(!s.stderr().trimStart().startsWith('{'), 'no JSON lines');
    assert.ok(!s.stderr().includes(PASSWORD));
  } finally {
    s.kill('SIGTERM');
    await s.exited;
  }
});

test('18.6 text lines are redacted as JSON lines are', () => {
  const out: string[] = [];
  const log = createLogger('info', (l) => out.push(l), { format: 'text' });
  log.info('config', { password: 'hunter2', location: 'https://bucket.example/blob?X-Amz-Signature=abc123&x=1', note: 'two words' });
  assert.equal(out.length, 1);
  assert.match(out[0], / INFO config password=\[redacted\] location=https:\/\/bucket\.example\/blob\?\[redacted\] note="two words"$/);
  assert.ok(!out[0].includes('hunter2') && !out[0].includes('abc123'));
});

test('18.6 shutdown logs its start with the grace, and its end with the responses it cut and how long it took', async () => {
  up.faults = { blobBytesPerSecond: 4 * MB };
  const slow = largeBlobImage('library/slowpoke', '1', 40 * MB, 'log-lines-slow');
  up.addImage(slow);
  const [slowDigest] = [...slow.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  const s = await serve('shutdown', 'limits:\n  shutdownGrace: 1s');
  try {
    const url = await s.url;
    const res = await request(`${url}/v2/library/slowpoke/blobs/${slowDigest}`, { headers: { 'x-request-id': 'slow-at-shutdown' } });
    assert.equal(res.statusCode, 200);
    const body = (async () => {
      try {
        for await (const _ of res.body);
        return 'complete';
      } catch {
        return 'cut';
      }
    })();
    const signalled = Date.now();
    s.kill('SIGTERM');
    assert.equal(await body, 'cut');
    assert.equal((await s.exited).code, 0);
    const took = Date.now() - signalled;
    const start = lines(s).find((l) => l.msg === 'shutting down');
    const end = lines(s).find((l) => l.msg === 'shut down');
    assert.ok(start, 'a line at the start');
    assert.equal(start.graceMs, 1000);
    assert.ok(end, 'a line at the end');
    assert.equal(end.cut, 1);
    assert.ok((end.ms as number) >= 1000 && (end.ms as number) <= took, `took ${end.ms} ms, grace 1 s, exited after ${took} ms`);
    const cutLine = lines(s).find((l) => l.msg === 'request' && l.id === 'slow-at-shutdown');
    assert.equal(cutLine?.aborted, true);
  } finally {
    up.faults = {};
    s.kill('SIGKILL');
  }
});

describe('18.6 network errors name the upstream, its URL and the cause', () => {
  let silent: Server;
  let s: ChildServer;
  let url: string;
  let closedPort: number;
  let silentPort: number;
  before(async () => {
    closedPort = await freePort();
    // Accepts, reads the request, never answers.
    silent = createServer(() => undefined);
    await new Promise<void>((r) => silent.listen(0, '127.0.0.1', r));
    silentPort = (silent.address() as { port: number }).port;
    s = await serve(
      'network',
      'log:\n  level: info',
      `  closed.test:\n    url: http://127.0.0.1:${closedPort}\n  silent.test:\n    url: http://127.0.0.1:${silentPort}\n    timeouts:\n      headers: 500ms\n`,
    );
    url = await s.url;
  });
  after(async () => {
    await stop(s);
    silent.closeAllConnections();
    await new Promise((r) => silent.close(r));
  });

  const message = (body: Buffer) => (JSON.parse(body.toString()) as { errors: Array<{ code: string; message: string }> }).errors[0];

  test('18.6 connection refused: 502 UNAVAILABLE naming upstream, URL and cause, and the same in the log', async () => {
    const r = await get(`${url}/v2/closed.test/library/x/manifests/1`);
    assert.equal(r.status, 502);
    const err = message(r.body);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.message, `closed.test (http://127.0.0.1:${closedPort}) unreachable: connection refused`);
    const line = await waitLine(s, (l) => l.msg === 'request failed' && l.path === '/v2/closed.test/library/x/manifests/1');
    assert.match(JSON.stringify(line.err), /closed\.test \(http:\/\/127\.0\.0\.1:\d+\) unreachable: connection refused/);
  });

  test('18.6 no response headers: 502 UNAVAILABLE naming the headers timeout', async () => {
    const r = await get(`${url}/v2/silent.test/library/x/manifests/1`);
    assert.equal(r.status, 502);
    const err = message(r.body);
    assert.equal(err.code, 'UNAVAILABLE');
    assert.equal(err.message, `silent.test (http://127.0.0.1:${silentPort}): no response headers within 500ms`);
    const line = await waitLine(s, (l) => l.msg === 'request failed' && l.path === '/v2/silent.test/library/x/manifests/1');
    assert.match(JSON.stringify(line.err), /no response headers within 500ms/);
  });
});
