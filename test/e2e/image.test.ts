// The container image: `buildah bud` builds the Dockerfile with no container registry in
// reach, then podman runs the image's own entrypoint and skopeo pulls through it.
//
// Stock bases (node:20-bookworm-slim) cannot be pulled here, so the test assembles two
// local bases from this machine's own files and passes them as BASE and RUNTIME_BASE:
//   build base:   node, npm and Node's headers, plus python3, make, g++ and everything
//                 they need (the installed Debian packages' files, dependencies included),
//                 and an npmrc that makes npm work offline from a prepared cache;
//   runtime base: node, a shell and coreutils — so the test can check that no compiler
//                 and no dev dependency reaches the final image.
// The npm cache is this machine's, copied, with anything missing fetched once by npm on
// the host (the npm registry, never a container registry); the build itself is offline.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { constants } from 'node:fs';
import { access, chmod, cp, lstat, mkdir, mkdtemp, readFile, readdir, readlink, realpath, rm, symlink, writeFile } from 'node:fs/promises';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { multiPlatformImage, sha256, singleImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { requireTools, skopeo, type RunResult } from './harness.js';

const ROOT = new URL('../..', import.meta.url).pathname;
const BUILD_BASE = 'localhost/regmirror-test-base:latest';
const RUNTIME_BASE = 'localhost/regmirror-test-runtime:latest';
const IMAGE = 'localhost/regmirror:e2e';

/** Debian packages the build stage needs (their dependencies are added). */
const BUILD_PACKAGES = ['dash', 'bash', 'coreutils', 'debianutils', 'sed', 'grep', 'mawk', 'findutils', 'diffutils', 'tar', 'gzip', 'util-linux', 'make', 'g++', 'python3'];
/** What the runtime stage's RUN and the entrypoint's `#!/usr/bin/env node` need, plus node's own libraries. */
const RUNTIME_PACKAGES = ['dash', 'coreutils', 'libstdc++6', 'libgcc-s1'];
const SKIP_DIRS = /^usr\/share\/(doc|man|info|locale|lintian|bug)\//;

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

/** Like harness.run, with a longer deadline for builds; never rejects. */
function runLong(cmd: string, args: string[], opts: { timeoutMs?: number; cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<RunResult> {
  const timeout = opts.timeoutMs ?? 120_000;
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout, killSignal: 'SIGKILL', maxBuffer: 256 << 20, cwd: opts.cwd, env: opts.env ?? process.env }, (err, stdout, stderr) => {
      const code = err ? (typeof err.code === 'number' ? err.code : 127) : 0;
      resolve({ code, stdout: String(stdout), stderr: String(stderr) + (err?.killed ? `\n[killed after ${timeout} ms]` : '') });
    });
  });
}

async function must(what: string, p: Promise<RunResult>): Promise<string> {
  const r = await p;
  assert.equal(r.code, 0, `${what} failed (${r.code}):\n${r.stdout.slice(-4000)}\n${r.stderr.slice(-8000)}`);
  return r.stdout;
}

// ---------------------------------------------------------------------------
// Local base images from this machine's files

/** The installed packages `roots` need, by Depends and Pre-Depends (first installed alternative). */
async function dpkgClosure(roots: string[]): Promise<string[]> {
  const out = await must('dpkg-query', runLong('dpkg-query', ['-W', '-f', '${Package}\t${db:Status-Status}\t${Depends}, ${Pre-Depends}\t${Provides}\n']));
  const deps = new Map<string, string>();
  const provides = new Map<string, string>();
  for (const line of out.split('\n')) {
    const [name, status, dep, prov] = line.split('\t');
    if (status !== 'installed') continue;
    deps.set(name, dep);
    for (const p of (prov ?? '').split(',')) {
      const n = p.trim().split(' ')[0];
      if (n && !provides.has(n)) provides.set(n, name);
    }
  }
  const seen = new Set<string>();
  const todo = [...roots];
  while (todo.length) {
    const name = todo.pop()!;
    if (seen.has(name)) continue;
    if (!deps.has(name)) throw new Error(`package ${name} is not installed`);
    seen.add(name);
    for (const alternatives of deps.get(name)!.split(',')) {
      for (const alt of alternatives.split('|')) {
        const n = alt.trim().split(/[ :]/)[0];
        if (!n) continue;
        const pick = deps.has(n) ? n : provides.get(n);
        if (pick) {
          todo.push(pick);
          break;
        }
      }
    }
  }
  return [...seen].sort();
}

