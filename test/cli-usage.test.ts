// The command line as a new operator meets it, run as a user runs it: per-command help,
// refused options with exit status 2, the version, --server as host:port, config errors
// that name the file and suggest the key meant, and the admin commands on a fresh data dir.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { singleImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli, get, startMirror, type Mirror } from './helpers.js';

const COMMANDS = ['serve', 'prewarm', 'export', 'import', 'status', 'cache', 'gc', 'verify', 'migrate', 'events', 'configure', 'tags', 'version'];
const VERSION = (JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

/** Runs each command line, a few at a time (each is a process start), answers in order. */
async function cliAll(lines: string[][]): Promise<Awaited<ReturnType<typeof cli>>[]> {
  const out: Awaited<ReturnType<typeof cli>>[] = [];
  for (let i = 0; i < lines.length; i += 4) out.push(...(await Promise.all(lines.slice(i, i + 4).map((args) => cli(args)))));
  return out;
}

let dir: string;
before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-cli-usage-'));
});
after(() => rm(dir, { recursive: true, force: true }));

describe('18.6 usage', () => {
  test('18.6 every command --help prints that command\'s usage to stdout, exit 0; --help alone the whole page', async () => {
    const helps = await cliAll(COMMANDS.map((c) => [c, '--help']));
    for (const [i, c] of COMMANDS.entries()) {
      const r = helps[i];
      assert.equal(r.code, 0, `${c}: ${r.stderr}`);
      assert.equal(r.stderr, '');
      assert.ok(r.stdout.startsWith(`usage: regmirror ${c}`), `${c} --help: ${r.stdout}`);
      assert.ok(!r.stdout.includes('commands:'), `${c} --help printed the global page`);
    }
    const status = await cli(['status', '-h']);
    assert.match(status.stdout, /^ {2}-s, --server HOST:PORT /m);
    assert.doesNotMatch(status.stdout, /--offline|--mirror|--repair/, 'options of other commands are not listed');
    const global = await cli(['--help']);
    assert.equal(global.code, 0);
    assert.ok(global.stdout.startsWith('usage: regmirror <command> [options]'));
    for (const c of COMMANDS) assert.match(global.stdout, new RegExp(`^ {2}${c}\\b`, 'm'));
  });

  test('18.6 an option the command does not take is refused with exit 2, also when another command takes it', async () => {
    const cases: Array<[string[], string]> = [
      [['status', '--offline'], 'regmirror: unknown option --offline (see regmirror status --help)'],
      [['gc', '--repair'], 'regmirror: unknown option --repair (see regmirror gc --help)'],
      [['serve', '--x'], 'regmirror: unknown option --x (see regmirror serve --help)'],
      [['verify', '-o', 'out.tar'], 'regmirror: unknown option -o (see regmirror verify --help)'],
      [['--bogus'], 'regmirror: unknown option --bogus (see regmirror --help)'],
      [['frobnicate'], 'regmirror: unknown command "frobnicate" (see regmirror --help)'],
    ];
    const results = await cliAll(cases.map(([args]) => args));
    for (const [i, [args, line]] of cases.entries()) {
      const r = results[i];
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, `${line}\n`);
      assert.equal(r.stdout, '');
    }
  });

  test('18.6 a missing or bad value exits 2 with a line naming the option', async () => {
    const cases: Array<[string[], string]> = [
      [['status', '--config'], 'regmirror status: --config needs a value (see regmirror status --help)'],
      [['export', '-o', '--all'], 'regmirror export: -o needs a value (see regmirror export --help)'],
      [['status', '--json=yes'], 'regmirror status: --json takes no value (see regmirror status --help)'],
      [['prewarm', '--concurrency', 'lots', 'alpine:3'], 'regmirror prewarm: --concurrency must be a whole number from 1 to 64'],
      [['migrate'], 'regmirror migrate: --to postgres://user@host:port/database is required'],
      [['configure', 'podman'], 'regmirror: configure: --mirror URL is required (e.g. --mirror http://127.0.0.1:5000), or --config mirror.yaml'],
    ];
    const results = await cliAll(cases.map(([args]) => args));
    for (const [i, [args, line]] of cases.entries()) {
      const r = results[i];
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, `${line}\n`);
    }
  });

  test('18.6 --version and regmirror version print the version', async () => {
    for (const args of [['--version'], ['version']]) {
      const r = await cli(args);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout, `regmirror ${VERSION}\n`);
    }
  });

  test('18.6 a bare regmirror prints the help to stderr and exits 2', async () => {
    const r = await cli([]);
    assert.equal(r.code, 2);
    assert.equal(r.stdout, '');
    assert.ok(r.stderr.startsWith('usage: regmirror <command> [options]'), r.stderr);
  });
});

