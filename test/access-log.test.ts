// The access log and the requests metric carry the status a streamed blob really got
// (206 for a range) and say when its transfer was cut.
import assert from 'node:assert/strict';
import { request as httpRequest } from 'node:http';
import { after, before, test } from 'node:test';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { downloadsSettled, get, startMirror, type Mirror } from './helpers.js';

const MB = 1024 * 1024;
const img = largeBlobImage('library/logged', '1', 8 * MB, 'access-log');
const [digest] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
const cutImg = largeBlobImage('library/cut', '1', 4 * MB, 'access-log-cut');
const [cutDigest] = [...cutImg.blobs].sort((a, b) => b[1].length - a[1].length)[0];

let up: FakeUpstream;
let m: Mirror;

before(async () => {
  up = await FakeUpstream.start();
  up.addImage(img);
  up.addImage(cutImg);
  m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
  assert.equal((await get(`${m.url}/v2/library/logged/blobs/${digest}`)).status, 200);
  await downloadsSettled(m);
});
after(async () => {
  await m.stop();
  await up.close();
});

interface AccessLine {
  msg: string;
  path: string;
  status: number;
  aborted?: boolean;
  bytes?: number;
}

/** Waits for the access-log line of the request with this id. */
async function accessLine(id: string): Promise<AccessLine> {
  const deadline = Date.now() + 10_000;
  for (;;) {
    const line = m.logs.map((l) => JSON.parse(l) as AccessLine & { id?: string }).find((l) => l.msg === 'request' && l.id === id);
    if (line) return line;
    if (Date.now() > deadline) throw new Error(`no access-log line for ${id}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}

async function requestsMetric(labels: string): Promise<number> {
  const text = (await get(`${m.url}/metrics`)).body.toString();
  const line = text.split('\n').find((l) => l.startsWith('regmirror_http_requests_total{') && l.includes(labels));
  return line ? Number(line.split(' ').at(-1)) : 0;
}

/** GETs a blob, destroying the connection after the first body bytes. */
function cutAfterFirstBytes(path: string, id: string): Promise<void> {
  const { hostname, port } = new URL(m.url);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path, headers: { 'x-request-id': id } }, (res) => {
      res.once('data', () => {
        req.destroy();
        resolve();
      });
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end();
  });
}

test('13.12 access log and metrics: a range answer is logged and counted as 206', async () => {
  const r = await get(`${m.url}/v2/library/logged/blobs/${digest}`, { headers: { range: 'bytes=0-99', 'x-request-id': 'range-1' } });
  assert.equal(r.status, 206);
  const line = await accessLine('range-1');
  assert.equal(line.status, 206);
  assert.equal(line.aborted, undefined);
  assert.equal(line.bytes, 100, 'the bytes of the range, not of the blob');
  assert.ok((await requestsMetric('status="206"')) >= 1, 'the requests metric counts a 206');
});

test('13.12 access log and metrics: a transfer the client cut is marked aborted', async () => {
  const before = await requestsMetric('result="aborted"');
  await cutAfterFirstBytes(`/v2/library/logged/blobs/${digest}`, 'cut-by-client');
  const line = await accessLine('cut-by-client');
  assert.equal(line.status, 200);
  assert.equal(line.aborted, true);
  assert.equal(await requestsMetric('result="aborted"'), before + 1);
});

test('13.12 access log and metrics: a download the upstream cut is marked aborted, not a plain 200', async () => {
  up.faults = { cutBlobAfter: 1 * MB };
  try {
    const res = await new Promise<{ complete: boolean }>((resolve) => {
      const { hostname, port } = new URL(m.url);
      const req = httpRequest({ host: hostname, port, path: `/v2/library/cut/blobs/${cutDigest}`, headers: { 'x-request-id': 'cut-by-upstream' } }, (r) => {
        r.resume();
        r.on('end', () => resolve({ complete: r.complete }));
        r.on('error', () => resolve({ complete: false }));
      });
      req.on('error', () => resolve({ complete: false }));
      req.end();
    });
    assert.equal(res.complete, false);
    const line = await accessLine('cut-by-upstream');
    assert.equal(line.aborted, true);
  } finally {
    up.faults = {};
  }
});
