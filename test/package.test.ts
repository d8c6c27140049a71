// `npm run package`: the tarball and the .deb install with no network and no npm, and what
// they install serves pulls. The packages are built once; installing runs in a network
// namespace of its own (`unshare -n`: loopback only), the servers run with a PATH that holds
// no node and no npm, and their only upstream is the fixture on loopback. The .deb goes
// into a fresh root with `dpkg --root`, its maintainer scripts run chrootless with
// DPKG_ROOT set, so the host's /etc, /usr and dpkg database are never touched.
import assert from 'node:assert/strict';
import { execFile, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, readFile, readdir, readlink, realpath, rm, stat, symlink, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { requireTools } from './e2e/harness.js';
import { get, sha256 } from './helpers.js';

const ROOT = new URL('..', import.meta.url).pathname;
const VERSION = (JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const DEB_ARCH: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };
const UNSHARE = ['/usr/bin/unshare', '/bin/unshare'].find((p) => existsSync(p)) ?? 'unshare';

interface Ran {
  code: number;
  stdout: string;
  stderr: string;
}

function exec(cmd: string, args: string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv; timeoutMs?: number } = {}): Promise<Ran> {
  return new Promise((resolve) => {
    execFile(cmd, args, { cwd: opts.cwd, env: opts.env ?? process.env, timeout: opts.timeoutMs ?? 120_000, killSignal: 'SIGKILL', maxBuffer: 64 << 20 }, (err, stdout, stderr) => {
      resolve({ code: err ? (typeof err.code === 'number' ? err.code : 127) : 0, stdout: String(stdout), stderr: String(stderr) });
    });
  });
}

async function must(what: string, p: Promise<Ran>): Promise<string> {
  const r = await p;
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-4000)}`);
  return r.stdout;
}

let dir: string;
let out: string;
let tools: string;
let up: FakeUpstream;
let image: FixtureImage;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-package-'));
  out = join(dir, 'out');
  await must('npm run package', exec('npm', ['run', 'package', '--', '--out', out], { cwd: ROOT, timeoutMs: 600_000 }));
  // What the launcher uses and nothing more: no node, no npm.
  tools = join(dir, 'tools');
  await mkdir(tools);
  for (const t of ['sh', 'readlink', 'dirname']) await symlink(await realpath(`/usr/bin/${t}`).catch(() => realpath(`/bin/${t}`)), join(tools, t));
  up = await FakeUpstream.start();
  image = await singleImage({ name: 'library/hello', tag: '1', seed: 'package', layerSizes: [300_000] });
  up.addImage(image);
});
after(async () => {
  await up?.close();
  if (dir) await rm(dir, { recursive: true, force: true });
});

const tarball = () => join(out, `regmirror-${VERSION}-linux-${process.arch}.tar.gz`);
const deb = () => join(out, `regmirror_${VERSION}_${DEB_ARCH[process.arch]}.deb`);
/** Runs a command with no network but loopback: what installing on an air-gapped host is. */
// By its path: the bare environment's PATH would not find it.
const offline = (cmd: string, args: string[], env?: NodeJS.ProcessEnv) => exec(UNSHARE, ['--net', '--', cmd, ...args], { env });
const bare = () => ({ PATH: tools, HOME: dir, LANG: 'C' });

async function writeConfig(path: string, dataDir: string): Promise<void> {
  await writeFile(path, `listen: "127.0.0.1:0"\ndataDir: ${dataDir}\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
}

