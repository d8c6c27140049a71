// `cache`, `gc` and `verify` against a running server (--server, admin token): the same
// output as the same commands on its data dir, through the real CLI both ways.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, open, rm, utimes, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { request } from 'undici';
import { randomBytes, singleImage, tarLayer, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli, get, sha256, startMirror, type CliResult, type Mirror } from './helpers.js';
import { metadataYamlFor } from './support/metadata-backend.js';

const TOKEN = 'admin-server-token';

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice(7);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}

describe('cache, gc and verify with --server', () => {
  let up: FakeUpstream;
  let dir: string;
  let config: string;
  let m: Mirror;
  let a: FixtureImage;
  const withToken = { REGMIRROR_ADMIN_TOKEN: TOKEN, REGMIRROR_CONFIG: '' };
  const viaDir = (...args: string[]) => cli([...args, '--config', config], withToken);
  const viaServer = (...args: string[]) => cli([...args, '--server', m.url], withToken);
  /** Both ways, one after the other (the second sees what the first changed). */
  const same = (r: CliResult, s: CliResult) => {
    assert.equal(s.code, r.code, s.stderr);
    assert.equal(s.stdout, r.stdout);
  };

  before(async () => {
    up = await FakeUpstream.start();
    const shared = await tarLayer('base.bin', 32 * 1024, 'remote-shared');
    a = await singleImage({ name: 'team/a', tag: 'v1', seed: 'remote-a', sharedLayers: [shared] });
    const b = await singleImage({ name: 'team/b', tag: 'v1', seed: 'remote-b', sharedLayers: [shared] });
    up.addImage(a);
    up.addImage(b);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-admin-server-'));
    const dataDir = join(dir, 'data');
    config = join(dir, 'mirror.yaml');
    await writeFile(config, `dataDir: ${dataDir}\n${await metadataYamlFor(dataDir)}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir, adminToken: TOKEN });
    for (const img of [a, b]) {
      await get(`${m.url}/v2/${img.name}/manifests/v1`);
      for (const [d] of img.blobs) await get(`${m.url}/v2/${img.name}/blobs/${d}`);
    }
    // Hits and access times are counted in memory: written, both ways read the same rows.
    await m.metadata.flush();
  });
  after(async () => {
    await m?.stop();
    await up?.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('18.4 cache ls --server prints what cache ls --config prints, as text and as JSON', async () => {
    const text = await viaDir('cache', 'ls');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^docker\.io\/team\/a:v1\s/m);
    assert.match(text.stdout, /^docker\.io\/team\/b:v1\s/m);
    same(text, await viaServer('cache', 'ls'));
    const json = await viaDir('cache', 'ls', '--json');
    assert.equal(JSON.parse(json.stdout).length, 2);
    same(json, await viaServer('cache', 'ls', '--json'));
    // HOST:PORT, as status and prewarm take it.
    same(text, await cli(['cache', 'ls', '--server', new URL(m.url).host], withToken));
  });

  test('18.4 cache pin|unpin --server pin as on the data dir, and say the same', async () => {
    const pinned = await viaServer('cache', 'pin', 'team/a:v1');
    assert.equal(pinned.code, 0, pinned.stderr);
    assert.equal(pinned.stdout, `pinned docker.io/team/a:v1 ${a.root.digest.slice(0, 19)}\n`);
    assert.match((await viaDir('cache', 'ls')).stdout, /^docker\.io\/team\/a:v1\s+\S+\s+\S+ KiB\s+yes\s/m, 'the server pinned it in the shared database');
    same(await viaDir('cache', 'unpin', 'team/a:v1'), await viaServer('cache', 'pin', 'team/a:v1').then(() => viaServer('cache', 'unpin', 'team/a:v1')));
    same(await viaDir('cache', 'pin', 'team/a:v1', '--json'), await viaServer('cache', 'pin', 'team/a:v1', '--json'));
    assert.match((await viaServer('cache', 'ls')).stdout, /^docker\.io\/team\/a:v1\s+\S+\s+\S+ KiB\s+yes\s/m);
    await viaServer('cache', 'unpin', 'team/a:v1');
    // Not in the cache: the same line and exit status from both.
    const missing = await viaDir('cache', 'pin', 'team/nope:v1');
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^regmirror cache pin: docker\.io\/team\/nope:v1 is not in the cache\n$/);
    const remote = await viaServer('cache', 'pin', 'team/nope:v1');
    assert.equal(remote.code, 1);
    assert.equal(remote.stderr, missing.stderr);
  });

  test('18.4 gc --server --dry-run reports what gc --dry-run reports, and changes nothing', async () => {
    // A file with no row, left long ago (one published within the hour may be about to be recorded).
    const stray = randomBytes(1000, 'remote-stray');
    const strayPath = blobPath(join(dir, 'data'), sha256(stray));
    await mkdir(join(strayPath, '..'), { recursive: true });
    await writeFile(strayPath, stray);
    const longAgo = new Date(Date.now() - 2 * 3_600_000);
    await utimes(strayPath, longAgo, longAgo);
    const text = await viaDir('gc', '--dry-run');
    assert.equal(text.code, 0, text.stderr);
    assert.match(text.stdout, /^would remove 1 file\(s\) with no record \(1000 B\)$/m);
    same(text, await viaServer('gc', '--dry-run'));
    same(await viaDir('gc', '--dry-run', '--json'), await viaServer('gc', '--dry-run', '--json'));
    await (await open(strayPath)).close();
    // Without --dry-run the server removes it, and says so as gc on the data dir would.
    const real = await viaServer('gc');
    assert.match(real.stdout, /^removed 1 file\(s\) with no record \(1000 B\)$/m);
    await assert.rejects(open(strayPath), /ENOENT/);
    same(await viaDir('gc', '--dry-run'), await viaServer('gc', '--dry-run'));
  });

  test('18.4 verify --server checks the blobs verify --config checks and prints the same', async () => {
    const local = await viaDir('verify');
    assert.equal(local.code, 0, local.stderr);
    assert.match(local.stdout, /^checked \d+ blobs \(.*\): 0 bad$/m);
    const remote = await viaServer('verify');
    same(local, remote);
    assert.match(remote.stderr, /^verify (\d+)\/\1 blobs, /m, 'progress, as on the data dir');
  });

  test('18.4 a bad request to the cache endpoints is a 400 naming what is wrong, and the server goes on', async () => {
    const post = async (path: string, body: string) => {
      const res = await request(`${m.url}${path}`, { method: 'POST', headers: { authorization: `Bearer ${TOKEN}`, 'content-type': 'application/json' }, body });
      return { status: res.statusCode, body: (await res.body.json()) as { error: string } };
    };
    assert.deepEqual(await post('/_regmirror/cache/rm', '{}'), { status: 400, body: { error: 'name one of image, repository or olderThanMs' } });
    assert.deepEqual(await post('/_regmirror/cache/rm', '{"olderThanMs":-1}'), { status: 400, body: { error: 'repository: a repository name; olderThanMs: a positive number of milliseconds' } });
    assert.deepEqual(await post('/_regmirror/cache/pin', '{"image":7}'), { status: 400, body: { error: 'image: an image reference is required' } });
    assert.deepEqual(await post('/_regmirror/gc', '{"dryRun":"yes"}'), { status: 400, body: { error: 'dryRun: must be true or false' } });
    assert.deepEqual(await post('/_regmirror/verify', '{"repair":'), { status: 400, body: { error: 'the request body is not JSON' } });
    assert.equal((await get(`${m.url}/healthz`)).status, 200);
  });

  test('18.4 with an adminToken set, --server without REGMIRROR_ADMIN_TOKEN is refused in one line; with it, it works', async () => {
    for (const args of [['cache', 'ls'], ['cache', 'pin', 'team/a:v1'], ['gc', '--dry-run'], ['verify']]) {
      const r = await cli([...args, '--server', m.url], { REGMIRROR_ADMIN_TOKEN: '' });
      assert.equal(r.code, 1, args.join(' '));
      assert.equal(r.stdout, '');
      const command = args[0] === 'cache' ? `cache ${args[1]}` : args[0];
      assert.equal(r.stderr, `regmirror ${command}: ${m.url} refused (401): admin token required (set REGMIRROR_ADMIN_TOKEN)\n`);
    }
    const wrong = await cli(['cache', 'ls', '--server', m.url], { REGMIRROR_ADMIN_TOKEN: 'not-it' });
    assert.equal(wrong.code, 1);
    assert.equal(wrong.stderr, `regmirror cache ls: ${m.url} refused (401): admin token required\n`);
    assert.match((await cli(['cache', 'ls', '--server', m.url], { REGMIRROR_ADMIN_TOKEN: TOKEN })).stdout, /^IMAGE\s+DIGEST/);
    assert.match((await cli(['cache', 'pin', 'team/a:v1', '--server', m.url], { REGMIRROR_ADMIN_TOKEN: TOKEN })).stdout, /^pinned docker\.io\/team\/a:v1 /);
  });
  test('18.4 a server with no adminToken lets --server read and dry-run, and refuses what removes content', async (t) => {
    const open = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
    t.after(() => open.close());
    assert.equal((await cli(['gc', '--dry-run', '--server', open.url])).code, 0);
    for (const args of [['cache', 'rm', 'team/a:v1'], ['gc'], ['verify', '--repair']]) {
      const r = await cli([...args, '--server', open.url]);
      assert.equal(r.code, 1, args.join(' '));
      const command = args[0] === 'cache' ? `cache ${args[1]}` : args[0];
      assert.equal(r.stderr, `regmirror ${command}: ${open.url} refused (403): removing content through a running server needs adminToken in its config\n`);
    }
  });
});
