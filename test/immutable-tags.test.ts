// Immutable tags through a real server process: a tag policy per repository (keep,
// refuse, follow), the fake upstream re-pointing v1.0 after it was served, a 1 s tag TTL.
// What clients get is checked with plain GETs and skopeo; what the guard recorded with
// the real `regmirror tags ls` and `tags accept` beside the running server, on the data
// dir and through --server with the admin token.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { request } from 'undici';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { requireTools, skopeoCopyVerified } from './e2e/harness.js';
import { cli, errorCode, get, serveChild, until, type ChildServer } from './helpers.js';

const ACCEPT = [
  'application/vnd.oci.image.index.v1+json',
  'application/vnd.oci.image.manifest.v1+json',
  'application/vnd.docker.distribution.manifest.list.v2+json',
  'application/vnd.docker.distribution.manifest.v2+json',
].join(', ');
const TOKEN = 'tags-admin-token';
const TTL_MS = 1000;

interface Change {
  image: string;
  class: string;
  guarded: string;
  upstreamDigest: string;
  since: string;
  action: string;
}

let dir: string;
let config: string;
let up: FakeUpstream;
let server: ChildServer;
let url: string;
/** Per repository: the image v1.0 first names, and the one it is re-pointed to. */
const images = new Map<string, { first: FixtureImage; second: FixtureImage }>();

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-immutable-'));
  up = await FakeUpstream.start();
  for (const repo of ['keep', 'refuse', 'follow', 'loose']) {
    const name = `library/${repo}`;
    const first = await singleImage({ name, tag: 'v1.0', seed: `${repo}-1` });
    const second = await singleImage({ name, tag: 'next', seed: `${repo}-2` });
    up.addImage(first);
    up.addImage(second);
    images.set(repo, { first, second });
  }
  up.addImage({ ...images.get('loose')!.first, tag: 'latest' });
  config = join(dir, 'mirror.yaml');
  await writeFile(
    config,
    `listen: "127.0.0.1:0"
dataDir: ${join(dir, 'data')}
defaultUpstream: docker.io
adminToken: ${TOKEN}
log:
  level: debug
  format: json
upstreams:
  docker.io:
    url: ${up.url}
    tagTtl: ${TTL_MS / 1000}s
policies:
  - match: { repositories: [library/keep] }
    tags: { immutable: ["v*"], onChange: keep }
  - match: { repositories: [library/refuse] }
    tags: { immutable: ["v*", "[0-9]*.*"], onChange: refuse }
  - match: { repositories: [library/follow, library/loose] }
    tags: { immutable: ["v*"], onChange: follow }
`,
  );
  server = serveChild(config);
  url = await server.url;
});

after(async () => {
  server?.kill();
  await server?.exited;
  await up?.close();
  await rm(dir, { recursive: true, force: true });
});

const manifest = (repo: string, tag: string, method: 'GET' | 'HEAD' = 'GET') => get(`${url}/v2/library/${repo}/manifests/${tag}`, { method, headers: { accept: ACCEPT } });

async function digestOf(repo: string, tag = 'v1.0'): Promise<string> {
  const r = await manifest(repo, tag);
  assert.equal(r.status, 200, `${repo}:${tag}: ${r.body.toString()}`);
  return r.headers['docker-content-digest'];
}

/** Points v1.0 upstream at the second image, then waits out the tag's TTL. */
async function repoint(repo: string): Promise<void> {
  up.setTag(`library/${repo}`, 'v1.0', images.get(repo)!.second.root.digest);
  await sleep(TTL_MS + 200);
}

async function changes(): Promise<Change[]> {
  const r = await cli(['tags', 'ls', '--json', '--config', config]);
  assert.equal(r.code, 0, r.stderr);
  return JSON.parse(r.stdout) as Change[];
}

interface TagEvent {
  kind: string;
  repository: string;
  tag: string;
  digest: string;
  message: string;
  details: { action: string; guarded: string; upstream: string };
}

