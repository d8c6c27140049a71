// Configuration: the embedded defaults, YAML parsing with ${ENV} and file: secrets, value
// parsers, and validation errors that name the YAML key at fault.
import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { ConfigError, DEFAULTS, deleteGraceOf, loadConfig, parseConfig, type Config } from '../src/config.js';
import { createLogger } from '../src/log.js';

/** Asserts that `yaml` is refused with a ConfigError whose message names `key` (and matches `problem`). */
function refuses(yaml: string, key: string, problem?: RegExp, env: NodeJS.ProcessEnv = {}): void {
  assert.throws(
    () => parseConfig(yaml, env),
    (err: unknown) => {
      assert.ok(err instanceof ConfigError, `expected a ConfigError, got ${String(err)}`);
      assert.ok(err.message.includes(`${key}:`), `message ${JSON.stringify(err.message)} does not name ${key}`);
      if (problem) assert.match(err.message, problem);
      return true;
    },
  );
}

/** A config with one upstream, ghcr.io, that is also the default; `extra` is indented under it. */
function ghcr(extra = ''): string {
  return ['defaultUpstream: ghcr.io', 'upstreams:', '  ghcr.io:', '    url: https://ghcr.io', ...extra.split('\n').filter(Boolean).map((l) => `    ${l}`)].join('\n');
}

const upstreamOf = (cfg: Config, name: string) => {
  const u = cfg.upstreams.find((x) => x.name === name);
  assert.ok(u, `no upstream ${name}`);
  return u;
};

describe('DEFAULTS', () => {
  test('the embedded default config', () => {
    const common = {
      tagTtlMs: 300_000,
      concurrency: 32,
      connectTimeoutMs: 10_000,
      headersTimeoutMs: 30_000,
      idleTimeoutMs: 60_000,
      tokenRealms: [],
      redirectHosts: [],
      budgetFloor: 0,
      negativeTtlMs: 60_000,
      failureBackoffMs: 10_000,
      allow: [],
      deny: [],
    };
    assert.deepEqual(DEFAULTS, {
      listen: { host: '0.0.0.0', port: 5000 },
      dataDir: './data',
      metadata: { kind: 'sqlite' },
      defaultUpstream: 'docker.io',
      upstreams: [
        { ...common, name: 'docker.io', url: 'https://registry-1.docker.io', aliases: ['index.docker.io', 'registry-1.docker.io'] },
        { ...common, name: 'ghcr.io', url: 'https://ghcr.io', aliases: [] },
        { ...common, name: 'quay.io', url: 'https://quay.io', aliases: [] },
        { ...common, name: 'registry.k8s.io', url: 'https://registry.k8s.io', aliases: [] },
      ],
      log: { level: 'info', format: 'auto' },
      manifestMemoryBytes: 64 * 1024 * 1024,
      offline: false,
      auth: { tokens: [] },
      limits: { connectionsPerClient: 256, clientIdleTimeoutMs: 120_000, headersTimeoutMs: 30_000, shutdownGraceMs: 30_000 },
      storage: { maxSize: 0, highWatermark: 95, lowWatermark: 85, verifyEveryMs: 0, backend: 'fs', redirect: false },
    });
  });

  test('no credentials are configured by default', () => {
    for (const u of DEFAULTS.upstreams) assert.equal(u.credentials, undefined, u.name);
  });

  test('an empty file and no file both give the defaults, as copies', () => {
    assert.deepEqual(parseConfig('', {}), DEFAULTS);
    assert.deepEqual(parseConfig('# only a comment\n', {}), DEFAULTS);
    const loaded = loadConfig(undefined, {});
    assert.deepEqual(loaded, DEFAULTS);
    loaded.upstreams[0].aliases.push('mutated');
    loaded.listen.port = 1;
    const parsed = parseConfig('', {});
    parsed.upstreams[0].aliases.push('mutated');
    assert.deepEqual(DEFAULTS.upstreams[0].aliases, ['index.docker.io', 'registry-1.docker.io']);
    assert.equal(DEFAULTS.listen.port, 5000);
  });

  test('mirror.example.yaml documents exactly the defaults', () => {
    const text = readFileSync(new URL('../mirror.example.yaml', import.meta.url), 'utf8');
    assert.deepEqual(parseConfig(text, {}), DEFAULTS);
  });
});

