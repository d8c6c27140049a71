// `regmirror configure`: what it generates for each client, how it merges into files the
// operator already has (their entries kept, only this mirror's replaced), and that a
// second run changes nothing.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { chmod, mkdtemp, readFile, rm, stat, writeFile, mkdir } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import { promisify } from 'node:util';
import { parse as parseToml } from 'smol-toml';
import { parse as parseYaml } from 'yaml';
import {
  ConfigureError,
  configureCommand,
  containerdHostsToml,
  dockerDaemonJson,
  k3sRegistriesYaml,
  parseMirror,
  parseRegistries,
  podmanRegistriesConf,
} from '../src/cli/configure.js';

const exec = promisify(execFile);
const ROOT = new URL('..', import.meta.url).pathname;
const http = parseMirror('http://mirror.example:5000');
const local = parseMirror('http://127.0.0.1:5000/');
const https = parseMirror('https://mirror.example');

/** Plain objects, so parsed TOML (null-prototype) compares with literals. */
const toml = (text: string) => JSON.parse(JSON.stringify(parseToml(text)));

async function tempDir(t: { after: (fn: () => Promise<void>) => void }): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-configure-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('mirror URLs and registry lists are checked', () => {
  assert.deepEqual(parseMirror('http://127.0.0.1:5000/'), { url: 'http://127.0.0.1:5000', host: '127.0.0.1:5000', secure: false, loopback: true });
  assert.deepEqual(parseMirror('https://mirror.example:443'), { url: 'https://mirror.example', host: 'mirror.example', secure: true, loopback: false });
  assert.equal(parseMirror('http://[::1]:5000').loopback, true);
  for (const bad of ['mirror:5000', 'ftp://m', 'http://m:5000/v2/docker.io', 'http://u:p@m', 'http://m?x=1']) {
    assert.throws(() => parseMirror(bad), ConfigureError, bad);
  }
  assert.deepEqual(parseRegistries(undefined), ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io']);
  assert.deepEqual(parseRegistries('Docker.io, ghcr.io,,docker.io,registry.example:5000'), ['docker.io', 'ghcr.io', 'registry.example:5000']);
  assert.throws(() => parseRegistries('docker.io/library'), /not a registry host name/);
  assert.throws(() => parseRegistries(','), /names no registry/);
});

// ---------------------------------------------------------------------------
// containerd

test('containerd: a new hosts.toml sends the registry to the mirror and keeps the registry as server', () => {
  const e = containerdHostsToml(undefined, 'docker.io', local);
  assert.equal(
    e.text,
    [
      '# docker.io: pulls go to the regmirror at http://127.0.0.1:5000 first (containerd adds ?ns=docker.io);',
      '# `server` is the registry itself, the fallback. Written by `regmirror configure containerd`.',
      'server = "https://registry-1.docker.io"',
      '',
      '[host."http://127.0.0.1:5000"]',
      '  capabilities = ["pull", "resolve"]',
      '',
    ].join('\n'),
  );
  assert.deepEqual(toml(containerdHostsToml(undefined, 'ghcr.io', http).text), {
    server: 'https://ghcr.io',
    host: { 'http://mirror.example:5000': { capabilities: ['pull', 'resolve'] } },
  });
  assert.deepEqual(toml(containerdHostsToml(undefined, 'quay.io', https, '/etc/regmirror/ca.crt').text).host, {
    'https://mirror.example': { capabilities: ['pull', 'resolve'], ca: '/etc/regmirror/ca.crt' },
  });
});

const OPERATOR_HOSTS = `# our registry setup, do not lose this comment
server = "https://registry-1.docker.io"

# the team's old mirror
[host."https://old-mirror.internal"]
  capabilities = ["pull"]
  skip_verify = true

[host."https://old-mirror.internal".header]
  x-team = ["infra"]
`;

test('containerd: merging keeps the operator\'s hosts, comments and server, and puts the mirror first', () => {
  const e = containerdHostsToml(OPERATOR_HOSTS, 'docker.io', local);
  assert.deepEqual(e.changes, ['added [host."http://127.0.0.1:5000"] before the other hosts']);
  assert.ok(e.text.startsWith('# our registry setup, do not lose this comment\nserver = "https://registry-1.docker.io"\n\n[host."http://127.0.0.1:5000"]\n'));
  assert.ok(e.text.includes('# the team\'s old mirror\n[host."https://old-mirror.internal"]\n  capabilities = ["pull"]\n  skip_verify = true\n'));
  const parsed = toml(e.text);
  assert.deepEqual(Object.keys(parsed.host), ['http://127.0.0.1:5000', 'https://old-mirror.internal'], 'containerd tries hosts in file order');
  assert.deepEqual(parsed.host['https://old-mirror.internal'], { capabilities: ['pull'], skip_verify: true, header: { 'x-team': ['infra'] } });

  const again = containerdHostsToml(e.text, 'docker.io', local);
  assert.deepEqual(again.changes, []);
  assert.equal(again.text, e.text, 'a second run is a no-op');
});

test('containerd: the mirror\'s own entry is replaced in place; a missing server is added', () => {
  const before = ['[host."http://127.0.0.1:5000"]', '  capabilities = ["pull"]', '  skip_verify = true', '', '[host."https://other"]', '  capabilities = ["pull"]', ''].join('\n');
  const e = containerdHostsToml(before, 'ghcr.io', local);
  assert.deepEqual(e.changes, ['replaced [host."http://127.0.0.1:5000"]', 'added server = "https://ghcr.io" (the fallback)']);
  assert.deepEqual(toml(e.text), {
    server: 'https://ghcr.io',
    host: { 'http://127.0.0.1:5000': { capabilities: ['pull', 'resolve'] }, 'https://other': { capabilities: ['pull'] } },
  });
  assert.equal(containerdHostsToml(e.text, 'ghcr.io', local).text, e.text);
});

test('containerd: a file it cannot edit safely is refused, not rewritten', () => {
  assert.throws(() => containerdHostsToml('server = [\n', 'docker.io', local), /not valid TOML/);
  // A table-header-looking line inside a multi-line array.
  const tricky = 'server = "https://registry-1.docker.io"\nodd = [\n["a"]\n]\n';
  assert.throws(() => containerdHostsToml(tricky, 'docker.io', local), /cannot be edited safely/);
});

// ---------------------------------------------------------------------------
// Docker

test('docker: daemon.json gets the mirror first; other keys and mirrors are kept', () => {
  assert.deepEqual(JSON.parse(dockerDaemonJson(undefined, local).text), { 'registry-mirrors': ['http://127.0.0.1:5000'] });
  assert.deepEqual(JSON.parse(dockerDaemonJson(undefined, https).text), { 'registry-mirrors': ['https://mirror.example'] });

  const before = JSON.stringify({ 'log-driver': 'journald', 'registry-mirrors': ['https://mirror.gcr.io', 'http://mirror.example:5000/'], 'insecure-registries': ['10.0.0.1:5000'] }, null, 4);
  const e = dockerDaemonJson(before, http);
  assert.deepEqual(JSON.parse(e.text), {
    'log-driver': 'journald',
    'registry-mirrors': ['http://mirror.example:5000', 'https://mirror.gcr.io'],
    'insecure-registries': ['10.0.0.1:5000', 'mirror.example:5000'],
  });
  assert.deepEqual(e.changes, ['registry-mirrors: http://mirror.example:5000 moved first', 'insecure-registries: mirror.example:5000 added (the mirror is plain HTTP)']);
  const again = dockerDaemonJson(e.text, http);
  assert.deepEqual(again.changes, []);
  assert.equal(again.text, e.text);
  assert.throws(() => dockerDaemonJson('{"registry-mirrors": "x"}', http), /must be a list of strings/);
  assert.throws(() => dockerDaemonJson('[1]', http), /must be a JSON object/);
  assert.throws(() => dockerDaemonJson('{', http), /not valid JSON/);
});

// ---------------------------------------------------------------------------
// podman

test('podman: a new registries.conf has a path-prefix mirror per registry', () => {
  const e = podmanRegistriesConf(undefined, ['docker.io', 'ghcr.io'], http);
  assert.ok(e.text.includes('[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\n\n[[registry.mirror]]\nlocation = "mirror.example:5000/docker.io"\ninsecure = true\n'), e.text);
  assert.deepEqual(toml(e.text), {
    registry: [
      { prefix: 'docker.io', location: 'docker.io', mirror: [{ location: 'mirror.example:5000/docker.io', insecure: true }] },
      { prefix: 'ghcr.io', location: 'ghcr.io', mirror: [{ location: 'mirror.example:5000/ghcr.io', insecure: true }] },
    ],
  });
  assert.deepEqual(toml(podmanRegistriesConf(undefined, ['quay.io'], https).text).registry[0].mirror, [{ location: 'mirror.example/quay.io' }]);
});

const OPERATOR_REGISTRIES = `# site policy
unqualified-search-registries = ["docker.io"]
short-name-mode = "enforcing"

[[registry]]
prefix = "registry.internal"
location = "registry.internal"
blocked = false

# Docker Hub goes through the team cache first
[[registry]]
prefix = "docker.io"
location = "docker.io"

[[registry.mirror]]
location = "cache.internal/dockerhub"

[[registry]]
location = "quay.io"
[[registry.mirror]]
location = "mirror.example:5000/quay.io"
insecure = false
`;

test('podman: merging keeps the operator\'s settings and mirrors, puts this mirror first, and is idempotent', () => {
  const e = podmanRegistriesConf(OPERATOR_REGISTRIES, ['docker.io', 'quay.io', 'ghcr.io'], http);
  assert.deepEqual(e.changes, [
    'docker.io: mirror mirror.example:5000/docker.io added first',
    'quay.io: mirror mirror.example:5000/quay.io replaced and put first',
    'added [[registry]] ghcr.io with mirror mirror.example:5000/ghcr.io',
  ]);
  assert.ok(e.text.startsWith('# site policy\nunqualified-search-registries = ["docker.io"]\n'));
  assert.ok(e.text.includes('# Docker Hub goes through the team cache first\n[[registry]]\nprefix = "docker.io"'));
  const parsed = toml(e.text);
  assert.equal(parsed['short-name-mode'], 'enforcing');
  assert.deepEqual(parsed.registry, [
    { prefix: 'registry.internal', location: 'registry.internal', blocked: false },
    {
      prefix: 'docker.io',
      location: 'docker.io',
      mirror: [{ location: 'mirror.example:5000/docker.io', insecure: true }, { location: 'cache.internal/dockerhub' }],
    },
    { location: 'quay.io', mirror: [{ location: 'mirror.example:5000/quay.io', insecure: true }] },
    { prefix: 'ghcr.io', location: 'ghcr.io', mirror: [{ location: 'mirror.example:5000/ghcr.io', insecure: true }] },
  ]);
  const again = podmanRegistriesConf(e.text, ['docker.io', 'quay.io', 'ghcr.io'], http);
  assert.deepEqual(again.changes, []);
  assert.equal(again.text, e.text);
});

test('podman: the v1 format and inline mirror lists are refused with a reason', () => {
  assert.throws(() => podmanRegistriesConf('[registries.search]\nregistries = ["docker.io"]\n', ['docker.io'], http), /old v1 format/);
  const inline = '[[registry]]\nprefix = "docker.io"\nlocation = "docker.io"\nmirror = [{ location = "x.internal" }]\n';
  assert.throws(() => podmanRegistriesConf(inline, ['docker.io'], http), /lists its mirrors inline/);
  const twice = '[[registry]]\nprefix = "docker.io"\n\n[[registry]]\nprefix = "docker.io"\n';
  assert.throws(() => podmanRegistriesConf(twice, ['docker.io'], http), /more than one \[\[registry\]\] for docker.io/);
});

// ---------------------------------------------------------------------------
// k3s

test('k3s: registries.yaml lists the mirror as each registry\'s first endpoint; configs and comments are kept', () => {
  assert.deepEqual(parseYaml(k3sRegistriesYaml(undefined, ['docker.io', 'ghcr.io'], http).text), {
    mirrors: { 'docker.io': { endpoint: ['http://mirror.example:5000'] }, 'ghcr.io': { endpoint: ['http://mirror.example:5000'] } },
  });
  const before = [
    '# managed by hand',
    'mirrors:',
    '  docker.io:',
    '    endpoint:',
    '      - "https://cache.internal"',
    '  registry.internal:',
    '    endpoint: ["https://registry.internal"]',
    'configs:',
    '  "registry.internal":',
    '    auth:',
    '      username: robot # the CI account',
    '      password: s3cret',
    '',
  ].join('\n');
  const e = k3sRegistriesYaml(before, ['docker.io', 'quay.io'], https, '/etc/ssl/mirror-ca.pem');
  assert.ok(e.text.startsWith('# managed by hand\n'));
  assert.ok(e.text.includes('username: robot # the CI account'));
  assert.deepEqual(parseYaml(e.text), {
    mirrors: {
      'docker.io': { endpoint: ['https://mirror.example', 'https://cache.internal'] },
      'registry.internal': { endpoint: ['https://registry.internal'] },
      'quay.io': { endpoint: ['https://mirror.example'] },
    },
    configs: {
      'registry.internal': { auth: { username: 'robot', password: 's3cret' } },
      'mirror.example': { tls: { ca_file: '/etc/ssl/mirror-ca.pem' } },
    },
  });
  const again = k3sRegistriesYaml(e.text, ['docker.io', 'quay.io'], https, '/etc/ssl/mirror-ca.pem');
  assert.deepEqual(again.changes, []);
  assert.equal(again.text, e.text);
  assert.throws(() => k3sRegistriesYaml('mirrors:\n  docker.io:\n    endpoint: x\n', ['docker.io'], http), /must be a list/);
  assert.throws(() => k3sRegistriesYaml('mirrors: [a]\n', ['docker.io'], http), /mirrors must be a mapping/);
  // An empty `mirrors:` (null) or `{}` is filled in as a block mapping.
  for (const empty of ['mirrors:\n', 'mirrors: {}\n']) {
    assert.equal(k3sRegistriesYaml(empty, ['docker.io'], http).text, 'mirrors:\n  docker.io:\n    endpoint:\n      - http://mirror.example:5000\n');
  }
});

// ---------------------------------------------------------------------------
// The command

test('configure --write creates, then reports unchanged; an existing file keeps its mode', async (t) => {
  const dir = await tempDir(t);
  const out: string[] = [];
  const notes: string[] = [];
  const run = (args: string[], flags: Record<string, unknown>) => configureCommand(flags, args, (s) => out.push(s), (s) => notes.push(s));

  const certs = join(dir, 'certs.d');
  await mkdir(join(certs, 'ghcr.io'), { recursive: true });
  await writeFile(join(certs, 'ghcr.io', 'hosts.toml'), OPERATOR_HOSTS.replace('registry-1.docker.io', 'ghcr.io'));
  await chmod(join(certs, 'ghcr.io', 'hosts.toml'), 0o600);
  assert.equal(await run(['containerd'], { mirror: 'http://127.0.0.1:5000', registries: 'docker.io,ghcr.io', write: certs }), 0);
  assert.deepEqual(out.join('').trim().split('\n'), [
    `created ${certs}/docker.io/hosts.toml: created with [host."http://127.0.0.1:5000"] and server = "https://registry-1.docker.io"`,
    `updated ${certs}/ghcr.io/hosts.toml: added [host."http://127.0.0.1:5000"] before the other hosts`,
  ]);
  assert.match(notes.join(''), /config_path = ".*certs\.d"/);
  assert.equal((await stat(join(certs, 'ghcr.io', 'hosts.toml'))).mode & 0o777, 0o600);
  assert.match(await readFile(join(certs, 'ghcr.io', 'hosts.toml'), 'utf8'), /old-mirror\.internal/);

  out.length = 0;
  await run(['containerd'], { mirror: 'http://127.0.0.1:5000', registries: 'docker.io,ghcr.io', write: certs });
  assert.deepEqual(out.join('').trim().split('\n'), [`unchanged ${certs}/docker.io/hosts.toml`, `unchanged ${certs}/ghcr.io/hosts.toml`]);

  out.length = 0;
  notes.length = 0;
  await run(['docker'], { mirror: 'http://127.0.0.1:5000', print: true });
  assert.deepEqual(JSON.parse(out.join('')), { 'registry-mirrors': ['http://127.0.0.1:5000'] });
  assert.match(notes.join(''), /Docker Hub only: ghcr\.io, quay\.io, registry\.k8s\.io are still pulled directly/);

  await assert.rejects(run(['docker'], { mirror: 'http://m:5000', registries: 'ghcr.io' }), /registry-mirrors only applies to Docker Hub/);
  await assert.rejects(run(['containerd'], { mirror: 'http://m:5000', print: true, write: dir }), /exclude each other/);
  await assert.rejects(run(['containerd'], {}), /--mirror URL is required/);
  await assert.rejects(run(['crio'], { mirror: 'http://m:5000' }), /containerd, docker, podman, k3s/);
  await assert.rejects(run(['containerd'], { mirror: 'http://m:5000', ca: '/etc/hostname' }), /--ca only applies to an https/);
  await assert.rejects(run(['containerd'], { mirror: 'https://m', ca: join(dir, 'missing.pem') }), /no such file/);
});

test('regmirror configure runs from the command line', async (t) => {
  const dir = await tempDir(t);
  const file = join(dir, 'registries.conf');
  const cli = ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'configure', 'podman', '--mirror', 'http://127.0.0.1:5000', '--registries', 'docker.io', '--write', file];
  const first = await exec(process.execPath, cli, { cwd: ROOT });
  assert.equal(first.stdout, `created ${file}: created with mirrors for docker.io\n`);
  const second = await exec(process.execPath, cli, { cwd: ROOT });
  assert.equal(second.stdout, `unchanged ${file}\n`);
  assert.deepEqual(toml(await readFile(file, 'utf8')).registry[0].mirror, [{ location: '127.0.0.1:5000/docker.io', insecure: true }]);

  const bad = await exec(process.execPath, cli.slice(0, 5), { cwd: ROOT }).catch((err: { code: number; stderr: string }) => err);
  assert.equal((bad as { code: number }).code, 2, 'a missing option is a usage error');
  assert.equal((bad as { stderr: string }).stderr, 'regmirror: configure: --mirror URL is required (e.g. --mirror http://127.0.0.1:5000), or --config mirror.yaml\n');
});