describe('18.6 --server', () => {
  let up: FakeUpstream;
  let mirror: Mirror;
  before(async () => {
    up = await FakeUpstream.start();
    up.addImage(await singleImage({ name: 'team/app', tag: 'v1', seed: 'cli-usage' }));
    mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir: join(dir, 'served'), metadata: { kind: 'sqlite' } });
    assert.equal((await get(`${mirror.url}/v2/team/app/manifests/v1`)).status, 200);
  });
  after(async () => {
    await mirror.close();
    await up.close();
  });

  test('18.6 status --server takes host:port without a scheme', async () => {
    const r = await cli(['status', '--server', `127.0.0.1:${mirror.port}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^regmirror status at /);
    assert.match(r.stdout, /^docker\.io\s+-\s+-\s+1\s+1\s+0\s+-$/m, 'the pull just served, live');
  });

  test('18.6 a --server with a path or another scheme is refused with the expected form', async () => {
    const hint = 'give HOST:PORT (e.g. 127.0.0.1:5000) or http(s)://HOST:PORT';
    const cases: Array<[string[], string]> = [
      [['status', '--server', `http://127.0.0.1:${mirror.port}/_regmirror`], `regmirror status: --server http://127.0.0.1:${mirror.port}/_regmirror: a path, query or fragment means nothing here; ${hint}`],
      [['status', '--server', `ftp://127.0.0.1:${mirror.port}`], `regmirror status: --server ftp://127.0.0.1:${mirror.port}: the scheme ftp is neither http nor https; ${hint}`],
      [['status', '--server', 'mirror.local'], `regmirror status: --server mirror.local: not a host:port; ${hint}`],
      [['prewarm', '--server', `127.0.0.1:${mirror.port}/v2`, 'team/app:v1'], `regmirror prewarm: --server 127.0.0.1:${mirror.port}/v2: not a host:port; ${hint}`],
    ];
    const results = await cliAll(cases.map(([args]) => args));
    for (const [i, [args, line]] of cases.entries()) {
      const r = results[i];
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stderr, `${line}\n`);
    }
  });

  test('18.6 status --config says how fresh its figures are', async () => {
    await mirror.metadata.flush();
    const config = join(dir, 'served.yaml');
    await writeFile(config, `dataDir: ${join(dir, 'served')}\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const r = await cli(['status', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^docker\.io\s+-\s+-\s+1\s+1\s+0\s+-$/m, 'the flushed pull');
    const last = r.stdout.trimEnd().split('\n').at(-1);
    assert.equal(last, `figures read from the data dir ${join(dir, 'served')}, as of the server's last write: a running server writes its counts every 5 s (status --server HOST:PORT asks it for live ones)`);
  });
});

describe('18.6 config errors', () => {
  test('18.6 a YAML syntax error names the file', async () => {
    const file = join(dir, 'broken.yaml');
    await writeFile(file, 'listen: [\n');
    const r = await cli(['status', '--config', file]);
    assert.equal(r.code, 1);
    assert.match(r.stderr, new RegExp(`^config: ${file.replace(/[.]/g, '\\.')}: not valid YAML: \\S.*[^:]\\n$`));
  });

  test('18.6 an unknown key suggests the nearest known one', async () => {
    const cases: Array<[string, string]> = [
      ['upstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    tagTTL: 5m\n', 'config: upstreams.ghcr.io.tagTTL: unknown key (did you mean tagTtl?)'],
      ['listn: ":5000"\n', 'config: listn: unknown key (did you mean listen?)'],
      ['storage:\n  maxSzie: 10GB\n', 'config: storage.maxSzie: unknown key (did you mean maxSize?)'],
      ['log:\n  colour: true\n', 'config: log.colour: unknown key (expected one of level, format)'],
    ];
    for (const [yaml, line] of cases) {
      const file = join(dir, 'typo.yaml');
      await writeFile(file, yaml);
      const r = await cli(['status', '--config', file]);
      assert.equal(r.code, 1, yaml);
      assert.equal(r.stderr, `${line}\n`);
    }
  });
});

describe('18.6 a fresh install', () => {
  let dataDir: string;
  let config: string;
  const noCache = () => `no cache yet at ${dataDir}: nothing has been pulled through a mirror using this data dir`;
  before(async () => {
    dataDir = join(dir, 'fresh', 'data');
    config = join(dir, 'fresh.yaml');
    // Credentials of an upstream in variables only the server's environment sets.
    await writeFile(config, `dataDir: ${dataDir}\nupstreams:\n  ghcr.io:\n    url: https://ghcr.io\n    credentials:\n      username: \${REGMIRROR_186_UNSET_USER}\n      password: \${REGMIRROR_186_UNSET_TOKEN}\n`);
  });

  test('18.6 status, cache ls, gc and verify say there is no cache yet, need no upstream secret and create nothing', async () => {
    const cases: Array<[string[], string]> = [
      [['status'], noCache()],
      [['cache', 'ls'], noCache()],
      [['gc'], `${noCache()}; nothing to collect`],
      [['verify'], `${noCache()}; nothing to verify`],
    ];
    for (const [args, line] of cases) {
      const r = await cli([...args, '--config', config]);
      assert.equal(r.code, 0, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(r.stdout, `${line}\n`);
      assert.equal(r.stderr, '');
    }
    const json = await cli(['cache', 'ls', '--json', '--config', config]);
    assert.equal(json.code, 0);
    assert.deepEqual(JSON.parse(json.stdout), []);
    assert.equal(json.stderr, `${noCache()}\n`);
    assert.deepEqual(await readdir(join(dir, 'fresh')).catch(() => []), [], 'nothing was created');
  });

  test('18.6 serve still needs the upstream secrets', async () => {
    const r = await cli(['serve', '--config', config]);
    assert.equal(r.code, 1);
    assert.equal(r.stderr, 'config: upstreams.ghcr.io.credentials.username: environment variable REGMIRROR_186_UNSET_USER is not set\n');
  });
});