/** The tag_changed events `regmirror events` lists for a repository, once the server has written them. */
async function tagEvents(repo: string): Promise<TagEvent[]> {
  let found: TagEvent[] = [];
  await until(`a tag_changed event for library/${repo}`, async () => {
    const r = await cli(['events', '--json', '--kind', 'tag_changed', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    found = (JSON.parse(r.stdout) as TagEvent[]).filter((e) => e.repository === `library/${repo}`);
    return found.length > 0;
  });
  return found;
}

const changeOf = async (repo: string) => (await changes()).find((c) => c.image === `docker.io/library/${repo}:v1.0`);

describe('immutable tags', () => {
  test('keep: after the change the tag still serves its first digest, to GET, HEAD and skopeo; the change is listed once', async (t) => {
    const { first, second } = images.get('keep')!;
    assert.equal(await digestOf('keep'), first.root.digest);
    await repoint('keep');
    assert.equal(await digestOf('keep'), first.root.digest, 'GET by tag');
    // The TTL was renewed: a pull right after does not ask the upstream.
    const asked = () => up.requests.filter((r) => r.path.includes('/library/keep/manifests/')).length;
    const before = asked();
    assert.equal(await digestOf('keep'), first.root.digest);
    assert.equal(asked(), before, 'no revalidation within the TTL');
    assert.equal((await manifest('keep', 'v1.0', 'HEAD')).headers['docker-content-digest'], first.root.digest, 'HEAD by tag');
    const listed = await changeOf('keep');
    assert.deepEqual(listed && { guarded: listed.guarded, upstream: listed.upstreamDigest, action: listed.action, class: listed.class }, {
      guarded: first.root.digest,
      upstream: second.root.digest,
      action: 'keep',
      class: 'index',
    });
    await sleep(TTL_MS + 200);
    if (requireTools(t, 'skopeo')) await skopeoCopyVerified(t, `${new URL(url).host}/library/keep:v1.0`, first);
    const again = await changeOf('keep');
    assert.equal(again?.since, listed!.since, 'recorded once: the revalidations after it found the same change');
    const logged = server.stderr().split('\n').filter((l) => l.includes('immutable tag changed upstream') && l.includes('library/keep'));
    assert.equal(logged.length, 1, 'one report of the change');
    const events = await tagEvents('keep');
    assert.deepEqual(events.map((e) => [e.tag, e.details.action, e.details.guarded, e.details.upstream]), [['v1.0', 'keep', first.root.digest, second.root.digest]], 'regmirror events lists the change once');
    assert.equal(await digestOf('keep', 'next'), second.root.digest, 'the new image stays pullable by its own tag');
  });

  test('refuse: pulls fail with DENIED naming both digests until tags accept, then get the new digest', async () => {
    const { first, second } = images.get('refuse')!;
    assert.equal(await digestOf('refuse'), first.root.digest);
    await repoint('refuse');
    for (const method of ['GET', 'HEAD'] as const) {
      const r = await manifest('refuse', 'v1.0', method);
      assert.equal(r.status, 403, method);
      if (method === 'HEAD') continue;
      assert.equal(errorCode(r), 'DENIED');
      const message = (JSON.parse(r.body.toString()) as { errors: Array<{ message: string }> }).errors[0].message;
      for (const part of ['policies[1]', 'docker.io/library/refuse:v1.0', first.root.digest, second.root.digest, 'regmirror tags accept docker.io/library/refuse:v1.0']) assert.ok(message.includes(part), `${part} in ${message}`);
    }
    assert.equal((await changeOf('refuse'))?.action, 'refuse');
    assert.deepEqual((await tagEvents('refuse')).map((e) => e.details.action), ['refuse']);
    const accepted = await cli(['tags', 'accept', 'library/refuse:v1.0', '--config', config]);
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, new RegExp(`accepted docker.io/library/refuse:v1.0: ${first.root.digest} -> ${second.root.digest}`));
    assert.equal(await digestOf('refuse'), second.root.digest, 'the running server sees the accept at once');
    assert.equal(await changeOf('refuse'), undefined, 'nothing pending any more');
    const twice = await cli(['tags', 'accept', 'docker.io/library/refuse:v1.0', '--config', config]);
    assert.equal(twice.code, 1);
    assert.match(twice.stderr, /docker\.io\/library\/refuse:v1\.0 has no pending change/);
  });

  test('follow: the new digest is served and the change is listed', async () => {
    const { first, second } = images.get('follow')!;
    assert.equal(await digestOf('follow'), first.root.digest);
    await repoint('follow');
    assert.equal(await digestOf('follow'), second.root.digest);
    const c = await changeOf('follow');
    assert.deepEqual(c && [c.guarded, c.upstreamDigest, c.action], [first.root.digest, second.root.digest, 'follow']);
    const events = await tagEvents('follow');
    assert.deepEqual(events.map((e) => [e.details.action, e.details.guarded, e.details.upstream]), [['follow', first.root.digest, second.root.digest]], 'the event is recorded');
  });

  test('a tag the globs do not match just follows, unrecorded', async () => {
    const { first, second } = images.get('loose')!;
    assert.equal(await digestOf('loose', 'latest'), first.root.digest);
    up.setTag('library/loose', 'latest', second.root.digest);
    await sleep(TTL_MS + 200);
    assert.equal(await digestOf('loose', 'latest'), second.root.digest);
    assert.equal((await changes()).find((c) => c.image.includes('library/loose')), undefined);
  });

  test('--server: tags ls and tags accept through the admin endpoints, with the admin token', async () => {
    const { first, second } = images.get('keep')!;
    const host = new URL(url).host;
    const refused = await cli(['tags', 'ls', '--server', host]);
    assert.equal(refused.code, 1);
    assert.match(refused.stderr, /refused \(401\).*REGMIRROR_ADMIN_TOKEN/);
    const env = { REGMIRROR_ADMIN_TOKEN: TOKEN };
    const ls = await cli(['tags', 'ls', '--server', host], env);
    assert.equal(ls.code, 0, ls.stderr);
    assert.match(ls.stdout, /^IMAGE +CLASS +GUARDED +UPSTREAM +SINCE +ACTION$/m);
    assert.match(ls.stdout, /docker\.io\/library\/keep:v1\.0 +index +sha256:\S+ +sha256:\S+ +\S+ +keep/);
    const accepted = await cli(['tags', 'accept', 'docker.io/library/keep:v1.0', '--server', host, '--json'], env);
    assert.equal(accepted.code, 0, accepted.stderr);
    const done = JSON.parse(accepted.stdout) as { image: string; accepted: Change[] };
    assert.equal(done.image, 'docker.io/library/keep:v1.0');
    assert.deepEqual(done.accepted.map((c) => [c.guarded, c.upstreamDigest]), [[first.root.digest, second.root.digest]]);
    await sleep(1200); // the server's memo of the tag row it expired lasts a second
    assert.equal(await digestOf('keep'), second.root.digest, 'accepted under keep: the next pull gets the new digest');
    const none = await cli(['tags', 'accept', 'docker.io/library/keep:v1.0', '--server', host], env);
    assert.equal(none.code, 1);
    assert.match(none.stderr, /has no pending change/);
  });

  test('the accept endpoint answers a bad request with 400 and its reason, and a caller without the token with 401', async () => {
    const post = async (body: string, token = TOKEN) => {
      const res = await request(`${url}/_regmirror/tags/accept`, { method: 'POST', body, headers: { 'content-type': 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) } });
      return { status: res.statusCode, error: ((await res.body.json()) as { error: string }).error };
    };
    assert.deepEqual(await post('{}'), { status: 400, error: 'image: an image reference with a tag is required' });
    assert.deepEqual(await post('not json'), { status: 400, error: 'the request body is not JSON' });
    assert.equal((await post('{"image":"Bad//Name:v1"}')).status, 400);
    assert.deepEqual(await post(`{"image":"library/keep@${images.get('keep')!.first.root.digest}"}`), { status: 400, error: `library/keep@${images.get('keep')!.first.root.digest}: name a tag, not a digest` });
    assert.deepEqual(await post('{"image":"library/nothing:v1"}'), { status: 400, error: 'docker.io/library/nothing:v1 has no pending change to accept' });
    assert.equal((await post('{"image":"library/keep:v1.0"}', '')).status, 401);
    assert.equal((await post('{"image":"library/keep:v1.0"}', 'wrong')).status, 401);
  });
});
