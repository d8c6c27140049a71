// Digest algorithms: sha256 is what the mirror stores and verifies. sha512, the other
// algorithm the OCI specs register, names content that can exist, so it is answered as an
// unsupported digest (DIGEST_INVALID, saying which algorithm is supported), not as a
// malformed one, and never asked upstream; manifests that name sha512 content still pass.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { after, before, test } from 'node:test';
import { MediaTypes, singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, sha256, startMirror, type Mirror } from './helpers.js';

let up: FakeUpstream;
let m: Mirror;
const sha512 = (b: Buffer) => `sha512:${createHash('sha512').update(b).digest('hex')}`;

before(async () => {
  up = await FakeUpstream.start();
  up.addImage(await singleImage({ name: 'library/alg', tag: '1', seed: 'alg' }));
  m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
});
after(async () => {
  await m.stop();
  await up.close();
});

interface ErrorBody {
  errors: Array<{ code: string; message: string; detail?: { digest?: string; supported?: string[] } }>;
}

test('13.12 sha512 digests are answered as unsupported (DIGEST_INVALID naming sha256), with no upstream request', async () => {
  const digest = sha512(Buffer.from('some layer'));
  up.resetCounters();
  for (const path of [`blobs/${digest}`, `manifests/${digest}`]) {
    const r = await get(`${m.url}/v2/library/alg/${path}`);
    assert.equal(r.status, 400, `${path}: ${r.body.toString()}`);
    const [e] = (JSON.parse(r.body.toString()) as ErrorBody).errors;
    assert.equal(e.code, 'DIGEST_INVALID', path);
    assert.match(e.message, /sha512 .*not supported/, path);
    assert.deepEqual(e.detail, { digest, supported: ['sha256'] }, path);
    assert.equal((await get(`${m.url}/v2/library/alg/${path}`, { method: 'HEAD' })).status, 400, `HEAD ${path}`);
  }
  // Malformed text is no digest at all, whatever its algorithm says.
  for (const bad of ['sha512:abcdef', `sha512:${'A'.repeat(128)}`, `blake3:${'a'.repeat(64)}`]) {
    const r = await get(`${m.url}/v2/library/alg/blobs/${bad}`);
    assert.equal(r.status, 400, bad);
    const [e] = (JSON.parse(r.body.toString()) as ErrorBody).errors;
    assert.equal(e.code, 'DIGEST_INVALID', bad);
    assert.match(e.message, /^invalid digest/, bad);
  }
  assert.equal(up.counters.total, 0);
});

test('13.12 sha512 a manifest that names sha512 content is still served, and its sha256 blobs too', async () => {
  const layer = Buffer.from('a sha512 layer');
  const config = Buffer.from('{}');
  const body = Buffer.from(JSON.stringify({
    schemaVersion: 2,
    mediaType: MediaTypes.ociManifest,
    config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length },
    layers: [{ mediaType: MediaTypes.ociLayer, digest: sha512(layer), size: layer.length }],
  }));
  const root = { digest: sha256(body), mediaType: MediaTypes.ociManifest, bytes: body };
  up.addImage({ name: 'library/mixed', tag: '1', root, manifests: new Map([[root.digest, root]]), blobs: new Map([[sha256(config), config], [sha512(layer), layer]]) });
  const r = await get(`${m.url}/v2/library/mixed/manifests/1`, { headers: { accept: MediaTypes.ociManifest } });
  assert.equal(r.status, 200);
  assert.deepEqual(r.body, body);
  const c = await get(`${m.url}/v2/library/mixed/blobs/${sha256(config)}`);
  assert.equal(c.status, 200);
  assert.deepEqual(c.body, config);
  assert.equal(errorCode(await get(`${m.url}/v2/library/mixed/blobs/${sha512(layer)}`)), 'DIGEST_INVALID');
});
