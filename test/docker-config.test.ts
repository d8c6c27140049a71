// Upstream credentials from a Docker config.json: an `auths` entry, an identity token, a
// credential helper found on PATH, a file changed while the mirror runs, and a helper that
// hangs. Each mirror is `regmirror serve` in a process of its own, with the environment
// (PATH, DOCKER_CONFIG) a user would give it; no secret may reach its log.
import assert from 'node:assert/strict';
import { chmod, mkdir, mkdtemp, readFile, rename, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { lookup, parseDockerConfig } from '../src/upstream/docker-config.js';
import { errorCode, get, serveChild, sha256, until, type ChildServer } from './helpers.js';

const SECRET = 'dckr_pat_docker-config-s3cr3t';
const NEW_SECRET = 'dckr_pat_rotated-s3cr3t';
const IDENTITY_TOKEN = 'refresh-token-s3cr3t';
const b64 = (s: string) => Buffer.from(s).toString('base64');

describe('18.3 credentials from a Docker config.json', () => {
  let up: FakeUpstream;
  let app: FixtureImage;
  let other: FixtureImage;
  let dir: string;
  const running: ChildServer[] = [];

  before(async () => {
    up = await FakeUpstream.start({ credentials: { username: 'bob', password: SECRET } });
    app = await singleImage({ name: 'private/app', tag: 'v1', seed: 'docker-config-app' });
    other = await singleImage({ name: 'private/other', tag: 'v1', seed: 'docker-config-other' });
    up.addImage(app);
    up.addImage(other);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-docker-config-'));
  });
  after(async () => {
    for (const s of running) s.kill();
    await Promise.all(running.map((s) => s.exited));
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** `regmirror serve` for the fixture as registry.test, its credentials as `credentials` says. */
  async function serve(name: string, credentials: string, env: Record<string, string> = {}): Promise<{ url: string; server: ChildServer }> {
    const file = join(dir, `${name}.yaml`);
    await writeFile(file, `listen: "127.0.0.1:0"\ndataDir: ${join(dir, name, 'data')}\nlog:\n  level: debug\nupstreams:\n  registry.test:\n    url: ${up.url}\n    credentials:\n${credentials}`);
    const server = serveChild(file, env);
    running.push(server);
    return { url: await server.url, server };
  }

  async function writeJson(path: string, doc: unknown): Promise<void> {
    await mkdir(join(path, '..'), { recursive: true });
    // Written beside and renamed, as editors and `docker login` do: never read half-written.
    await writeFile(path + '.tmp', JSON.stringify(doc));
    await rename(path + '.tmp', path);
  }

  /** A private pull of `img` through the mirror: manifest and every blob. */
  async function pulls(url: string, img: FixtureImage): Promise<void> {
    const r = await get(`${url}/v2/registry.test/${img.name}/manifests/v1`);
    assert.equal(r.status, 200, r.body.toString());
    for (const [digest] of img.blobs) assert.equal(sha256((await get(`${url}/v2/registry.test/${img.name}/blobs/${digest}`)).body), digest);
  }

  function assertNoSecret(logs: string, ...secrets: string[]): void {
    for (const s of secrets) {
      assert.ok(!logs.includes(s), 'a secret is in the log');
      assert.ok(!logs.includes(b64(`bob:${s}`)), 'a Basic credential is in the log');
    }
  }

  async function helper(name: string, body: string): Promise<string> {
    const bin = join(dir, `bin-${name}`);
    await mkdir(bin, { recursive: true });
    const path = join(bin, `docker-credential-${name}`);
    await writeFile(path, `#!/bin/sh\n${body}\n`);
    await chmod(path, 0o755);
    return bin;
  }

  test('18.3 an auths entry (base64 user:password, keyed by URL) authenticates to a private repository', async () => {
    up.setCredentials({ username: 'bob', password: SECRET });
    const config = join(dir, 'auths', 'config.json');
    await writeJson(config, { auths: { [`http://${up.host}/`]: { auth: b64(`bob:${SECRET}`) } } });
    const { url, server } = await serve('auths', `      dockerConfig: ${config}\n`);
    await pulls(url, app);
    assert.match(server.stderr(), /using upstream credentials from a Docker config/);
    assertNoSecret(server.stderr(), SECRET);
  });

  test('18.3 an identity token is exchanged at the token endpoint (OAuth2 refresh_token POST)', async () => {
    up.refreshTokens.add(IDENTITY_TOKEN);
    up.resetCounters();
    const config = join(dir, 'identity', 'config.json');
    await writeJson(config, { auths: { 'registry.test': { auth: '', identitytoken: IDENTITY_TOKEN } } });
    const { url, server } = await serve('identity', `      dockerConfig: ${config}\n`);
    await pulls(url, app);
    assert.ok(up.requests.some((r) => r.origin === 'token' && r.method === 'POST'), 'the token came from a POST');
    assertNoSecret(server.stderr(), IDENTITY_TOKEN);
  });

  test('18.3 a credential helper (credHelpers, found on PATH, config from DOCKER_CONFIG) authenticates', async () => {
    up.setCredentials({ username: 'bob', password: SECRET });
    const calls = join(dir, 'helper-calls');
    const bin = await helper('test', `server=$(cat)\nprintf '%s\\n' "$1 $server" >> '${calls}'\nprintf '{"ServerURL":"%s","Username":"bob","Secret":"${SECRET}"}' "$server"`);
    const dockerDir = join(dir, 'helper-docker');
    await writeJson(join(dockerDir, 'config.json'), { auths: {}, credHelpers: { [up.host]: 'test' } });
    const { url, server } = await serve('helper', '      dockerConfig: true\n', { PATH: `${bin}:${process.env.PATH}`, DOCKER_CONFIG: dockerDir });
    await pulls(url, app);
    assert.equal((await readFile(calls, 'utf8')).trim(), `get ${up.host}`, 'asked once, with the server on stdin');
    assert.match(server.stderr(), /docker-credential-test/);
    assertNoSecret(server.stderr(), SECRET);
  });

  test('18.3 a config.json changed while the mirror runs is used without a restart', async () => {
    up.setCredentials({ username: 'bob', password: SECRET });
    const config = join(dir, 'changed', 'config.json');
    await writeJson(config, { auths: { [up.host]: { auth: b64(`bob:${SECRET}`) } } });
    const { url, server } = await serve('changed', `      dockerConfig: ${config}\n`);
    await pulls(url, app);
    // The password is rotated at the registry and in the file, as `docker login` would.
    up.setCredentials({ username: 'bob', password: NEW_SECRET });
    await writeJson(config, { auths: { [up.host]: { auth: b64(`bob:${NEW_SECRET}`) } } });
    await pulls(url, other);
    assertNoSecret(server.stderr(), SECRET, NEW_SECRET);
  });

  test('18.3 a credential helper that hangs is cut at helperTimeout with an error naming it', async () => {
    const pids = join(dir, 'hang-pid');
    const bin = await helper('hang', `cat >/dev/null\nsleep 60 &\necho $! > '${pids}'\nwait`);
    const config = join(dir, 'hang', 'config.json');
    await writeJson(config, { credsStore: 'hang' });
    const { url, server } = await serve('hang', `      dockerConfig: ${config}\n      helperTimeout: 1s\n`, { PATH: `${bin}:${process.env.PATH}` });
    const started = Date.now();
    const r = await get(`${url}/v2/registry.test/${app.name}/manifests/v1`);
    assert.equal(r.status, 502);
    assert.equal(errorCode(r), 'UNAVAILABLE');
    assert.match(r.body.toString(), /docker-credential-hang did not answer within 1000 ms/);
    assert.ok(Date.now() - started < 8_000, 'answered soon after the timeout');
    // What the helper started is killed with it.
    const sleeper = Number((await readFile(pids, 'utf8')).trim());
    await until('the helper\'s child to be killed', () => !alive(sleeper), 5_000);
    assert.match(server.stderr(), /a Docker credential helper failed/);
    // The process still serves.
    assert.equal((await get(`${url}/healthz`)).status, 200);
  });

  test('18.3 a registry that asks for Basic itself gets the auths entry, keyed by the upstream name', async () => {
    const basic = await FakeUpstream.start({ auth: 'basic', credentials: { username: 'bob', password: SECRET } });
    try {
      basic.addImage(app);
      const config = join(dir, 'basic', 'config.json');
      await writeJson(config, { auths: { 'other.example': { auth: b64('eve:nope') }, 'registry.test': { auth: b64(`bob:${SECRET}`) } } });
      const file = join(dir, 'basic.yaml');
      await writeFile(file, `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'basic', 'data')}\nlog:\n  level: debug\nupstreams:\n  registry.test:\n    url: ${basic.url}\n    credentials:\n      dockerConfig: ${config}\n`);
      const server = serveChild(file);
      running.push(server);
      await pulls(await server.url, app);
      assertNoSecret(server.stderr(), SECRET);
    } finally {
      await basic.close();
    }
  });

  test("18.3 Docker Hub's entry matches all its names; keys may be hosts or URLs", () => {
    const file = parseDockerConfig(JSON.stringify({ auths: { 'https://index.docker.io/v1/': { auth: b64('hub:pw') }, 'https://ghcr.io': { identitytoken: 'it' } } }));
    for (const host of ['docker.io', 'registry-1.docker.io', 'index.docker.io']) {
      assert.deepEqual(lookup(file, [host]), { kind: 'entry', credential: { kind: 'password', username: 'hub', password: 'pw' } }, host);
    }
    assert.deepEqual(lookup(file, ['GHCR.io']), { kind: 'entry', credential: { kind: 'identity-token', token: 'it' } });
    assert.deepEqual(lookup(file, ['quay.io']), { kind: 'none' });
    const helpers = parseDockerConfig(JSON.stringify({ credsStore: 'desktop', credHelpers: { 'ghcr.io': 'gh' } }));
    assert.deepEqual(lookup(helpers, ['docker.io']), { kind: 'helper', helper: 'desktop', serverUrl: 'https://index.docker.io/v1/' });
    assert.deepEqual(lookup(helpers, ['ghcr.io']), { kind: 'helper', helper: 'gh', serverUrl: 'ghcr.io' });
  });
});

/** A zombie (killed, not yet reaped by whoever adopted it) counts as dead. */
function alive(pid: number): boolean {
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}
