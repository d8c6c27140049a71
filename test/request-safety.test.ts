// No request can stop the process: a client that leaves a streaming prewarm, and however
// a request ends, the serve process keeps serving and logs no uncaught error.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { request as httpRequest } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, serveChild, sha256 } from './helpers.js';

const MB = 1024 * 1024;
const big = largeBlobImage('library/big', '1', 24 * MB, 'request-safety');
const [bigDigest] = [...big.blobs].sort((a, b) => b[1].length - a[1].length)[0];

let up: FakeUpstream;
let dir: string;
let config: string;

before(async () => {
  up = await FakeUpstream.start();
  up.addImage(big);
  dir = await mkdtemp(join(tmpdir(), 'regmirror-safety-'));
  config = join(dir, 'mirror.yaml');
  await writeFile(config, `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
});
after(async () => {
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

/** POSTs a prewarm and destroys the connection once the first progress line has arrived. */
function abandonPrewarm(base: string, images: string[]): Promise<void> {
  const { hostname, port } = new URL(base);
  return new Promise((resolve, reject) => {
    const req = httpRequest({ host: hostname, port, path: '/_regmirror/prewarm', method: 'POST', headers: { 'content-type': 'application/json' } }, (res) => {
      let text = '';
      res.on('data', (c: Buffer) => {
        text += c.toString();
        if (/"type":"progress"/.test(text)) {
          req.destroy();
          resolve();
        }
      });
      res.on('end', () => reject(new Error(`the prewarm ended before a progress line: ${text}`)));
    });
    req.on('error', (err) => (req.destroyed ? undefined : reject(err)));
    req.end(JSON.stringify({ images }));
  });
}

async function blobDigest(url: string): Promise<string> {
  const res = await request(url, { signal: AbortSignal.timeout(30_000) });
  assert.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  for await (const chunk of res.body) hash.update(chunk as Buffer);
  return 'sha256:' + hash.digest('hex');
}

test('13.1 a client that leaves a streaming prewarm does not stop the server, which then serves the image', async () => {
  up.faults = { blobBytesPerSecond: 8 * MB };
  const s = serveChild(config);
  try {
    const base = await s.url;
    await abandonPrewarm(base, ['library/big:1']);
    // Joins the download the prewarm started: it outlasts many progress ticks after the cut.
    const digest = await blobDigest(`${base}/v2/library/big/blobs/${bigDigest}`).catch((err: Error) => `${err.message}\n${s.stderr()}`);
    assert.equal(digest, bigDigest);
    const manifest = await get(`${base}/v2/library/big/manifests/1`);
    assert.equal(manifest.status, 200);
    assert.equal(sha256(manifest.body), big.root.digest);
    assert.equal((await get(`${base}/healthz`)).status, 200);
    assert.doesNotMatch(s.stderr(), /uncaught|ERR_INVALID_STATE/i);
  } finally {
    up.faults = {};
    s.kill('SIGKILL');
    await s.exited;
  }
});
