// SIGTERM during a 200 MB pull: the running process stops accepting, the response in
// flight finishes within the grace period, nothing partial is left, and the restarted
// server serves the blob from its store.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { connect } from 'node:net';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { serveChild } from './helpers.js';

const MB = 1024 * 1024;

let up: FakeUpstream;
let dir: string;
const img = largeBlobImage('library/huge', '1', 200 * MB, 'huge');
const [digest] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];

before(async () => {
  up = await FakeUpstream.start();
  up.addImage(img);
  dir = await mkdtemp(join(tmpdir(), 'regmirror-shutdown-'));
  await writeFile(
    join(dir, 'mirror.yaml'),
    `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\nlog:\n  level: info\nlimits:\n  shutdownGrace: 20s\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`,
  );
});
after(async () => {
  await up.close();
  await rm(dir, { recursive: true, force: true });
});

test('SIGTERM mid-pull: the response finishes, the process exits, nothing partial is left', async () => {
  up.faults = { blobBytesPerSecond: 80 * MB };
  const first = await serveChild(join(dir, 'mirror.yaml'));
  const firstUrl = await first.url;
  const res = await request(`${firstUrl}/v2/library/huge/blobs/${digest}`, { signal: AbortSignal.timeout(60_000) });
  assert.equal(res.statusCode, 200);
  const hash = createHash('sha256');
  let received = 0;
  let signalled = false;
  for await (const chunk of res.body) {
    hash.update(chunk as Buffer);
    received += (chunk as Buffer).length;
    if (!signalled && received > 20 * MB) {
      signalled = true;
      first.kill('SIGTERM');
    }
  }
  assert.ok(signalled);
  assert.equal(received, 200 * MB);
  assert.equal('sha256:' + hash.digest('hex'), digest);
  assert.equal((await first.exited).code, 0);
  assert.deepEqual(await readdir(join(dir, 'data', 'tmp')), []);

  up.faults = {};
  up.resetCounters();
  const second = await serveChild(join(dir, 'mirror.yaml'));
  try {
    const again = await request(`${await second.url}/v2/library/huge/blobs/${digest}`);
    const h = createHash('sha256');
    for await (const chunk of again.body) h.update(chunk as Buffer);
    assert.equal('sha256:' + h.digest('hex'), digest);
    assert.equal(up.counters.blobGet, 0, 'served from the store after the restart');
  } finally {
    second.kill('SIGTERM');
    await second.exited;
  }
});

test('a new connection is refused once SIGTERM arrived', async () => {
  up.faults = { blobBytesPerSecond: 20 * MB };
  const s = await serveChild(join(dir, 'mirror.yaml'));
  const slow = largeBlobImage('library/slow', '1', 40 * MB, 'slow');
  up.addImage(slow);
  const [slowDigest] = [...slow.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  const url = await s.url;
  const res = await request(`${url}/v2/library/slow/blobs/${slowDigest}`);
  const drained = res.body.dump({ limit: Infinity });
  s.kill('SIGTERM');
  await new Promise((r) => setTimeout(r, 300));
  await assert.rejects(request(`${url}/v2/`, { signal: AbortSignal.timeout(5000) }));
  await drained;
  assert.equal((await s.exited).code, 0);
  up.faults = {};
});

/** Resolves once the address refuses connections: the server has stopped accepting. */
async function refusing(url: string): Promise<void> {
  const { hostname, port } = new URL(url);
  for (;;) {
    const refused = await new Promise<boolean>((resolve) => {
      const s = connect(Number(port), hostname, () => {
        s.destroy();
        resolve(false);
      });
      s.once('error', () => resolve(true));
    });
    if (refused) return;
    await new Promise((r) => setTimeout(r, 20));
  }
}

test('13.7 a second SIGTERM stops waiting for shutdownGrace and cuts what is left', async (t) => {
  up.faults = { blobBytesPerSecond: 4 * MB };
  const slow = largeBlobImage('library/slower', '1', 40 * MB, 'slower');
  up.addImage(slow);
  const [slowDigest] = [...slow.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  const s = serveChild(join(dir, 'mirror.yaml'));
  try {
    const url = await s.url;
    const res = await request(`${url}/v2/library/slower/blobs/${slowDigest}`, { signal: AbortSignal.timeout(60_000) });
    assert.equal(res.statusCode, 200);
    let received = 0;
    const body = (async () => {
      try {
        for await (const chunk of res.body) received += (chunk as Buffer).length;
        return 'complete';
      } catch {
        return 'cut';
      }
    })();
    s.kill('SIGTERM');
    await refusing(url);
    // The first signal lets the response go on.
    const before = received;
    while (received === before) await new Promise((r) => setTimeout(r, 20));
    const second = Date.now();
    s.kill('SIGTERM');
    const exit = await s.exited;
    const tookMs = Date.now() - second;
    t.diagnostic(`exited ${tookMs} ms after the second SIGTERM`);
    assert.equal(exit.code, 0);
    assert.ok(tookMs < 5000, `exited ${tookMs} ms after the second SIGTERM (grace is 20 s, the transfer needs ~10 s)`);
    assert.equal(await body, 'cut');
    assert.ok(received < 40 * MB);
    assert.deepEqual(await readdir(join(dir, 'data', 'tmp')), [], 'the abandoned download left no temp file');
  } finally {
    s.kill('SIGKILL');
    up.faults = {};
  }
});