interface Served {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

/** `<launcher> serve --config FILE` with the bare environment; resolves once it listens. */
function serve(launcher: string, config: string): Promise<Served> {
  const child = spawn(launcher, ['serve', '--config', config], { stdio: ['ignore', 'ignore', 'pipe'], env: bare() });
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  const stop = async () => {
    child.kill('SIGTERM');
    await exited;
  };
  let seen = '';
  return new Promise((resolve, reject) => {
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
      reject(new Error(`no listening line within 30 s:\n${seen}`));
    }, 30_000);
    child.stderr.on('data', (c: Buffer) => {
      seen += c.toString();
      const m = /"msg":"listening".*?"url":"([^"]+)"/.exec(seen);
      if (m) {
        clearTimeout(timer);
        resolve({ url: m[1], pid: child.pid!, stop });
      }
    });
    void exited.then(() => {
      clearTimeout(timer);
      reject(new Error(`exited before listening:\n${seen}`));
    });
  });
}

/** A pull through the mirror: the tag's manifest and a layer, each with the digest the upstream holds. */
async function assertPull(base: string): Promise<string> {
  const manifest = await get(`${base}/v2/library/hello/manifests/1`, { headers: { accept: image.root.mediaType } });
  assert.equal(manifest.status, 200, manifest.body.toString());
  assert.equal(manifest.headers['docker-content-digest'], image.root.digest);
  assert.equal(sha256(manifest.body), image.root.digest);
  const layer = (JSON.parse(manifest.body.toString()) as { layers: Array<{ digest: string }> }).layers[0].digest;
  const blob = await get(`${base}/v2/library/hello/blobs/${layer}`);
  assert.equal(blob.status, 200);
  assert.equal(sha256(blob.body), layer);
  return layer;
}

async function filesUnder(d: string): Promise<string[]> {
  const found: string[] = [];
  for (const e of await readdir(d, { withFileTypes: true, recursive: true })) if (e.isFile()) found.push(join(e.parentPath, e.name));
  return found;
}

test('18.5 npm run package writes a tarball and a .deb named for the version and the architecture', () => {
  assert.ok(existsSync(tarball()), tarball());
  assert.ok(existsSync(deb()), deb());
});

test('18.5 the tarball unpacked into a fresh directory runs on its own node and serves a pull', async (t) => {
  if (!requireTools(t, 'unshare', 'tar')) return;
  const home = join(dir, 'unpacked');
  await mkdir(home);
  await must('tar x', offline('tar', ['-xzf', tarball(), '-C', home]));
  const tree = join(home, `regmirror-${VERSION}`);
  assert.deepEqual((await readdir(tree)).sort(), ['bin', 'lib', 'node', 'share']);
  for (const f of ['node/bin/node', 'node/LICENSE', 'lib/dist/main.js', 'lib/package.json', 'lib/node_modules/better-sqlite3/build/Release/better_sqlite3.node', 'share/regmirror/regmirror.service', 'share/regmirror/mirror.example.yaml']) {
    assert.ok(existsSync(join(tree, f)), f);
  }
  assert.ok(!existsSync(join(tree, 'lib/node_modules/typescript')), 'no dev dependency');
  assert.equal(await readFile(join(tree, 'share/regmirror/mirror.example.yaml'), 'utf8'), await readFile(join(ROOT, 'mirror.example.yaml'), 'utf8'));

  // Through a link, as /usr/bin/regmirror would be: the launcher finds its tree by its real path.
  await symlink(join(tree, 'bin/regmirror'), join(tools, 'regmirror'));
  assert.equal((await must('--version', offline(join(tools, 'regmirror'), ['--version'], bare()))).trim(), `regmirror ${VERSION}`);

  const config = join(dir, 'tarball.yaml');
  await writeConfig(config, join(dir, 'tarball-data'));
  const mirror = await serve(join(tools, 'regmirror'), config);
  try {
    assert.equal(await readlink(`/proc/${mirror.pid}/exe`), await realpath(join(tree, 'node/bin/node')), 'the bundled node runs the server');
    const before = up.counters.manifestGet;
    await assertPull(mirror.url);
    assert.ok(up.counters.manifestGet > before, 'the pull went to the fixture upstream');
  } finally {
    await mirror.stop();
  }
});