/** Relative, symlink-resolved-directory paths of the packages' files and symlinks. */
async function packageFiles(packages: string[]): Promise<Set<string>> {
  const out = await must('dpkg-query -L', runLong('dpkg-query', ['-L', ...packages]));
  const dirs = new Map<string, string>();
  const files = new Set<string>();
  for (const path of out.split('\n')) {
    if (!path.startsWith('/')) continue;
    const st = await lstat(path).catch(() => undefined);
    if (!st || st.isDirectory()) continue;
    const dir = dirname(path);
    if (!dirs.has(dir)) dirs.set(dir, await realpath(dir));
    const rel = join(dirs.get(dir)!, basename(path)).slice(1);
    if (!SKIP_DIRS.test(rel)) files.add(rel);
  }
  return files;
}

/** Links such as /usr/bin/cc → /etc/alternatives/cc → gcc are made by maintainer scripts, not listed by dpkg. */
async function alternatives(files: Set<string>): Promise<Array<[string, string]>> {
  const links: Array<[string, string]> = [];
  for (const dir of ['usr/bin', 'usr/sbin']) {
    for (const name of await readdir(`/${dir}`)) {
      const path = `/${dir}/${name}`;
      const target = await readlink(path).catch(() => '');
      if (!target.startsWith('/etc/alternatives/')) continue;
      const real = await realpath(path).catch(() => '');
      if (real && files.has(real.slice(1))) links.push([`${dir}/${name}`, real]);
    }
  }
  return links;
}

/** node, and where npm and Node's headers live beside it. */
async function nodeInstall(): Promise<{ node: string; prefix: string; npm: string; headers: string }> {
  const node = await realpath(process.execPath);
  const prefix = dirname(dirname(node));
  const npm = join(prefix, 'lib/node_modules/npm');
  const headers = join(prefix, 'include/node');
  for (const p of [npm, headers]) await access(p, constants.R_OK);
  return { node, prefix, npm, headers };
}

interface BaseSpec {
  packages: string[];
  /** Absolute paths added whole (recursively). */
  trees: string[];
  /** Files to write into the image, by absolute path. */
  files: Record<string, string>;
}

/** A rootfs tarball from the machine's files, committed as `name` with buildah. */
async function assembleBase(b: (args: string[]) => Promise<RunResult>, work: string, name: string, spec: BaseSpec): Promise<void> {
  const files = await packageFiles(await dpkgClosure(spec.packages));
  const stage = join(work, `${basename(name).replace(/[^a-z0-9-]/g, '_')}-stage`);
  await mkdir(stage, { recursive: true });
  await chmod(stage, 0o755);
  // The top-level symlinks of a merged /usr (bin → usr/bin …), as on this machine.
  for (const top of await readdir('/')) {
    const st = await lstat(`/${top}`);
    if (st.isSymbolicLink()) await symlink(await readlink(`/${top}`), join(stage, top));
  }
  for (const [link, target] of await alternatives(files)) {
    await mkdir(join(stage, dirname(link)), { recursive: true });
    await symlink(target, join(stage, link));
  }
  await mkdir(join(stage, 'tmp'), { mode: 0o1777 });
  await chmod(join(stage, 'tmp'), 0o1777);
  await mkdir(join(stage, 'root'), { mode: 0o700 });
  const etc = {
    '/etc/passwd': 'root:x:0:0:root:/root:/bin/sh\n',
    '/etc/group': 'root:x:0:\n',
    ...spec.files,
  };
  for (const [path, text] of Object.entries(etc)) {
    await mkdir(join(stage, dirname(path)), { recursive: true });
    await writeFile(join(stage, path), text);
  }
  const list = join(work, `${basename(stage)}.list`);
  await writeFile(list, [...files].join('\n') + '\n');
  const tarball = join(work, `${basename(stage)}.tar`);
  await must('tar (packages)', runLong('tar', ['-cf', tarball, '-C', '/', '--no-recursion', '-T', list]));
  if (spec.trees.length) await must('tar (trees)', runLong('tar', ['-rf', tarball, '-C', '/', ...spec.trees.map((p) => p.slice(1))]));
  await must('tar (stage)', runLong('tar', ['-rf', tarball, '-C', stage, '.']));

  const ctr = (await must('buildah from scratch', b(['from', 'scratch']))).trim();
  try {
    await must('buildah add', b(['add', ctr, tarball, '/']));
    await must('buildah config', b(['config', '--env', 'PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', ctr]));
    await must('buildah commit', b(['commit', '--quiet', '--format', 'docker', ctr, name]));
  } finally {
    await b(['rm', ctr]);
  }
  await rm(tarball, { force: true });
}

