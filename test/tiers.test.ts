// Tiers: node-local mirrors with `parent:` pointing at a central regmirror fetch through
// it, so the upstream sees one download per blob for the whole cluster; when the central
// is gone they ask the upstream themselves (or, without fallback, say the parent failed).
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { createServer, request as httpRequest, type IncomingMessage, type Server } from 'node:http';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { listen } from '../fixtures/http.js';
import { MediaTypes, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { requireTools, skopeo } from './e2e/harness.js';
import { downloadsSettled, errorCode, get, serveChild, sha256, startMirror, type ChildServer, type Mirror } from './helpers.js';

const HUB = { username: 'hubuser', password: 'hub-secret' };
const CENTRAL_TOKEN = 'central-token';
const PARENT_BASIC = 'Basic ' + Buffer.from(`node:${CENTRAL_TOKEN}`).toString('base64');

/** A relay in front of the central that records the Authorization header of every request it passes on. */
class RecordingRelay {
  readonly authorizations: Array<string | undefined> = [];
  readonly #server: Server;
  port = 0;

  constructor(target: URL) {
    this.#server = createServer((req, res) => {
      this.authorizations.push(req.headers.authorization);
      const out = httpRequest({ host: target.hostname, port: target.port, method: req.method, path: req.url, headers: req.headers }, (answer: IncomingMessage) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      });
      out.on('error', () => res.destroy());
      req.pipe(out);
    });
  }

  async start(): Promise<string> {
    this.port = await listen(this.#server);
    return `http://127.0.0.1:${this.port}`;
  }

  stop(): Promise<void> {
    this.#server.closeAllConnections();
    return new Promise((resolve) => this.#server.close(() => resolve()));
  }
}

let up: FakeUpstream;
let dir: string;
let central: ChildServer;
let relay: RecordingRelay;
let parentUrl: string;
let nodeA: Mirror;
let nodeB: Mirror;
let app: FixtureImage;
let other: FixtureImage;
let tool: FixtureImage;

before(async () => {
  // The upstream demands credentials: only the central (and a node falling back) hold them.
  up = await FakeUpstream.start({ credentials: HUB });
  app = await singleImage({ name: 'library/app', tag: '1', seed: 'tiers-app', layerSizes: [64 * 1024, 200 * 1024, 8 * 1024] });
  other = await singleImage({ name: 'library/other', tag: '1', seed: 'tiers-other', layerSizes: [32 * 1024, 16 * 1024] });
  tool = await singleImage({ name: 'library/tool', tag: '2', seed: 'tiers-tool', layerSizes: [48 * 1024, 24 * 1024] });
  up.addImage(app);
  up.addImage(other);
  up.addImage(tool);
  dir = await mkdtemp(join(tmpdir(), 'regmirror-tiers-'));
  const config = join(dir, 'central.yaml');
  await writeFile(
    config,
    [
      'listen: "127.0.0.1:0"',
      `dataDir: ${join(dir, 'central')}`,
      'auth:',
      `  tokens: [${CENTRAL_TOKEN}]`,
      'upstreams:',
      '  docker.io:',
      `    url: ${up.url}`,
      '    credentials:',
      `      username: ${HUB.username}`,
      `      password: ${HUB.password}`,
      '',
    ].join('\n'),
  );
  central = serveChild(config);
  relay = new RecordingRelay(new URL(await central.url));
  parentUrl = await relay.start();
  const node = () =>
    startMirror({
      upstreams: [{ name: 'docker.io', url: up.url, credentials: HUB }],
      defaultUpstream: 'docker.io',
      parent: { url: parentUrl, credentials: { username: 'node', password: CENTRAL_TOKEN }, fallback: true },
    });
  [nodeA, nodeB] = await Promise.all([node(), node()]);
});

after(async () => {
  await Promise.all([nodeA?.stop(), nodeB?.stop()]);
  await relay?.stop();
  central?.kill();
  await central?.exited;
  await up?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Pulls `name:tag` as a client would (manifest, config, layers), checking every digest; returns the digests fetched. */
async function pullImage(base: string, name: string, img: FixtureImage): Promise<string[]> {
  const m = await get(`${base}/v2/${name}/manifests/${img.tag}`, { headers: { accept: MediaTypes.ociManifest } });
  assert.equal(m.status, 200, m.body.toString());
  assert.equal(sha256(m.body), img.root.digest);
  const manifest = JSON.parse(m.body.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  const digests = [manifest.config.digest, ...manifest.layers.map((l) => l.digest)];
  for (const d of digests) {
    const b = await get(`${base}/v2/${name}/blobs/${d}`);
    assert.equal(b.status, 200);
    assert.equal(sha256(b.body), d);
  }
  return digests;
}

test('15.8 tiers: a pull through two node-local mirrors costs the upstream one download per blob', async () => {
  // `app` is Docker Hub's library/app: the node normalises it before asking the parent.
  const digests = await pullImage(nodeA.url, 'app', app);
  await downloadsSettled(nodeA);
  const relayedForA = relay.authorizations.length;
  assert.ok(relayedForA >= digests.length + 1, 'node A fetched through the parent');
  const afterA = { manifestGet: up.counters.manifestGet, blobGet: up.counters.blobGet };
  assert.equal(afterA.manifestGet, 1);

  assert.deepEqual(await pullImage(nodeB.url, 'app', app), digests);
  await downloadsSettled(nodeB);
  assert.ok(relay.authorizations.length > relayedForA, 'node B fetched through the parent too');
  // The second node was served by the parent: the upstream saw nothing new.
  assert.equal(up.counters.manifestGet, 1);
  assert.equal(up.counters.blobGet, afterA.blobGet);
  for (const d of digests) assert.equal(up.counters.blobGetByDigest.get(d), 1, `one upstream GET of ${d}`);
  assert.equal(up.counters.blobGet, digests.length);
});

test('15.8 tiers: the upstream\'s credentials never reach the parent; the parent\'s go only to it', async () => {
  assert.ok(relay.authorizations.length > 0);
  const upstreamBasic = 'Basic ' + Buffer.from(`${HUB.username}:${HUB.password}`).toString('base64');
  for (const a of relay.authorizations) {
    // The first request of each node is answered by the central's Basic challenge.
    assert.ok(a === undefined || a === PARENT_BASIC, `the parent saw ${a}`);
    assert.notEqual(a, upstreamBasic);
  }
  assert.ok(relay.authorizations.filter((a) => a === PARENT_BASIC).length >= 2);
  // What the nodes asked the parent for carried no upstream token either.
  assert.ok(up.requests.every((r) => r.headers.authorization !== PARENT_BASIC), 'the parent\'s credentials went to the upstream');
});

test('15.8 tiers: skopeo copies an image through a node-local mirror, fetched once through the parent', async (t) => {
  if (!requireTools(t, 'skopeo')) return;
  const out = join(dir, 'skopeo-tool');
  const relayed = relay.authorizations.length;
  const r = await skopeo(['copy', '--src-tls-verify=false', `docker://${new URL(nodeB.url).host}/tool:2`, `dir:${out}`]);
  assert.equal(r.code, 0, r.stderr);
  assert.equal(sha256(await readFile(join(out, 'manifest.json'))), tool.root.digest);
  const manifest = JSON.parse(tool.root.bytes.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  for (const d of [manifest.config.digest, ...manifest.layers.map((l) => l.digest)]) {
    assert.equal(sha256(await readFile(join(out, d.slice('sha256:'.length)))), d);
    assert.equal(up.counters.blobGetByDigest.get(d), 1, `one upstream GET of ${d}`);
  }
  assert.ok(relay.authorizations.length > relayed, 'node B fetched through the parent');
  await downloadsSettled(nodeB);
  // Node A's pull of the same image is the parent's to serve.
  const before = up.counters.blobGet;
  await pullImage(nodeA.url, 'tool', tool);
  assert.equal(up.counters.blobGet, before);
});

test('15.8 tiers: with the parent down and parentFallback: true the pull still works', async () => {
  central.kill('SIGKILL');
  await central.exited;
  await relay.stop();
  const before = up.counters.blobGet;
  const digests = await pullImage(nodeA.url, 'other', other);
  assert.equal(up.counters.blobGet - before, digests.length, 'fetched from the upstream itself, with the node\'s own credentials');
  const metrics = (await get(`${nodeA.url}/metrics`)).body.toString();
  const fallbacks = /^regmirror_parent_fallbacks_total\{upstream="docker.io"\} (\d+)/m.exec(metrics);
  assert.ok(fallbacks && Number(fallbacks[1]) >= 1, 'the fallback is counted');
  // What node B already has is served from its own disk, parent or not.
  assert.deepEqual(await pullImage(nodeB.url, 'app', app), await pullImage(nodeA.url, 'app', app));
});

test('15.8 tiers: with parentFallback: false a parent outage is UNAVAILABLE naming the parent', async (t) => {
  // The central and its relay are gone (previous test): nothing listens on the relay's port.
  const strict = await startMirror({
    upstreams: [{ name: 'docker.io', url: up.url, credentials: HUB }],
    defaultUpstream: 'docker.io',
    parent: { url: parentUrl, fallback: false },
  });
  t.after(() => strict.stop());
  const before = up.counters.total;
  const res = await get(`${strict.url}/v2/other/manifests/1`);
  assert.equal(res.status, 502);
  assert.equal(errorCode(res), 'UNAVAILABLE');
  assert.match(res.body.toString(), new RegExp(`parent 127\\.0\\.0\\.1:${relay.port}`));
  const blob = await get(`${strict.url}/v2/other/blobs/${other.root.digest}`);
  assert.equal(blob.status, 502);
  assert.equal(up.counters.total, before, 'the upstream was not asked');
});
