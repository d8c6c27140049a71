// An empty secret is no secret: `regmirror serve` refuses one at start-up naming the key,
// and the access checks themselves never match an empty credential.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { get, serveChild, startMirror } from './helpers.js';

const basic = (user: string, password: string) => 'Basic ' + Buffer.from(`${user}:${password}`).toString('base64');

describe('empty secrets', () => {
  let up: FakeUpstream;
  let dir: string;

  before(async () => {
    up = await FakeUpstream.start();
    up.addImage(await singleImage({ name: 'library/alpine', tag: 'v1', seed: 'secrets' }));
    dir = await mkdtemp(join(tmpdir(), 'regmirror-secrets-'));
    await writeFile(join(dir, 'empty-secret'), '  \n');
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** Starts `serve` on a config with `extra`; resolves with its exit, or fails showing the door it left open. */
  async function refusedAtStart(name: string, extra: string, upstreamExtra = ''): Promise<string> {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, `listen: "127.0.0.1:0"\ndataDir: ${join(dir, name)}\ndefaultUpstream: docker.io\n${extra}upstreams:\n  docker.io:\n    url: ${up.url}\n${upstreamExtra}`);
    const s = serveChild(file, { CI_TOKEN: '', ADMIN_TOKEN: ' ' });
    const started = await s.url.then(
      (url) => url,
      () => undefined,
    );
    if (started) {
      const v2 = await get(`${started}/v2/library/alpine/manifests/v1`, { headers: { authorization: 'Bearer ' } });
      const admin = await get(`${started}/_regmirror/status`, { headers: { authorization: 'Bearer ' } });
      s.kill();
      await s.exited;
      assert.fail(`${name}: started with an empty secret (empty Bearer: /v2 ${v2.status}, status ${admin.status})`);
    }
    const { code } = await s.exited;
    assert.equal(code, 1, name);
    return s.stderr();
  }

  test('13.2 an empty or blank secret anywhere is a config error at start-up naming the key', async () => {
    const cases: Array<[string, string, string, string?]> = [
      ['env-token', 'auth:\n  tokens: ["${CI_TOKEN}"]\n', 'auth.tokens[0]'],
      ['file-token', `auth:\n  tokens: ["file:${join(dir, 'empty-secret')}"]\n`, 'auth.tokens[0]'],
      ['literal-token', 'auth:\n  tokens: [ok-token, "   "]\n', 'auth.tokens[1]'],
      ['admin-token', 'adminToken: ""\n', 'adminToken'],
      ['admin-token-env', 'adminToken: "${ADMIN_TOKEN}"\n', 'adminToken'],
      ['htpasswd', 'auth:\n  htpasswd: ""\n', 'auth.htpasswd'],
      ['upstream-password', '', 'upstreams.docker.io.credentials.password', '    credentials:\n      username: robot\n      password: "${CI_TOKEN}"\n'],
    ];
    for (const [name, extra, key, upstreamExtra] of cases) {
      const stderr = await refusedAtStart(name, extra, upstreamExtra);
      assert.match(stderr, new RegExp(`config: ${key.replace(/[.[\]]/g, '\\$&')}: .*empty`), name);
    }
  });

  test('13.2 the access checks refuse an empty credential even when an empty secret reaches them', async () => {
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', auth: { tokens: [''] }, adminToken: '' });
    try {
      for (const authorization of ['Bearer', 'Bearer ', basic('x', ''), basic('', '')]) {
        assert.equal((await get(`${m.url}/v2/library/alpine/manifests/v1`, { headers: { authorization } })).status, 401, authorization);
      }
      const prewarm = await fetch(`${m.url}/_regmirror/prewarm`, { method: 'POST', headers: { authorization: 'Bearer ' }, body: '{"images":["library/alpine:v1"]}' });
      assert.equal(prewarm.status, 401);
      await prewarm.body?.cancel();
    } finally {
      await m.stop();
    }
  });
});
