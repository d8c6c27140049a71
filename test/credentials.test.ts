// Upstream credentials from the config: ${ENV} and file: references reach the token
// server as Basic auth; without them the pull fails with UNAUTHORIZED; the secret shows
// up in no log line, no error body and no request to the CDN.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { parseConfig, type Credentials } from '../src/config.js';
import { errorCode, get, sha256, startMirror } from './helpers.js';

const SECRET = 'dckr_pat_s3cr3t-do-not-log';

describe('upstream credentials', () => {
  let up: FakeUpstream;
  let img: FixtureImage;
  let dir: string;

  before(async () => {
    up = await FakeUpstream.start({ credentials: { username: 'bob', password: SECRET } });
    img = await singleImage({ name: 'private/app', tag: 'v1', seed: 'private' });
    up.addImage(img);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-creds-'));
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** The credentials exactly as a config file would produce them. */
  function fromYaml(password: string, env: NodeJS.ProcessEnv): Credentials {
    const cfg = parseConfig(`upstreams:\n  registry.test:\n    url: ${up.url}\n    credentials:\n      username: bob\n      password: "${password}"\n`, env);
    return cfg.upstreams[0].credentials!;
  }

  async function pullWith(credentials: Credentials | undefined): Promise<{ manifest: number; code?: string; bodies: string[]; logs: string }> {
    const m = await startMirror({ upstreams: [{ name: 'registry.test', url: up.url, ...(credentials ? { credentials } : {}) }] });
    try {
      const bodies: string[] = [];
      const r = await get(`${m.url}/v2/registry.test/private/app/manifests/v1`);
      bodies.push(r.body.toString());
      if (r.status === 200) {
        for (const [digest] of img.blobs) {
          const b = await get(`${m.url}/v2/registry.test/private/app/blobs/${digest}`);
          assert.equal(sha256(b.body), digest);
        }
      }
      return { manifest: r.status, code: errorCode(r), bodies, logs: m.logs.join('\n') };
    } finally {
      await m.stop();
    }
  }

  test('a password from an environment variable', async () => {
    up.resetCounters();
    const r = await pullWith(fromYaml('${HUB_TOKEN}', { HUB_TOKEN: SECRET }));
    assert.equal(r.manifest, 200);
    assert.ok(!r.logs.includes(SECRET));
    assert.equal(up.counters.cdnAuthorization, 0, 'the CDN never sees Authorization');
  });

  test('a password from a file (a mounted secret)', async () => {
    const file = join(dir, 'token');
    await writeFile(file, SECRET + '\n');
    const r = await pullWith(fromYaml(`file:${file}`, {}));
    assert.equal(r.manifest, 200);
    assert.ok(!r.logs.includes(SECRET));
  });

  test('without credentials the pull fails with a clear UNAUTHORIZED', async () => {
    const r = await pullWith(undefined);
    assert.equal(r.manifest, 401);
    assert.equal(r.code, 'UNAUTHORIZED');
    assert.match(r.bodies[0], /refused/);
  });

  test('with a wrong password the error names no secret', async () => {
    const r = await pullWith({ username: 'bob', password: 'wrong-' + SECRET });
    assert.equal(r.manifest, 401);
    for (const text of [...r.bodies, r.logs]) {
      assert.ok(!text.includes(SECRET), 'no secret in error bodies or logs');
    }
  });
});