test('18.6 configure --config takes the registries from the upstreams and the mirror URL from listen', async (t) => {
  const dir = await tempDir(t);
  const config = join(dir, 'mirror.yaml');
  await writeFile(
    config,
    `listen: 0.0.0.0:5123\ndataDir: ${join(dir, 'data')}\nupstreams:\n  docker.io:\n    url: http://127.0.0.1:9\n    aliases: [index.docker.io]\n  ghcr.io:\n    url: http://127.0.0.1:9\n  internal:\n    url: http://127.0.0.1:9\n`,
  );
  const hosts = join(dir, 'certs.d');
  const main = ['--import', 'tsx', join(ROOT, 'src/main.ts')];
  const r = await exec(process.execPath, [...main, 'configure', 'containerd', '--config', config, '--write', hosts], { cwd: ROOT });
  assert.deepEqual(
    r.stdout.trim().split('\n').map((l) => l.replace(/:.*/, '')),
    ['docker.io', 'index.docker.io', 'ghcr.io'].map((reg) => `created ${join(hosts, reg, 'hosts.toml')}`),
    'a route name that is no registry host (internal) gets no file',
  );
  assert.deepEqual(toml(await readFile(join(hosts, 'ghcr.io', 'hosts.toml'), 'utf8')).host, { 'http://127.0.0.1:5123': { capabilities: ['pull', 'resolve'] } });
  assert.match(r.stderr, /^note: listen is 0\.0\.0\.0:5123 \(every address\): the mirror is given as http:\/\/127\.0\.0\.1:5123; on another machine pass --mirror http:\/\/HOST:5123$/m);

  // --mirror and --registries still win; a listen address is used as it is.
  await writeFile(config, `listen: 127.0.0.2:5001\ndataDir: ${join(dir, 'data')}\nupstreams:\n  quay.io:\n    url: http://127.0.0.1:9\n`);
  const printed = await exec(process.execPath, [...main, 'configure', 'podman', '--config', config, '--print'], { cwd: ROOT });
  assert.deepEqual(toml(printed.stdout).registry.map((x: { prefix: string; mirror: Array<{ location: string }> }) => [x.prefix, x.mirror[0].location]), [['quay.io', '127.0.0.2:5001/quay.io']]);
  const override = await exec(process.execPath, [...main, 'configure', 'podman', '--config', config, '--mirror', 'http://mirror.example:5000', '--registries', 'ghcr.io', '--print'], { cwd: ROOT });
  assert.deepEqual(toml(override.stdout).registry.map((x: { prefix: string; mirror: Array<{ location: string }> }) => [x.prefix, x.mirror[0].location]), [['ghcr.io', 'mirror.example:5000/ghcr.io']]);
});