/**
 * This machine's npm cache, copied, made complete for the lockfile: npm on the host
 * installs the project into a scratch dir preferring the cache, fetching only what is
 * missing. npm in the build then runs with offline=true against this copy.
 */
async function npmCache(work: string): Promise<string> {
  const cache = join(work, 'npm-cache');
  const home = (await must('npm config get cache', runLong('npm', ['config', 'get', 'cache']))).trim();
  await cp(join(home, '_cacache'), join(cache, '_cacache'), { recursive: true }).catch(() => undefined);
  const scratch = join(work, 'npm-prime');
  await mkdir(scratch);
  for (const f of ['package.json', 'package-lock.json']) await cp(join(ROOT, f), join(scratch, f));
  await must('npm ci (priming the cache)', runLong('npm', ['ci', '--ignore-scripts', '--prefer-offline', '--no-audit', '--no-fund', '--cache', cache], { cwd: scratch, timeoutMs: 300_000 }));
  await rm(scratch, { recursive: true, force: true });
  return cache;
}

// ---------------------------------------------------------------------------

async function freePort(): Promise<number> {
  const server = createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  await new Promise((resolve) => server.close(resolve));
  return port;
}

/** Lazily unmounts whatever podman left mounted below `dir`. */
async function unmountUnder(dir: string): Promise<void> {
  const info = await readFile('/proc/self/mountinfo', 'utf8').catch(() => '');
  const points = info.split('\n').map((l) => l.split(' ')[4]).filter((p): p is string => p !== undefined && p.startsWith(dir + '/'));
  for (const p of points.sort((a, b) => b.length - a.length)) await runLong('umount', ['-l', p]);
}

const single = await singleImage({ name: 'library/img-single', tag: 'v1', seed: 'image-e2e-single' });
const index = await multiPlatformImage({ name: 'library/img-index', tag: 'v2', seed: 'image-e2e-index', platforms });