describe('parseConfig', () => {
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'regmirror-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  test('a full config file', () => {
    const yaml = `
listen: 127.0.0.1:8080
dataDir: /var/lib/regmirror
defaultUpstream: docker.io
log:
  level: debug
manifestMemory: 16MiB
offline: true
adminToken: \${ADMIN}
auth:
  tokens: [t0ken]
  htpasswd: /etc/regmirror/htpasswd
storage:
  maxSize: 80%
  highWatermark: 90
  lowWatermark: 70
  verifyEvery: 24h
limits:
  connectionsPerClient: 10
  clientIdleTimeout: 1m
  shutdownGrace: 5s
upstreams:
  docker.io:
    url: https://registry-1.docker.io/
    aliases: [index.docker.io, hub]
    tagTtl: 10m
    concurrency: 8
    timeouts:
      connect: 5s
      headers: 20s
      idle: 2m
    credentials:
      username: bob
      password: \${HUB_TOKEN}
    tokenRealms: [auth.docker.io]
    redirectHosts: [blobs.internal, "10.0.0.9:9000"]
    budgetFloor: 20
    negativeTtl: 30s
    failureBackoff: 1m
    allow: [library/*, bob/**]
    deny: [library/evil]
  registry.internal:5000:
    url: http://10.0.0.5:5000
    tagTtl: 0
`;
    assert.deepEqual(parseConfig(yaml, { HUB_TOKEN: 'dckr_pat_abc', ADMIN: 'adm1n' }), {
      listen: { host: '127.0.0.1', port: 8080 },
      dataDir: '/var/lib/regmirror',
      metadata: { kind: 'sqlite' },
      defaultUpstream: 'docker.io',
      log: { level: 'debug', format: 'auto' },
      manifestMemoryBytes: 16 * 1024 * 1024,
      offline: true,
      adminToken: 'adm1n',
      auth: { tokens: ['t0ken'], htpasswd: '/etc/regmirror/htpasswd' },
      limits: { connectionsPerClient: 10, clientIdleTimeoutMs: 60_000, headersTimeoutMs: 30_000, shutdownGraceMs: 5_000 },
      storage: { maxSize: { percent: 80 }, highWatermark: 90, lowWatermark: 70, verifyEveryMs: 86_400_000, backend: 'fs', redirect: false },
      upstreams: [
        {
          name: 'docker.io',
          url: 'https://registry-1.docker.io',
          aliases: ['index.docker.io', 'hub'],
          tagTtlMs: 600_000,
          concurrency: 8,
          connectTimeoutMs: 5000,
          headersTimeoutMs: 20_000,
          idleTimeoutMs: 120_000,
          credentials: { username: 'bob', password: 'dckr_pat_abc' },
          tokenRealms: ['auth.docker.io'],
          redirectHosts: ['blobs.internal', '10.0.0.9:9000'],
          budgetFloor: 20,
          negativeTtlMs: 30_000,
          failureBackoffMs: 60_000,
          allow: ['library/*', 'bob/**'],
          deny: ['library/evil'],
        },
        {
          name: 'registry.internal:5000',
          url: 'http://10.0.0.5:5000',
          aliases: [],
          tagTtlMs: 0,
          concurrency: 32,
          connectTimeoutMs: 10_000,
          headersTimeoutMs: 30_000,
          idleTimeoutMs: 60_000,
          tokenRealms: [],
          redirectHosts: [],
          budgetFloor: 0,
          negativeTtlMs: 60_000,
          failureBackoffMs: 10_000,
          allow: [],
          deny: [],
        },
      ],
    });
  });

  test('keys left out take their defaults', () => {
    const cfg = parseConfig('log:\n  level: warn\n', {});
    assert.deepEqual(cfg, { ...DEFAULTS, log: { level: 'warn', format: 'auto' } });
  });

  test('${ENV} references are substituted, several per value', () => {
    const cfg = parseConfig('dataDir: ${BASE}/cache/${NAME}\n', { BASE: '/srv', NAME: 'regmirror' });
    assert.equal(cfg.dataDir, '/srv/cache/regmirror');
    const creds = parseConfig(ghcr('credentials:\n  username: ${GH_USER}\n  password: ${GH_TOKEN}'), { GH_USER: 'octo', GH_TOKEN: 'ghp_x' });
    assert.deepEqual(upstreamOf(creds, 'ghcr.io').credentials, { username: 'octo', password: 'ghp_x' });
  });

  test('an unset ${ENV} variable is an error naming the key and the variable', () => {
    refuses(ghcr('credentials:\n  username: octo\n  password: ${GH_TOKEN}'), 'upstreams.ghcr.io.credentials.password', /GH_TOKEN is not set/);
    refuses('dataDir: ${DATA_DIR}\n', 'dataDir', /DATA_DIR/);
    refuses(ghcr('aliases:\n  - a.example\n  - ${ALIAS}'), 'upstreams.ghcr.io.aliases[1]', /ALIAS/);
  });

  test('a file: secret is read from the file, trimmed', async () => {
    const pw = join(dir, 'password');
    await writeFile(pw, 'hunter2\n');
    const cfg = parseConfig(ghcr(`credentials:\n  username: octo\n  password: file:${pw}`), {});
    assert.deepEqual(upstreamOf(cfg, 'ghcr.io').credentials, { username: 'octo', password: 'hunter2' });
    // ${ENV} may name the file.
    const viaEnv = parseConfig(ghcr('credentials:\n  username: octo\n  password: file:${SECRETS}/password'), { SECRETS: dir });
    assert.equal(upstreamOf(viaEnv, 'ghcr.io').credentials?.password, 'hunter2');
  });

  test('a file: secret that cannot be read names the key, not the contents', () => {
    refuses(ghcr(`credentials:\n  username: octo\n  password: file:${join(dir, 'missing')}`), 'upstreams.ghcr.io.credentials.password', /cannot read.*ENOENT/);
  });

  test('13.9 redirectHosts and tokenRealms take host names or addresses, not URLs', () => {
    assert.deepEqual(upstreamOf(parseConfig(ghcr('redirectHosts: [s3.internal, "[fd00::7]:9000"]'), {}), 'ghcr.io').redirectHosts, ['s3.internal', '[fd00::7]:9000']);
    refuses(ghcr('redirectHosts: [https://s3.internal/]'), 'upstreams.ghcr.io.redirectHosts[0]', /host name/);
    refuses(ghcr('tokenRealms: [auth.example.com, "auth.example.com/token"]'), 'upstreams.ghcr.io.tokenRealms[1]', /host name/);
  });

  test('18.3 credentials.dockerConfig: a path, or true for $DOCKER_CONFIG (else ~/.docker); helperTimeout', async () => {
    const file = join(dir, 'docker', 'config.json');
    await mkdir(join(dir, 'docker'), { recursive: true });
    await writeFile(file, JSON.stringify({ auths: { 'ghcr.io': { auth: Buffer.from('octo:ghp_x').toString('base64') } }, credHelpers: { 'quay.io': 'pass' } }));
    const byPath = upstreamOf(parseConfig(ghcr(`credentials:\n  dockerConfig: ${file}`), {}), 'ghcr.io');
    assert.deepEqual(byPath.dockerConfig, { path: file, helperTimeoutMs: 10_000 });
    assert.equal(byPath.credentials, undefined);
    const byEnv = upstreamOf(parseConfig(ghcr('credentials:\n  dockerConfig: true\n  helperTimeout: 3s'), { DOCKER_CONFIG: join(dir, 'docker') }), 'ghcr.io');
    assert.deepEqual(byEnv.dockerConfig, { path: file, helperTimeoutMs: 3000 });
    const viaVar = upstreamOf(parseConfig(ghcr('credentials:\n  dockerConfig: ${D}/config.json'), { D: join(dir, 'docker') }), 'ghcr.io');
    assert.equal(viaVar.dockerConfig?.path, file, '${ENV} in the path');
    const home = join(dir, 'home');
    await mkdir(join(home, '.docker'), { recursive: true });
    await writeFile(join(home, '.docker', 'config.json'), '{}');
    const byHome = upstreamOf(parseConfig(ghcr('credentials:\n  dockerConfig: true'), { HOME: home }), 'ghcr.io');
    assert.equal(byHome.dockerConfig?.path, join(home, '.docker', 'config.json'));
  });

  test('18.3 a Docker config that is missing, unreadable or broken is refused naming the key and the file, not its contents', async () => {
    const key = 'upstreams.ghcr.io.credentials.dockerConfig';
    const missing = join(dir, 'no-such', 'config.json');
    refuses(ghcr(`credentials:\n  dockerConfig: ${missing}`), key, new RegExp(`cannot read ${missing}.*ENOENT`));
    refuses(ghcr('credentials:\n  dockerConfig: true'), key, /cannot read .*home-without-docker\/\.docker\/config\.json.*ENOENT/, { HOME: join(dir, 'home-without-docker') });
    const broken = join(dir, 'broken.json');
    await writeFile(broken, '{"auths": {"ghcr.io": {"auth": "c2VjcmV0LXBhc3N3b3Jk"}}');
    assert.throws(() => parseConfig(ghcr(`credentials:\n  dockerConfig: ${broken}`), {}), (err: Error) => {
      assert.ok(err.message.includes(`${key}: ${broken} is not valid JSON`), err.message);
      assert.ok(!err.message.includes('c2VjcmV0'), 'the contents are not echoed');
      return true;
    });
    const shapes: Array<[unknown, RegExp]> = [
      [[], /is not a JSON object/],
      [{ auths: { 'ghcr.io': { auth: 7 } } }, /auths\["ghcr.io"\]\.auth is not a string/],
      [{ credHelpers: { 'ghcr.io': '../../bin/sh' } }, /credHelpers\["ghcr.io"\] is not a helper name/],
      [{ credsStore: 'a b' }, /credsStore is not a helper name/],
    ];
    for (const [doc, problem] of shapes) {
      await writeFile(broken, JSON.stringify(doc));
      refuses(ghcr(`credentials:\n  dockerConfig: ${broken}`), key, problem);
    }
    refuses(ghcr('credentials:\n  dockerConfig: 5'), key, /path of a Docker config\.json, or true/);
    await writeFile(broken, '{}');
    refuses(ghcr(`credentials:\n  dockerConfig: ${broken}\n  username: octo`), 'upstreams.ghcr.io.credentials.username', /unknown key/);
    refuses(ghcr(`credentials:\n  dockerConfig: ${broken}\n  helperTimeout: 0s`), 'upstreams.ghcr.io.credentials.helperTimeout', /longer than 0/);
  });

  test('credentials need both username and password, and nothing else', () => {
    refuses(ghcr('credentials:\n  username: octo'), 'upstreams.ghcr.io.credentials.password', /must be a string/);
    refuses(ghcr('credentials:\n  username: octo\n  password: x\n  token: y'), 'upstreams.ghcr.io.credentials.token', /unknown key/);
    refuses(ghcr('credentials: octo:x'), 'upstreams.ghcr.io.credentials', /mapping/);
  });

  describe('durations', () => {
    const ttl = (v: string) => upstreamOf(parseConfig(ghcr(`tagTtl: ${v}`), {}), 'ghcr.io').tagTtlMs;

    test('units and compound durations', () => {
      assert.equal(ttl('90s'), 90_000);
      assert.equal(ttl('1h30m'), 5_400_000);
      assert.equal(ttl('5m'), 300_000);
      assert.equal(ttl('168h'), 604_800_000);
      assert.equal(ttl('2d'), 172_800_000);
      assert.equal(ttl('1500ms'), 1500);
      assert.equal(ttl('1m30s'), 90_000);
    });

    test('0 means revalidate every pull', () => {
      assert.equal(ttl('0'), 0);
      assert.equal(ttl('0s'), 0);
    });

    test('a bad duration names the key', () => {
      refuses(ghcr('tagTtl: 5x'), 'upstreams.ghcr.io.tagTtl', /duration/);
      refuses(ghcr('tagTtl: 300'), 'upstreams.ghcr.io.tagTtl', /duration/); // a unit is required
      refuses(ghcr('tagTtl: 1.5h'), 'upstreams.ghcr.io.tagTtl', /duration/);
      refuses(ghcr('tagTtl: -5m'), 'upstreams.ghcr.io.tagTtl', /duration/);
      refuses(ghcr('tagTtl: 5 m'), 'upstreams.ghcr.io.tagTtl', /duration/);
      refuses(ghcr('tagTtl: ""'), 'upstreams.ghcr.io.tagTtl', /duration/);
      refuses(ghcr('timeouts:\n  idle: forever'), 'upstreams.ghcr.io.timeouts.idle', /duration/);
    });

    test('timeouts must be longer than 0', () => {
      refuses(ghcr('timeouts:\n  connect: 0'), 'upstreams.ghcr.io.timeouts.connect', /longer than 0/);
      refuses(ghcr('timeouts:\n  headers: 0s'), 'upstreams.ghcr.io.timeouts.headers', /longer than 0/);
    });
  });

  describe('sizes', () => {
    const mem = (v: string) => parseConfig(`manifestMemory: ${v}\n`, {}).manifestMemoryBytes;

    test('binary and decimal units, and bare bytes', () => {
      assert.equal(mem('64MiB'), 64 * 1024 ** 2);
      assert.equal(mem('1GiB'), 1024 ** 3);
      assert.equal(mem('512KiB'), 512 * 1024);
      assert.equal(mem('500GB'), 500e9);
      assert.equal(mem('10 MB'), 10e6);
      assert.equal(mem('2TB'), 2e12);
      assert.equal(mem('100B'), 100);
      assert.equal(mem('1048576'), 1_048_576);
      assert.equal(mem('"1048576"'), 1_048_576);
    });

    test('a bad size names the key', () => {
      for (const v of ['12XB', '1.5GiB', 'lots', '64mib', '""', '[1]']) refuses(`manifestMemory: ${v}\n`, 'manifestMemory', /size/);
    });

    test('a negative, fractional or infinite number is not a size', () => {
      for (const v of ['-5', '1.5', '.inf']) refuses(`manifestMemory: ${v}\n`, 'manifestMemory', /size/);
    });
  });

  describe('listen', () => {
    const listen = (v: string) => parseConfig(`listen: ${v}\n`, {}).listen;

    test(':port listens on every interface', () => {
      assert.deepEqual(listen(':5000'), { host: '0.0.0.0', port: 5000 });
      assert.deepEqual(listen('":5000"'), { host: '0.0.0.0', port: 5000 });
    });

    test('host:port, name:port and [ipv6]:port', () => {
      assert.deepEqual(listen('127.0.0.1:5000'), { host: '127.0.0.1', port: 5000 });
      assert.deepEqual(listen('localhost:8080'), { host: 'localhost', port: 8080 });
      assert.deepEqual(listen('"[::1]:5000"'), { host: '::1', port: 5000 });
      assert.deepEqual(listen('"[::]:443"'), { host: '::', port: 443 });
    });

    test('anything else names the key', () => {
      for (const v of ['5000', 'localhost', '":"', '":70000"', '":abc"', '"::1:5000"', '"[::1]"', '"127.0.0.1:"', '""']) {
        refuses(`listen: ${v}\n`, 'listen', /host:port/);
      }
      refuses('listen: {host: a, port: 1}\n', 'listen', /string/);
    });
  });

  describe('unknown keys', () => {
    test('are refused, naming their full path', () => {
      refuses(ghcr('tagTTL: 5m'), 'upstreams.ghcr.io.tagTTL', /unknown key/);
      refuses(ghcr('timeouts:\n  read: 5s'), 'upstreams.ghcr.io.timeouts.read', /unknown key/);
      refuses('listn: :5000\n', 'listn', /unknown key/);
      refuses('log:\n  level: info\n  colour: true\n', 'log.colour', /unknown key/);
    });
  });

  describe('upstreams', () => {
    test('url must be an http(s) URL with no path; a trailing slash is dropped', () => {
      assert.equal(upstreamOf(parseConfig(ghcr().replace('https://ghcr.io', 'https://ghcr.io/'), {}), 'ghcr.io').url, 'https://ghcr.io');
      refuses(ghcr().replace('https://ghcr.io', 'ghcr.io'), 'upstreams.ghcr.io.url', /not a URL/);
      refuses(ghcr().replace('https://ghcr.io', 'not a url'), 'upstreams.ghcr.io.url', /not a URL/);
      refuses(ghcr().replace('https://ghcr.io', 'https://ghcr.io/v2'), 'upstreams.ghcr.io.url', /no path/);
      refuses(ghcr().replace('https://ghcr.io', 'https://example.com/registry/'), 'upstreams.ghcr.io.url', /no path/);
      refuses(ghcr().replace('https://ghcr.io', 'ftp://ghcr.io'), 'upstreams.ghcr.io.url', /http/);
      refuses('defaultUpstream: ghcr.io\nupstreams:\n  ghcr.io: {}\n', 'upstreams.ghcr.io.url', /must be a string/);
      refuses('defaultUpstream: ghcr.io\nupstreams:\n  ghcr.io:\n', 'upstreams.ghcr.io.url', /must be a string/);
    });

    test('a url with a query or fragment is refused', () => {
      refuses(ghcr().replace('https://ghcr.io', '"https://ghcr.io?x=1"'), 'upstreams.ghcr.io.url');
      refuses(ghcr().replace('https://ghcr.io', '"https://ghcr.io#frag"'), 'upstreams.ghcr.io.url');
    });

    test('an upstream name must be a registry host', () => {
      refuses('defaultUpstream: null\nupstreams:\n  GHCR.io:\n    url: https://ghcr.io\n', 'upstreams.GHCR.io', /host name/);
      refuses('defaultUpstream: null\nupstreams:\n  ghcr.io/org:\n    url: https://ghcr.io\n', 'upstreams.ghcr.io/org', /host name/);
    });

    test('concurrency must be a whole number of at least 1', () => {
      assert.equal(upstreamOf(parseConfig(ghcr('concurrency: 4'), {}), 'ghcr.io').concurrency, 4);
      for (const v of ['0', '-1', '2.5', 'many']) refuses(ghcr(`concurrency: ${v}`), 'upstreams.ghcr.io.concurrency', /whole number/);
    });

    test('a name selecting two upstreams is refused, naming the later one', () => {
      const yaml = `
upstreams:
  docker.io:
    url: https://registry-1.docker.io
    aliases: [mirror.local]
  ghcr.io:
    url: https://ghcr.io
    aliases: [mirror.local]
`;
      refuses(yaml, 'upstreams.ghcr.io', /mirror\.local selects more than one upstream/);
      const aliasIsName = `
upstreams:
  docker.io:
    url: https://registry-1.docker.io
    aliases: [ghcr.io]
  ghcr.io:
    url: https://ghcr.io
`;
      refuses(aliasIsName, 'upstreams.ghcr.io', /ghcr\.io selects more than one upstream/);
    });

    test(
      'names differing only in case select the same upstream, so they clash',
      
      () => {
        const yaml = `
upstreams:
  docker.io:
    url: https://registry-1.docker.io
    aliases: [GHCR.IO]
  ghcr.io:
    url: https://ghcr.io
`;
        refuses(yaml, 'upstreams.ghcr.io', /selects more than one upstream/);
      },
    );

    test('defaultUpstream must name a configured upstream', () => {
      refuses('defaultUpstream: nope.io\n', 'defaultUpstream', /nope\.io/);
      // Left out, it is docker.io when the file configures docker.io, and none otherwise.
      assert.equal(parseConfig('upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n', {}).defaultUpstream, undefined);
      assert.equal(parseConfig('upstreams:\n  docker.io:\n    url: https://registry-1.docker.io\n', {}).defaultUpstream, 'docker.io');
      assert.equal(parseConfig('defaultUpstream: null\nupstreams:\n  ghcr.io:\n    url: https://ghcr.io\n', {}).defaultUpstream, undefined);
      assert.equal(parseConfig('defaultUpstream: quay.io\n', {}).defaultUpstream, 'quay.io');
    });

    test('log.level is one of four', () => {
      refuses('log:\n  level: verbose\n', 'log.level', /debug, info, warn, error/);
    });

    test('18.6 log.format is auto, text or json', () => {
      refuses('log:\n  format: pretty\n', 'log.format', /auto, text, json/);
      assert.equal(parseConfig('log:\n  format: text\n', {}).log.format, 'text');
    });
  });

  test('a file that is not YAML, or not a mapping, is refused', () => {
    refuses('listen: [\n', '(file)', /not valid YAML/);
    refuses('a: 1\na: 2\n', '(file)', /not valid YAML/);
    refuses('- a\n- b\n', '(root)', /mapping/);
    refuses('upstreams: [ghcr.io]\n', 'upstreams', /mapping/);
  });

  test('loadConfig reads a file, and names the path it cannot read', async () => {
    const path = join(dir, 'mirror.yaml');
    await writeFile(path, 'listen: 127.0.0.1:6000\n');
    assert.deepEqual(loadConfig(path, {}).listen, { host: '127.0.0.1', port: 6000 });
    const missing = join(dir, 'nope.yaml');
    assert.throws(() => loadConfig(missing, {}), (err: unknown) => err instanceof ConfigError && err.message.includes(missing) && /ENOENT/.test(err.message));
  });
});

