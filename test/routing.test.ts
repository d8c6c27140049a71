// Routing (ns, path prefix, default upstream, Docker Hub's library/ rule) and bad input:
// every refusal is a 4xx OCI error, reaches no upstream, and the server keeps serving.
import assert from 'node:assert/strict';
import { createServer, type Server } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { errorCode, get, rawGet, startMirror, type Mirror } from './helpers.js';

describe('routing and bad input', () => {
  let hub: FakeUpstream;
  let ghcr: FakeUpstream;
  let m: Mirror;
  let img: FixtureImage;
  let ghImg: FixtureImage;
  // A listener that counts connections: a refused request must open none to anything.
  let trap: Server;
  let trapConnections = 0;

  before(async () => {
    hub = await FakeUpstream.start();
    ghcr = await FakeUpstream.start();
    img = await singleImage({ name: 'library/alpine', tag: '3', seed: 'alpine' });
    ghImg = await singleImage({ name: 'org/app', tag: 'v1', seed: 'app' });
    hub.addImage(img);
    ghcr.addImage(ghImg);
    trap = createServer((s) => {
      trapConnections++;
      s.destroy();
    });
    await new Promise<void>((r) => trap.listen(0, '127.0.0.1', r));
    m = await startMirror({
      upstreams: [
        { name: 'docker.io', url: hub.url, aliases: ['index.docker.io'] },
        { name: 'ghcr.io', url: ghcr.url },
      ],
      defaultUpstream: 'docker.io',
    });
  });
  after(async () => {
    await m.stop();
    await hub.close();
    await ghcr.close();
    trap.close();
  });
  beforeEach(() => {
    hub.resetCounters();
    ghcr.resetCounters();
  });

  test('GET /v2/ answers {} with the API version header', async () => {
    const r = await get(`${m.url}/v2/`);
    assert.equal(r.status, 200);
    assert.deepEqual(JSON.parse(r.body.toString()), {});
    assert.equal(r.headers['docker-distribution-api-version'], 'registry/2.0');
  });

  test('no ns and no prefix: the default upstream, with library/ for one-component names', async () => {
    for (const name of ['alpine', 'library/alpine']) {
      const r = await get(`${m.url}/v2/${name}/manifests/3`);
      assert.equal(r.status, 200, name);
      assert.equal(r.headers['docker-content-digest'], img.root.digest);
    }
    assert.equal(ghcr.counters.total, 0);
  });

  test('?ns= selects the upstream by name or alias (containerd)', async () => {
    const a = await get(`${m.url}/v2/org/app/manifests/v1?ns=ghcr.io`);
    assert.equal(a.headers['docker-content-digest'], ghImg.root.digest);
    const b = await get(`${m.url}/v2/library/alpine/manifests/3?ns=index.docker.io`);
    assert.equal(b.headers['docker-content-digest'], img.root.digest);
  });

  test('a path prefix selects the upstream, with or without a matching ns (override_path)', async () => {
    const a = await get(`${m.url}/v2/ghcr.io/org/app/manifests/v1`);
    assert.equal(a.status, 200);
    assert.equal(a.headers['docker-content-digest'], ghImg.root.digest);
    const b = await get(`${m.url}/v2/ghcr.io/org/app/manifests/v1?ns=ghcr.io`);
    assert.equal(b.headers['docker-content-digest'], ghImg.root.digest);
    const c = await get(`${m.url}/v2/docker.io/alpine/manifests/3`);
    assert.equal(c.headers['docker-content-digest'], img.root.digest);
  });

  const badRequests: Array<[string, string, number, string]> = [
    ['upper case name', '/v2/Library/Alpine/manifests/3', 400, 'NAME_INVALID'],
    ['dot-dot component', '/v2/library/../alpine/manifests/3', 400, 'NAME_INVALID'],
    ['encoded dot-dot', '/v2/library/%2e%2e/alpine/manifests/3', 400, 'NAME_INVALID'],
    ['encoded slash trick', '/v2/library%2f..%2f..%2fetc/manifests/3', 400, 'NAME_INVALID'],
    ['300-character name', `/v2/${'a'.repeat(300)}/manifests/3`, 400, 'NAME_INVALID'],
    ['empty component', '/v2/library//alpine/manifests/3', 400, 'NAME_INVALID'],
    ['bad tag', '/v2/library/alpine/manifests/-bad', 404, 'MANIFEST_UNKNOWN'],
    ['129-character tag', `/v2/library/alpine/manifests/${'t'.repeat(129)}`, 404, 'MANIFEST_UNKNOWN'],
    ['short digest', '/v2/library/alpine/manifests/sha256:abcd', 404, 'MANIFEST_UNKNOWN'],
    ['blob by tag', '/v2/library/alpine/blobs/latest', 400, 'DIGEST_INVALID'],
    ['unknown ns: metadata address', '/v2/library/alpine/manifests/3?ns=169.254.169.254', 403, 'DENIED'],
    ['unknown ns: trap port', '/v2/library/alpine/manifests/3?ns=127.0.0.1:TRAP', 403, 'DENIED'],
    ['not an API path', '/v2/library/alpine/whatever/3', 404, ''],
    ['outside /v2', '/etc/passwd', 404, ''],
  ];
  for (const [what, path, status, code] of badRequests) {
    test(`refused without upstream traffic: ${what}`, async () => {
      const port = (trap.address() as { port: number }).port;
      const r = await rawGet(m.url, path.replace('TRAP', String(port)));
      assert.equal(r.status, status, `${path}: ${r.body.toString()}`);
      const body = JSON.parse(r.body.toString()) as { errors: Array<{ code: string; message: string }> };
      assert.ok(body.errors[0].message.length > 0);
      if (code) assert.equal(errorCode(r), code);
      assert.equal(hub.counters.total + hub.counters.token, 0);
      assert.equal(ghcr.counters.total + ghcr.counters.token, 0);
      assert.equal(trapConnections, 0);
    });
  }

  test('13.13 a manifest reference that cannot exist is 404 MANIFEST_UNKNOWN, with no upstream request', async () => {
    // What the distribution-spec conformance suite asks (pull workflow), and its neighbours.
    for (const ref of ['.INVALID_MANIFEST_NAME', '-rc1', 'a+b', 'x'.repeat(129), 'sha256:abcd', `sha256:${'A'.repeat(64)}`, 'latest:1', `md5:${'a'.repeat(32)}`, 'sha512:abc']) {
      for (const method of ['GET', 'HEAD'] as const) {
        const r = await get(`${m.url}/v2/library/alpine/manifests/${ref}`, { method });
        assert.equal(r.status, 404, `${method} ${ref}: ${r.body.toString()}`);
        if (method === 'GET') assert.equal(errorCode(r), 'MANIFEST_UNKNOWN', ref);
      }
    }
    assert.equal(hub.counters.total + hub.counters.token, 0);
    // A well-formed tag that the upstream lacks is asked for, and is not found either.
    const missing = await get(`${m.url}/v2/library/alpine/manifests/no-such-tag`);
    assert.equal(missing.status, 404);
    assert.equal(errorCode(missing), 'MANIFEST_UNKNOWN');
    assert.ok(hub.counters.total > 0);
  });

  test('18.6 a prefix that looks like a registry host but names no upstream is refused, not sent to Docker Hub', async () => {
    for (const [host, path] of [['quay.io', 'quay.io/org/app'], ['localhost', 'localhost/app'], ['registry.example.com', 'registry.example.com/team/app']]) {
      const r = await get(`${m.url}/v2/${path}/manifests/v1`);
      assert.equal(r.status, 403, `${path}: ${r.body.toString()}`);
      assert.equal(errorCode(r), 'DENIED');
      const body = JSON.parse(r.body.toString()) as { errors: Array<{ message: string }> };
      assert.equal(body.errors[0].message, `${host} is not an upstream of this mirror`);
    }
    const port = await rawGet(m.url, '/v2/localhost:5000/app/manifests/v1');
    assert.equal(errorCode(port), 'DENIED', port.body.toString());
    assert.equal(hub.counters.total + hub.counters.token, 0);
    // A configured host prefix, and a Docker Hub namespace, still route.
    assert.equal((await get(`${m.url}/v2/ghcr.io/org/app/manifests/v1`)).status, 200);
    assert.equal((await get(`${m.url}/v2/library/alpine/manifests/3`)).status, 200);
  });

  test('the server keeps serving after bad input', async () => {
    const r = await get(`${m.url}/v2/alpine/manifests/3`);
    assert.equal(r.status, 200);
  });

  test('with no default upstream, a bare name is refused with no upstream traffic', async () => {
    const strict = await startMirror({ upstreams: [{ name: 'ghcr.io', url: ghcr.url }] });
    try {
      const r = await get(`${strict.url}/v2/library/alpine/manifests/3`);
      assert.equal(r.status, 400);
      assert.equal(errorCode(r), 'NAME_INVALID');
      const unknownHost = await get(`${strict.url}/v2/quay.io/org/app/manifests/3`);
      assert.equal(unknownHost.status, 403);
      assert.equal(errorCode(unknownHost), 'DENIED');
      assert.equal(ghcr.counters.total, 0);
    } finally {
      await strict.stop();
    }
  });
});
