// `npm run package`: an install for hosts without network or npm. Stages
// regmirror-<version>/ (the built app, its production node_modules, the Node.js binary this
// runs on, a launcher, the systemd unit and the example config), tars it as
// regmirror-<version>-linux-<arch>.tar.gz and packs the same tree as a .deb.
//
//   npm run package [-- --out DIR]      (default: dist-package/)
//
// Network is needed here at most for npm's registry (the npm cache is preferred); the
// outputs need none to install or run.
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { chmod, copyFile, mkdir, readFile, realpath, rm, writeFile } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { buildDeb, packagedUnit } from './deb.js';

const ROOT = new URL('..', import.meta.url).pathname;

/** Node's architecture names and Debian's, for the ones Node ships Linux builds of. */
const ARCHES: Record<string, string> = { x64: 'amd64', arm64: 'arm64' };

// Resolves its own path through links (/usr/bin/regmirror → /usr/lib/regmirror/bin/regmirror),
// so it runs from wherever the tree was unpacked and never uses a node on PATH.
const LAUNCHER = `#!/bin/sh
self=$(readlink -f -- "$0") || exit 1
home=$(dirname -- "$(dirname -- "$self")")
exec "$home/node/bin/node" "$home/lib/dist/main.js" "$@"
`;

function sh(cmd: string, args: string[], cwd: string, env: NodeJS.ProcessEnv = process.env): void {
  execFileSync(cmd, args, { cwd, env, stdio: 'inherit' });
}

/** dist/, package.json with its lockfile, and the production node_modules, in lib/. */
async function stageApp(lib: string): Promise<void> {
  await mkdir(lib, { recursive: true });
  // A clean outDir: a checkout's dist/ may hold output of sources since removed.
  sh('npm', ['run', 'build', '--silent', '--', '--outDir', join(lib, 'dist')], ROOT);
  for (const f of ['package.json', 'package-lock.json']) await copyFile(join(ROOT, f), join(lib, f));
  // Scripts off: better-sqlite3's would download a prebuilt binary or compile sqlite.
  const env = { ...process.env, npm_config_update_notifier: 'false' };
  sh('npm', ['ci', '--omit=dev', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund'], lib, env);
  await nativeSqlite(lib, env);
}

/**
 * better-sqlite3's addon for this Node and architecture: the checkout's own build when it is
 * the locked version (the one the tests ran against), else compiled here against Node's
 * headers. Either way it is loaded once by the bundled node before packaging goes on.
 */
async function nativeSqlite(lib: string, env: NodeJS.ProcessEnv): Promise<void> {
  const pkg = join(lib, 'node_modules/better-sqlite3');
  const addon = 'build/Release/better_sqlite3.node';
  const local = join(ROOT, 'node_modules/better-sqlite3');
  const version = async (dir: string) => (JSON.parse(await readFile(join(dir, 'package.json'), 'utf8')) as { version: string }).version;
  if (existsSync(join(local, addon)) && (await version(local)) === (await version(pkg))) {
    await mkdir(join(pkg, 'build/Release'), { recursive: true });
    await copyFile(join(local, addon), join(pkg, addon));
  } else {
    const prefix = dirname(dirname(await realpath(process.execPath)));
    const headers = existsSync(join(prefix, 'include/node/node_api.h')) ? { npm_config_nodedir: prefix } : {};
    sh('npm', ['rebuild', 'better-sqlite3', '--build-from-source'], lib, { ...env, ...headers });
    for (const d of ['build/Release/obj', 'build/Release/obj.target', 'build/Release/.deps', 'build/deps', 'build/Release/sqlite3.a', 'build/Release/test_extension.node']) {
      await rm(join(pkg, d), { recursive: true, force: true });
    }
  }
  // The sqlite sources are only for compiling.
  for (const d of ['deps', 'src']) await rm(join(pkg, d), { recursive: true, force: true });
  sh(process.execPath, ['-e', "new (require('better-sqlite3'))(':memory:').prepare('select 1').get()"], lib);
}

/** The running Node binary and its licence (official tarballs and Debian's nodejs place it differently). */
async function stageNode(nodeDir: string): Promise<void> {
  const exe = await realpath(process.execPath);
  await mkdir(join(nodeDir, 'bin'), { recursive: true });
  await copyFile(exe, join(nodeDir, 'bin/node'));
  await chmod(join(nodeDir, 'bin/node'), 0o755);
  const prefix = dirname(dirname(exe));
  const licence = ['LICENSE', 'share/doc/nodejs/LICENSE', 'share/doc/node/LICENSE'].map((p) => join(prefix, p)).find((p) => existsSync(p));
  if (licence) await copyFile(licence, join(nodeDir, 'LICENSE'));
  else console.warn(`package: no Node.js LICENSE found under ${prefix}; the tree ships without it`);
}

async function stage(dir: string): Promise<void> {
  await rm(dir, { recursive: true, force: true });
  await stageApp(join(dir, 'lib'));
  await stageNode(join(dir, 'node'));
  await mkdir(join(dir, 'bin'), { recursive: true });
  await writeFile(join(dir, 'bin/regmirror'), LAUNCHER, { mode: 0o755 });
  const share = join(dir, 'share/regmirror');
  await mkdir(share, { recursive: true });
  await writeFile(join(share, 'regmirror.service'), packagedUnit(await readFile(join(ROOT, 'deploy/systemd/regmirror.service'), 'utf8')));
  await copyFile(join(ROOT, 'mirror.example.yaml'), join(share, 'mirror.example.yaml'));
}

async function main(): Promise<void> {
  const { values } = parseArgs({ options: { out: { type: 'string' } } });
  const out = resolve(values.out ?? join(ROOT, 'dist-package'));
  const pkg = JSON.parse(await readFile(join(ROOT, 'package.json'), 'utf8')) as { version: string; description: string };
  const arch = process.arch;
  if (process.platform !== 'linux' || !ARCHES[arch]) throw new Error(`package: builds for linux x64/arm64, not ${process.platform}/${arch}`);
  const name = `regmirror-${pkg.version}`;
  await mkdir(out, { recursive: true });
  await stage(join(out, name));
  const tarball = join(out, `${name}-linux-${arch}.tar.gz`);
  sh('tar', ['--sort=name', '--owner=0', '--group=0', '--numeric-owner', '-czf', tarball, name], out);
  const deb = await buildDeb({ root: ROOT, stage: join(out, name), out, version: pkg.version, arch: ARCHES[arch], description: pkg.description });
  await rm(join(out, name), { recursive: true, force: true });
  console.log(`${tarball}\n${deb}`);
}

await main();