test('the Dockerfile builds offline; the image runs as non-root and serves pulls with correct digests', { timeout: 20 * 60_000 }, async (t) => {
  if (!requireTools(t, 'buildah', 'podman', 'skopeo', 'dpkg-query', 'tar', 'npm')) return;
  const work = await mkdtemp(join(tmpdir(), 'regmirror-image-'));
  const storage = ['--root', join(work, 'storage'), '--runroot', join(work, 'run'), '--storage-driver', 'vfs'];
  const buildah = (args: string[], timeoutMs?: number) => runLong('buildah', [...storage, ...args], { timeoutMs, cwd: ROOT });
  const podman = (args: string[], timeoutMs?: number) => runLong('podman', [...storage, ...args], { timeoutMs });
  // This sandbox cannot raise rlimits (no CAP_SYS_RESOURCE) and podman's defaults would;
  // healthcheck timers need systemd, so HEALTHCHECK is run by hand below.
  const runFlags = ['--pull', 'never', '--ulimit', 'nofile=4096:4096', '--ulimit', 'nproc=4096:4096', '--health-interval', 'disable'];
  t.after(async () => {
    await podman(['rm', '--all', '--force', '--time', '2']);
    await buildah(['rm', '--all']);
    await unmountUnder(work);
    // Over a gigabyte of vfs layers: retry, and say so if anything is left.
    await rm(work, { recursive: true, force: true, maxRetries: 5, retryDelay: 500 }).catch(async (err: Error) => {
      const again = await runLong('rm', ['-rf', work]);
      if (again.code !== 0) console.error(`image test: could not remove ${work}: ${err.message}; ${again.stderr}`);
    });
  });
  const timings: string[] = [];
  const timed = async <T>(what: string, f: () => Promise<T>): Promise<T> => {
    const start = Date.now();
    const v = await f();
    timings.push(`${what} ${((Date.now() - start) / 1000).toFixed(1)}s`);
    return v;
  };

  const { node, prefix, npm, headers } = await nodeInstall();
  // The Dockerfile points node-gyp at the headers beside node; npm itself only reads the cache.
  const npmrc = ['offline=true', 'cache=/npm-cache', 'audit=false', 'fund=false', 'update-notifier=false', ''].join('\n');
  await timed('build base', () =>
    assembleBase(buildah, work, BUILD_BASE, {
      packages: BUILD_PACKAGES,
      trees: [node, npm, headers, join(prefix, 'bin/npm'), join(prefix, 'bin/npx')],
      files: { [join(prefix, 'etc/npmrc')]: npmrc },
    }),
  );
  await timed('runtime base', () => assembleBase(buildah, work, RUNTIME_BASE, { packages: RUNTIME_PACKAGES, trees: [node], files: {} }));
  const cache = await timed('npm cache', () => npmCache(work));

  await timed('buildah bud', () =>
    must(
      'buildah bud',
      buildah(
        ['bud', '--isolation', 'chroot', '--format', 'docker', '--build-arg', `BASE=${BUILD_BASE}`, '--build-arg', `RUNTIME_BASE=${RUNTIME_BASE}`, '--volume', `${cache}:/npm-cache`, '--tag', IMAGE, '--file', 'Dockerfile', '.'],
        900_000,
      ),
    ),
  );

  await t.test('image metadata: non-root numeric user, entrypoint, /data volume, port 5000, healthcheck', async () => {
    const info = JSON.parse(await must('buildah inspect', buildah(['inspect', '--type', 'image', IMAGE]))) as { Docker: { config: Record<string, unknown> } };
    const c = info.Docker.config;
    assert.equal(c.User, '10001:10001');
    assert.deepEqual(c.Entrypoint, ['regmirror']);
    assert.deepEqual(c.Cmd, ['serve', '--config', '/etc/regmirror/mirror.yaml']);
    assert.deepEqual(Object.keys(c.Volumes as object), ['/data']);
    assert.deepEqual(Object.keys(c.ExposedPorts as object), ['5000/tcp']);
    assert.match(JSON.stringify(c.Healthcheck), /healthz/);
    const size = Number((await must('podman image inspect', podman(['image', 'inspect', '--format', '{{.Size}}', IMAGE]))).trim());
    const baseSize = Number((await must('podman image inspect', podman(['image', 'inspect', '--format', '{{.Size}}', RUNTIME_BASE]))).trim());
    t.diagnostic(`image ${(size / 1e6).toFixed(0)} MB, of which regmirror adds ${((size - baseSize) / 1e6).toFixed(0)} MB to its runtime base`);
  });

  await t.test('no compiler, npm cache or dev dependency in the runtime image', async () => {
    // buildah leaves an empty mount point where the build's cache volume was: only content counts.
    const probe = [
      'for c in cc gcc g++ make python3 npm; do command -v $c; done',
      'ls -A /npm-cache /root/.npm 2>/dev/null | grep -v : | grep .',
      'ls -d /app/node_modules/typescript /app/node_modules/tsx /app/src 2>/dev/null',
      'ls /app/node_modules/better-sqlite3/build/Release',
    ].join('; ');
    const out = await must('podman run sh', podman(['run', '--rm', ...runFlags, '--network', 'none', '--entrypoint', 'sh', IMAGE, '-c', probe]));
    assert.equal(out.trim(), 'better_sqlite3.node');
  });

  await t.test('the baked-in config starts on :5000 with /data, and the HEALTHCHECK passes', async () => {
    // Its own network namespace: :5000 there is free whatever the host runs.
    await must('podman run', podman(['run', '-d', '--name', 'regmirror-default', ...runFlags, '--network', 'none', IMAGE]));
    let health: RunResult | undefined;
    for (let i = 0; i < 100; i++) {
      health = await podman(['healthcheck', 'run', 'regmirror-default']);
      if (health.code === 0) break;
      await sleep(200);
    }
    assert.equal(health?.code, 0, `${health?.stdout}\n${(await podman(['logs', 'regmirror-default'])).stderr}`);
    const ls = await must('podman exec', podman(['exec', 'regmirror-default', 'ls', '/data']));
    assert.match(ls, /mirror\.db/);
    await must('podman stop', podman(['stop', '--time', '10', 'regmirror-default']));
    const state = (await must('podman inspect', podman(['inspect', '--format', '{{.State.ExitCode}}', 'regmirror-default']))).trim();
    assert.equal(state, '0', 'SIGTERM shuts it down cleanly');
  });

  await t.test('the entrypoint serves pulls from a mounted config; skopeo gets the right digests', async () => {
    const up = await FakeUpstream.start({ auth: 'token', cdn: true });
    t.after(() => up.close());
    up.addImage(single);
    up.addImage(index);
    const port = await freePort();
    const config = join(work, 'mirror.yaml');
    await writeFile(config, [`listen: "127.0.0.1:${port}"`, 'dataDir: /data', 'upstreams:', '  docker.io:', `    url: ${up.url}`, ''].join('\n'));
    await chmod(config, 0o644);
    await must('podman run', podman(['run', '-d', '--name', 'regmirror-e2e', ...runFlags, '--network', 'host', '--volume', `${config}:/etc/regmirror/mirror.yaml:ro`, IMAGE]));
    const base = `http://127.0.0.1:${port}`;
    let up200 = false;
    for (let i = 0; i < 150 && !up200; i++) {
      up200 = await fetch(`${base}/healthz`).then((r) => r.ok, () => false);
      if (!up200) await sleep(200);
    }
    const logs = async () => {
      const r = await podman(['logs', 'regmirror-e2e']);
      return r.stdout + r.stderr;
    };
    assert.ok(up200, `the container never answered /healthz:\n${await logs()}`);

    const out = join(work, 'pulled');
    await mkdir(out);
    const one = await skopeo(['copy', '--src-tls-verify=false', `docker://127.0.0.1:${port}/${single.name}:${single.tag}`, `dir:${join(out, 'single')}`]);
    assert.equal(one.code, 0, `${one.stderr}\n${await logs()}`);
    assert.equal(sha256(await readFile(join(out, 'single', 'manifest.json'))), single.root.digest);
    for (const [digest, bytes] of single.blobs) assert.ok((await readFile(join(out, 'single', digest.slice(7)))).equals(bytes), digest);

    const all = await skopeo(['copy', '--all', '--src-tls-verify=false', `docker://127.0.0.1:${port}/${index.name}:${index.tag}`, `dir:${join(out, 'index')}`]);
    assert.equal(all.code, 0, `${all.stderr}\n${await logs()}`);
    assert.equal(sha256(await readFile(join(out, 'index', 'manifest.json'))), index.root.digest);
    for (const file of await readdir(join(out, 'index'))) {
      const m = /^([a-f0-9]{64})(\.manifest\.json)?$/.exec(file);
      if (m) assert.equal(sha256(await readFile(join(out, 'index', file))), `sha256:${m[1]}`, file);
    }
    const raw = await skopeo(['inspect', '--tls-verify=false', '--raw', `docker://127.0.0.1:${port}/${index.name}:${index.tag}`]);
    assert.equal(sha256(raw.stdout), index.root.digest);
    assert.ok(up.counters.blobGet > 0, 'the blobs came through the container from the upstream');
    const cached = await must('podman exec', podman(['exec', 'regmirror-e2e', 'sh', '-c', 'ls /data/blobs/sha256/*/ | wc -l']));
    assert.ok(Number(cached.trim()) >= single.blobs.size, 'the blobs were cached on the /data volume');
  });

  t.diagnostic(`timings: ${timings.join(', ')}`);
});