test('18.5 dpkg-deb shows the layout, the conffile, and a unit that runs /usr/bin/regmirror as user regmirror', async (t) => {
  if (!requireTools(t, 'dpkg-deb')) return;
  const info = await must('dpkg-deb --info', exec('dpkg-deb', ['--info', deb()]));
  assert.match(info, /^ Package: regmirror$/m);
  assert.match(info, new RegExp(`^ Version: ${VERSION.replace(/\./g, '\\.')}$`, 'm'));
  assert.match(info, new RegExp(`^ Architecture: ${DEB_ARCH[process.arch]}$`, 'm'));
  assert.match(info, /^ Depends: libc6, libstdc\+\+6, libgcc-s1$/m, 'no nodejs, no npm');
  for (const s of ['conffiles', 'postinst', 'prerm', 'postrm']) assert.match(info, new RegExp(`\\b${s}\\b`), s);
  const conffiles = await must('dpkg-deb --info conffiles', exec('dpkg-deb', ['--info', deb(), 'conffiles']));
  assert.equal(conffiles, '/etc/regmirror/mirror.yaml\n');

  const contents = await must('dpkg-deb --contents', exec('dpkg-deb', ['--contents', deb()]));
  const entries = new Map(contents.split('\n').filter(Boolean).map((l) => {
    const cols = l.split(/\s+/);
    return [cols[5].replace(/^\./, ''), l] as const;
  }));
  for (const p of ['/usr/lib/regmirror/bin/regmirror', '/usr/lib/regmirror/node/bin/node', '/usr/lib/regmirror/lib/dist/main.js', '/lib/systemd/system/regmirror.service', '/etc/regmirror/mirror.yaml']) {
    assert.ok(entries.has(p), p);
    assert.match(entries.get(p)!, / root\/root /, `${p} owned by root`);
  }
  assert.match(entries.get('/usr/bin/regmirror')!, /-> \.\.\/lib\/regmirror\/bin\/regmirror$/);
  assert.ok(![...entries.keys()].some((p) => p.startsWith('/var/lib/regmirror')), 'the data directory is made by postinst, so dpkg -r never removes it');

  const extracted = join(dir, 'deb-x');
  await must('dpkg-deb -x', exec('dpkg-deb', ['-x', deb(), extracted]));
  const unit = await readFile(join(extracted, 'lib/systemd/system/regmirror.service'), 'utf8');
  assert.match(unit, /^ExecStart=\/usr\/bin\/regmirror serve --config \/etc\/regmirror\/mirror\.yaml$/m);
  assert.match(unit, /^User=regmirror$/m);
  assert.match(unit, /^StateDirectory=regmirror$/m);
  assert.match(unit, /^ProtectSystem=strict$/m);
  assert.doesNotMatch(unit, /^DynamicUser=/m);
  assert.match(await readFile(join(extracted, 'etc/regmirror/mirror.yaml'), 'utf8'), /^dataDir: \/var\/lib\/regmirror$/m);

  if (!requireTools(t, 'systemd-analyze')) return;
  // verify wants ExecStart's program to exist: the same unit, pointed at the extracted launcher.
  const checked = join(dir, 'regmirror.service');
  await writeFile(checked, unit.replace('ExecStart=/usr/bin/regmirror', `ExecStart=${join(extracted, 'usr/lib/regmirror/bin/regmirror')}`));
  const verify = await exec('systemd-analyze', ['verify', checked]);
  assert.equal(verify.code, 0, verify.stderr);
  assert.equal(verify.stderr.split('\n').filter((l) => l.includes('regmirror.service')).join('\n'), '', 'no warnings about the unit');
  // As locked down as the unit it comes from: 2.5 or less is what systemd calls OK.
  const security = await exec('systemd-analyze', ['security', '--offline=true', '--threshold=25', checked]);
  assert.equal(security.code, 0, security.stdout.split('\n').slice(-3).join('\n') + security.stderr);
});

