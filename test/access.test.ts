// Client access control: tokens and htpasswd users, the Basic challenge, repository
// allow/deny globs; a refused client never makes the mirror use its upstream credentials.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import bcrypt from 'bcryptjs';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { globMatcher, parseHtpasswd } from '../src/http/access.js';
import { errorCode, get, startMirror, type Mirror } from './helpers.js';

const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');

describe('client access control', () => {
  let up: FakeUpstream;
  let m: Mirror;
  let dir: string;

  before(async () => {
    up = await FakeUpstream.start({ credentials: { username: 'robot', password: 'upstream-secret' } });
    for (const name of ['library/alpine', 'myorg/team/app', 'other/thing', 'library/evil']) {
      up.addImage(await singleImage({ name, tag: 'v1', seed: name }));
    }
    dir = await mkdtemp(join(tmpdir(), 'regmirror-access-'));
    const htpasswd = join(dir, 'htpasswd');
    await writeFile(htpasswd, `# users\nalice:${bcrypt.hashSync('wonderland', 4)}\n`);
    m = await startMirror({
      upstreams: [{ name: 'docker.io', url: up.url, credentials: { username: 'robot', password: 'upstream-secret' }, allow: ['library/*', 'myorg/**'], deny: ['library/evil'] }],
      defaultUpstream: 'docker.io',
      auth: { tokens: ['ci-token-123'], htpasswd },
    });
  });
  after(async () => {
    await m.stop();
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });
  beforeEach(() => up.resetCounters());

  test('without credentials: 401 with a Basic challenge, on /v2/ too, and no upstream request', async () => {
    for (const path of ['/v2/', '/v2/library/alpine/manifests/v1']) {
      const r = await get(m.url + path);
      assert.equal(r.status, 401, path);
      assert.equal(r.headers['www-authenticate'], 'Basic realm="regmirror"');
      assert.equal(errorCode(r), 'UNAUTHORIZED');
    }
    const wrong = await get(`${m.url}/v2/library/alpine/manifests/v1`, { headers: { authorization: basic('alice', 'nope') } });
    assert.equal(wrong.status, 401);
    assert.equal(up.counters.total + up.counters.token, 0);
  });

  test('a token (Bearer, or as a Basic password) and an htpasswd user are let in', async () => {
    for (const authorization of ['Bearer ci-token-123', basic('anyone', 'ci-token-123'), basic('alice', 'wonderland')]) {
      const r = await get(`${m.url}/v2/library/alpine/manifests/v1`, { headers: { authorization } });
      assert.equal(r.status, 200, authorization);
    }
  });

  test('repositories outside allow, or on deny, get DENIED with no upstream request', async () => {
    const auth = { authorization: 'Bearer ci-token-123' };
    assert.equal((await get(`${m.url}/v2/myorg/team/app/manifests/v1`, { headers: auth })).status, 200);
    up.resetCounters();
    for (const name of ['other/thing', 'library/evil']) {
      const r = await get(`${m.url}/v2/${name}/manifests/v1`, { headers: auth });
      assert.equal(r.status, 403, name);
      assert.equal(errorCode(r), 'DENIED');
    }
    assert.equal(up.counters.total + up.counters.token, 0);
  });
});

test('globs: * stays in one component, ** crosses them', () => {
  const match = globMatcher(['library/*', 'myorg/**', 'a/b.c']);
  assert.ok(match('library/nginx'));
  assert.ok(!match('library/nginx/extra'));
  assert.ok(match('myorg/x'));
  assert.ok(match('myorg/x/y/z'));
  assert.ok(match('a/b.c'));
  assert.ok(!match('a/bxc'), 'a dot is literal');
  assert.ok(!match('other/x'));
});

test('htpasswd: only bcrypt entries, errors name the line', () => {
  assert.equal(parseHtpasswd('# c\nbob:$2y$05$abcdefghijklmnopqrstuuJ1bT0cC9pqGqfEd2UVuVr6VdpbF9U1e\n', 'h').size, 1);
  assert.throws(() => parseHtpasswd('bob:{SHA}W6ph5Mm5Pz8GgiULbPgzG37mj9g=\n', '/etc/htpasswd'), /\/etc\/htpasswd:1: not a bcrypt/);
});