describe('metadata', () => {
  const PW = 's3cret-Pa55word';
  const URL_OK = 'postgres://regmirror@db.internal:5432/regmirror';
  let dir: string;
  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'regmirror-config-'));
  });
  after(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  /** A config whose metadata.postgres has `lines` (indented under it). */
  const postgres = (...lines: string[]) => ['metadata:', '  postgres:', ...lines.map((l) => `    ${l}`)].join('\n') + '\n';

  test('sqlite is the default, and may be said', () => {
    assert.deepEqual(parseConfig('', {}).metadata, { kind: 'sqlite' });
    assert.deepEqual(parseConfig('metadata: sqlite\n', {}).metadata, { kind: 'sqlite' });
  });

  test('postgres: url, password from ${ENV}, pool 10 and no TLS by default', () => {
    const cfg = parseConfig(postgres(`url: ${URL_OK}`, 'password: ${DB_PASSWORD}'), { DB_PASSWORD: PW });
    assert.deepEqual(cfg.metadata, { kind: 'postgres', url: URL_OK, password: PW, pool: 10, ssl: false });
    const other = parseConfig(postgres('url: postgresql://me@[fd00::7]/cache', `password: ${PW}`, 'pool: 100', 'ssl: true'), {});
    assert.deepEqual(other.metadata, { kind: 'postgres', url: 'postgresql://me@[fd00::7]/cache', password: PW, pool: 100, ssl: true });
  });

  test('postgres: a file: password, and a CA read from a path or file:', async () => {
    const pw = join(dir, 'db-password');
    const ca = join(dir, 'ca.pem');
    const pem = '-----BEGIN CERTIFICATE-----\nMIIBfake\n-----END CERTIFICATE-----\n';
    await writeFile(pw, `${PW}\n`);
    await writeFile(ca, pem);
    for (const ref of [ca, `file:${ca}`]) {
      const cfg = parseConfig(postgres(`url: ${URL_OK}`, `password: file:${pw}`, 'ssl:', `  ca: ${ref}`, '  rejectUnauthorized: false'), {});
      assert.deepEqual(cfg.metadata, { kind: 'postgres', url: URL_OK, password: PW, pool: 10, ssl: { ca: pem, rejectUnauthorized: false } });
    }
    const verified = parseConfig(postgres(`url: ${URL_OK}`, `password: ${PW}`, 'ssl:', `  ca: ${ca}`), {});
    assert.deepEqual(verified.metadata.kind === 'postgres' && verified.metadata.ssl, { ca: pem, rejectUnauthorized: true });
  });

  test('unknown backends and keys are refused', () => {
    refuses('metadata: mysql\n', 'metadata', /sqlite or a mapping with postgres/);
    refuses('metadata:\n  sqlite: {}\n', 'metadata.sqlite', /unknown key/);
    refuses(postgres(`url: ${URL_OK}`, `password: ${PW}`, 'database: x'), 'metadata.postgres.database', /unknown key/);
    refuses(postgres(`url: ${URL_OK}`, `password: ${PW}`, 'ssl:', '  cert: /x'), 'metadata.postgres.ssl.cert', /unknown key/);
    refuses('metadata:\n  postgres: yes\n', 'metadata.postgres', /mapping/);
  });

  test('the url must be postgres:// with a host and one database, and no query', () => {
    const bad = (url: string, problem: RegExp) => refuses(postgres(`url: "${url}"`, `password: ${PW}`), 'metadata.postgres.url', problem);
    bad('not a url', /not a URL/);
    bad('https://db.internal/regmirror', /postgres:\/\/ or postgresql:\/\//);
    bad('mysql://db.internal/regmirror', /postgres:\/\/ or postgresql:\/\//);
    bad('postgres:///regmirror', /must name a host/);
    bad('postgres://regmirror@db.internal:5432', /one database/);
    bad('postgres://regmirror@db.internal:5432/', /one database/);
    bad('postgres://regmirror@db.internal/a/b', /one database/);
    bad('postgres://regmirror@db.internal/regmirror?sslmode=require', /no query.*metadata\.postgres\.ssl/);
    refuses(postgres(`password: ${PW}`), 'metadata.postgres.url', /required/);
  });

  test('a password in the url is refused, pointing at metadata.postgres.password, without repeating it', () => {
    assert.throws(
      () => parseConfig(postgres(`url: postgres://regmirror:${PW}@db.internal/regmirror`, 'password: x'), {}),
      (err: Error) => {
        assert.match(err.message, /^config: metadata\.postgres\.url: must not hold a password: set metadata\.postgres\.password/);
        assert.ok(!err.message.includes(PW), err.message);
        return true;
      },
    );
  });

  test('the password is required and, like every secret, may not be empty', async () => {
    refuses(postgres(`url: ${URL_OK}`), 'metadata.postgres.password', /required/);
    refuses(postgres(`url: ${URL_OK}`, 'password: ""'), 'metadata.postgres.password', /empty/);
    refuses(postgres(`url: ${URL_OK}`, 'password: ${DB_PASSWORD}'), 'metadata.postgres.password', /empty/, { DB_PASSWORD: ' ' });
    refuses(postgres(`url: ${URL_OK}`, 'password: ${DB_PASSWORD}'), 'metadata.postgres.password', /DB_PASSWORD is not set/);
    const empty = join(dir, 'empty');
    await writeFile(empty, '\n');
    refuses(postgres(`url: ${URL_OK}`, `password: file:${empty}`), 'metadata.postgres.password', /empty/);
    refuses(postgres(`url: ${URL_OK}`, `password: file:${join(dir, 'missing')}`), 'metadata.postgres.password', /cannot read.*ENOENT/);
  });

  test('pool is a whole number from 1 to 100', () => {
    for (const pool of ['0', '101', '1.5', '"10"', '-1']) refuses(postgres(`url: ${URL_OK}`, `password: ${PW}`, `pool: ${pool}`), 'metadata.postgres.pool', /from 1 to 100/);
    const cfg = parseConfig(postgres(`url: ${URL_OK}`, `password: ${PW}`, 'pool: 1'), {});
    assert.equal(cfg.metadata.kind === 'postgres' && cfg.metadata.pool, 1);
  });

  test('ssl is a boolean or a CA file that holds a certificate', async () => {
    const base = [`url: ${URL_OK}`, `password: ${PW}`];
    refuses(postgres(...base, 'ssl: require'), 'metadata.postgres.ssl', /true, false or a mapping/);
    refuses(postgres(...base, 'ssl:', `  ca: ${join(dir, 'nope.pem')}`), 'metadata.postgres.ssl.ca', /cannot read.*ENOENT/);
    const junk = join(dir, 'junk.pem');
    await writeFile(junk, 'not a certificate\n');
    refuses(postgres(...base, 'ssl:', `  ca: ${junk}`), 'metadata.postgres.ssl.ca', /no PEM certificate/);
    refuses(postgres(...base, 'ssl:', '  rejectUnauthorized: no'), 'metadata.postgres.ssl.rejectUnauthorized', /true or false/);
  });

  test('no refusal repeats the password, and a logged config shows it redacted', () => {
    const env = { DB_PASSWORD: PW };
    const refusals = [
      postgres('url: "https://x/y"', 'password: ${DB_PASSWORD}'),
      postgres(`url: ${URL_OK}`, 'password: ${DB_PASSWORD}', 'pool: 0'),
      postgres(`url: ${URL_OK}`, 'password: ${DB_PASSWORD}', 'ssl: maybe'),
      postgres(`url: ${URL_OK}`, `password: ${PW}`, 'nope: 1'),
    ];
    for (const yaml of refusals) {
      assert.throws(() => parseConfig(yaml, env), (err: Error) => err instanceof ConfigError && !err.message.includes(PW));
    }
    const lines: string[] = [];
    createLogger('info', (l) => lines.push(l)).info('config', { metadata: parseConfig(postgres(`url: ${URL_OK}`, 'password: ${DB_PASSWORD}'), env).metadata });
    assert.equal(lines.length, 1);
    assert.ok(!lines[0].includes(PW), lines[0]);
    assert.match(lines[0], /regmirror@db\.internal/);
  });
});

describe('storage.backend', () => {
  const s3 = (...lines: string[]) => ['storage:', '  backend: s3', ...lines.map((l) => `  ${l}`)].join('\n') + '\n';

  test('fs is the default, and may be said', () => {
    assert.equal(parseConfig('', {}).storage.backend, 'fs');
    assert.deepEqual(parseConfig('storage:\n  backend: fs\n', {}).storage, DEFAULTS.storage);
  });

  test('s3: a bucket, with prefix, region, endpoint and path style', () => {
    assert.deepEqual(parseConfig(s3('s3:', '  bucket: regmirror', '  prefix: /mirror/eu/', '  region: eu-west-1', '  endpoint: https://rgw.internal:7480', '  forcePathStyle: true'), {}).storage, {
      ...DEFAULTS.storage,
      backend: 's3',
      s3: { bucket: 'regmirror', prefix: 'mirror/eu', region: 'eu-west-1', endpoint: 'https://rgw.internal:7480', forcePathStyle: true },
    });
    assert.deepEqual(parseConfig(s3('s3:', '  bucket: ${BUCKET}'), { BUCKET: 'from-env' }).storage.s3, { bucket: 'from-env', prefix: '', forcePathStyle: false });
  });

  test('s3 refusals name the key', () => {
    refuses('storage:\n  backend: gcs\n', 'storage.backend');
    refuses(s3(), 'storage.s3', /bucket/);
    refuses(s3('s3:', '  prefix: x'), 'storage.s3.bucket', /required/);
    refuses(s3('s3:', '  bucket: Not_A_Bucket'), 'storage.s3.bucket', /not a bucket name/);
    refuses(s3('s3:', '  bucket: ok-bucket', '  endpoint: rgw.internal'), 'storage.s3.endpoint');
    refuses(s3('s3:', '  bucket: ok-bucket', '  forcePathStyle: yes please'), 'storage.s3.forcePathStyle');
    refuses(s3('s3:', '  bucket: ok-bucket', '  accessKeyId: AKIA'), 'storage.s3.accessKeyId');
    refuses(s3('maxSize: 80%', 's3:', '  bucket: ok-bucket'), 'storage.maxSize', /no size/);
    refuses('storage:\n  s3:\n    bucket: ok-bucket\n', 'storage.s3', /only read with storage.backend: s3/);
  });

  test('15.7 storage.redirect: off by default, on with a bucket, refused without one or when not a boolean', () => {
    assert.equal(parseConfig('', {}).storage.redirect, false);
    assert.equal(parseConfig(s3('s3:', '  bucket: ok-bucket'), {}).storage.redirect, false);
    assert.equal(parseConfig(s3('redirect: true', 's3:', '  bucket: ok-bucket'), {}).storage.redirect, true);
    assert.equal(parseConfig('storage:\n  redirect: false\n', {}).storage.redirect, false);
    refuses('storage:\n  redirect: true\n', 'storage.redirect', /needs storage.backend: s3/);
    refuses('storage:\n  backend: fs\n  redirect: true\n', 'storage.redirect', /needs storage.backend: s3/);
    refuses(s3('redirect: sometimes', 's3:', '  bucket: ok-bucket'), 'storage.redirect');
  });

  test('15.6 storage.deleteGrace: a duration; unset, 0s on fs and 5m on s3', () => {
    assert.equal(deleteGraceOf(parseConfig('', {}).storage), 0);
    assert.equal(deleteGraceOf(parseConfig(s3('s3:', '  bucket: ok-bucket'), {}).storage), 5 * 60_000);
    assert.equal(deleteGraceOf(parseConfig(s3('deleteGrace: 0s', 's3:', '  bucket: ok-bucket'), {}).storage), 0);
    assert.equal(deleteGraceOf(parseConfig('storage:\n  deleteGrace: 90s\n', {}).storage), 90_000);
    refuses('storage:\n  deleteGrace: soon\n', 'storage.deleteGrace', /duration/);
  });
});

describe('cluster', () => {
  const SECRET = 'q3Vx8mJr2LkT9pWz4Ns6Yb1';
  const shared = 'metadata:\n  postgres:\n    url: postgres://regmirror@db:5432/regmirror\n    password: pw\nstorage:\n  backend: s3\n  s3:\n    bucket: regmirror-blobs\n';
  const cluster = (...lines: string[]) => `${shared}cluster:\n${lines.map((l) => `  ${l}\n`).join('')}`;

  test('15.2 cluster: advertise, a secret from ${ENV}, and the peer endpoint on the main listener by default', () => {
    const cfg = parseConfig(cluster('advertise: http://10.0.0.5:5000/', 'secret: ${REGMIRROR_CLUSTER_SECRET}'), { REGMIRROR_CLUSTER_SECRET: SECRET });
    assert.deepEqual(cfg.cluster, { advertise: 'http://10.0.0.5:5000', secret: SECRET });
    assert.equal(parseConfig('').cluster, undefined, 'no cluster by default');
    const own = parseConfig(cluster('advertise: http://10.0.0.5:5001', `secret: ${SECRET}`, 'listen: ":5001"'));
    assert.deepEqual(own.cluster?.listen, { host: '0.0.0.0', port: 5001 });
  });

  test('15.2 cluster: what a replica cannot run with is refused, naming the key', () => {
    refuses(cluster(`secret: ${SECRET}`), 'cluster.advertise', /required/);
    refuses(cluster('advertise: http://10.0.0.5:5000'), 'cluster.secret', /required/);
    refuses(cluster('advertise: http://0.0.0.0:5000', `secret: ${SECRET}`), 'cluster.advertise', /wildcard/);
    refuses(cluster('advertise: 10.0.0.5:5000', `secret: ${SECRET}`), 'cluster.advertise');
    refuses(cluster('advertise: http://10.0.0.5:5000/peer', `secret: ${SECRET}`), 'cluster.advertise', /no path/);
    refuses(cluster('advertise: http://10.0.0.5:5000', 'secret: short'), 'cluster.secret', /at least 16/);
    refuses(cluster('advertise: http://10.0.0.5:5000', `secret: ${SECRET}`, 'listne: ":5001"'), 'cluster.listne', /unknown key/);
    refuses(`cluster:\n  advertise: http://10.0.0.5:5000\n  secret: ${SECRET}\n`, 'cluster', /metadata: postgres and storage.backend: s3/);
  });
});

describe('parent', () => {
  test('15.8 parent: a URL; fallback is on unless parentFallback says false; credentials take secrets', async () => {
    assert.equal(parseConfig('', {}).parent, undefined);
    assert.deepEqual(parseConfig('parent: http://central:5000/\n', {}).parent, { url: 'http://central:5000', fallback: true });
    assert.deepEqual(parseConfig('parent: https://central.internal\nparentFallback: false\n', {}).parent, { url: 'https://central.internal', fallback: false });
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-parent-'));
    try {
      await writeFile(join(dir, 'token'), 'from-file\n');
      const cfg = parseConfig(`parent: \${CENTRAL}\nparentCredentials:\n  username: node\n  password: file:${join(dir, 'token')}\n`, { CENTRAL: 'http://10.0.0.5:5000' });
      assert.deepEqual(cfg.parent, { url: 'http://10.0.0.5:5000', credentials: { username: 'node', password: 'from-file' }, fallback: true });
    } finally {
      await rm(dir, { recursive: true, force: true });
    }
  });

  test('15.8 parent refusals name the key', () => {
    refuses('parent: central:5000\n', 'parent', /http/);
    refuses('parent: ftp://central\n', 'parent', /http or https/);
    refuses('parent: http://central:5000/mirror\n', 'parent', /no path/);
    refuses('parent: "http://central:5000?x=1"\n', 'parent', /no query/);
    refuses('parent: http://node:secret@central:5000\n', 'parent', /parentCredentials/);
    refuses('parent: http://central:5000\nparentFallback: yes please\n', 'parentFallback', /true or false/);
    refuses('parent: http://central:5000\nparentCredentials:\n  username: node\n', 'parentCredentials.password');
    refuses('parent: http://central:5000\nparentCredentials:\n  username: node\n  password: ""\n', 'parentCredentials.password', /empty/);
    refuses('parent: http://central:5000\nparentCredentials:\n  username: node\n  password: x\n  token: y\n', 'parentCredentials.token', /unknown key/);
    refuses('parentFallback: false\n', 'parentFallback', /only applies with parent/);
    refuses('parentCredentials:\n  username: node\n  password: x\n', 'parentCredentials', /only applies with parent/);
  });

  test('15.8 an upstream may opt out with parent: false', () => {
    const cfg = parseConfig(`parent: http://central:5000\n${ghcr('parent: false')}\n`, {});
    assert.equal(upstreamOf(cfg, 'ghcr.io').viaParent, false);
    assert.equal(upstreamOf(parseConfig(ghcr('parent: true'), {}), 'ghcr.io').viaParent, undefined);
    refuses(ghcr('parent: http://other:5000'), 'upstreams.ghcr.io.parent', /true or false/);
  });
});