test('18.5 the .deb installed into a fresh root serves a pull; dpkg -r removes it and keeps the data, purge the config', async (t) => {
  if (!requireTools(t, 'dpkg', 'unshare', 'useradd')) return;
  // A fresh root: an empty dpkg database and the accounts every system starts with.
  const root = join(dir, 'root');
  await mkdir(join(root, 'var/lib/dpkg/info'), { recursive: true });
  await mkdir(join(root, 'var/lib/dpkg/updates'));
  await mkdir(join(root, 'etc'));
  await writeFile(join(root, 'var/lib/dpkg/status'), '');
  await writeFile(join(root, 'var/lib/dpkg/available'), '');
  await writeFile(join(root, 'etc/passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await writeFile(join(root, 'etc/group'), 'root:x:0:\n');
  // The root has no libc6 package of its own: the host's libc serves it, as it serves every
  // program started from here.
  const hostAccounts = await readFile('/etc/passwd', 'utf8');
  const dpkg = (...args: string[]) => offline('dpkg', [`--root=${root}`, '--force-script-chrootless', ...args]);
  await must('dpkg -i', dpkg('--force-depends', '-i', deb()));

  const passwd = await readFile(join(root, 'etc/passwd'), 'utf8');
  const user = /^regmirror:[^:]*:(\d+):(\d+):/m.exec(passwd);
  assert.ok(user, `postinst adds the user regmirror:\n${passwd}`);
  assert.match(await readFile(join(root, 'etc/group'), 'utf8'), /^regmirror:/m);
  assert.equal(await readFile('/etc/passwd', 'utf8'), hostAccounts, "the host's accounts are untouched");
  const data = join(root, 'var/lib/regmirror');
  const st = await stat(data);
  assert.deepEqual([st.uid, st.gid, st.mode & 0o777], [Number(user[1]), Number(user[2]), 0o750]);
  assert.equal(await readlink(join(root, 'usr/bin/regmirror')), '../lib/regmirror/bin/regmirror');

  // The operator's edit of the conffile: this fixture instead of the public registries.
  await writeConfig(join(root, 'etc/regmirror/mirror.yaml'), data);
  const mirror = await serve(join(root, 'usr/bin/regmirror'), join(root, 'etc/regmirror/mirror.yaml'));
  let layer: string;
  try {
    assert.equal(await readlink(`/proc/${mirror.pid}/exe`), join(root, 'usr/lib/regmirror/node/bin/node'));
    layer = await assertPull(mirror.url);
  } finally {
    await mirror.stop();
  }
  const cached = async () => (await filesUnder(data)).map((f) => f.slice(data.length));
  assert.ok((await cached()).some((f) => f.endsWith(layer.slice('sha256:'.length))), 'the layer is in the cache');

  await must('dpkg -r', dpkg('-r', 'regmirror'));
  for (const gone of ['usr/lib/regmirror', 'usr/bin/regmirror', 'lib/systemd/system/regmirror.service']) assert.ok(!existsSync(join(root, gone)), `${gone} removed`);
  assert.ok(existsSync(join(root, 'etc/regmirror/mirror.yaml')), 'remove keeps the conffile');
  assert.ok((await cached()).some((f) => f.endsWith(layer.slice('sha256:'.length))), 'remove keeps the cache');
  assert.ok((await cached()).includes('/mirror.db'), 'and its database');

  await must('dpkg --purge', dpkg('--purge', 'regmirror'));
  assert.ok(!existsSync(join(root, 'etc/regmirror')), 'purge removes the config');
  assert.ok((await cached()).some((f) => f.endsWith(layer.slice('sha256:'.length))), 'purge keeps the cache');
  assert.match(await readFile(join(root, 'etc/passwd'), 'utf8'), /^regmirror:/m, 'and the user that owns it');
  const status = await readFile(join(root, 'var/lib/dpkg/status'), 'utf8');
  assert.doesNotMatch(status, /^Package: regmirror$/m, 'dpkg forgets the package');
});
