// Real clients configured by `regmirror configure` pull through regmirror: containerd
// (ctr with the generated hosts.toml tree) and podman (with the generated
// registries.conf). The machine has no route to the real registries, and the generated
// files name them as the fallback, so a pull that succeeds came through the mirror; the
// mirror's access log and the fake upstream's counters say so too.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { promisify } from 'node:util';
import { multiPlatformImage, singleImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { startMirror, type Mirror } from '../helpers.js';
import { requireTools, run, startContainerd } from './harness.js';

const exec = promisify(execFile);
const ROOT = new URL('../..', import.meta.url).pathname;

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];
const single = await singleImage({ name: 'library/cfg-single', tag: 'v1', seed: 'configure-e2e-single' });
const index = await multiPlatformImage({ name: 'library/cfg-index', tag: '1.0', seed: 'configure-e2e-index', platforms });

async function tempDir(t: TestContext, prefix: string): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), prefix));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

/** `regmirror configure …` as an operator runs it; returns its stdout. */
async function configure(args: string[]): Promise<string> {
  const { stdout } = await exec(process.execPath, ['--import', 'tsx', join(ROOT, 'src/main.ts'), 'configure', ...args], { cwd: ROOT });
  return stdout;
}

/** A mirror whose only upstream, docker.io, is a fake Docker Hub holding both images. */
async function mirrorOfFakeHub(t: TestContext): Promise<{ mirror: Mirror; up: FakeUpstream }> {
  const up = await FakeUpstream.start({ auth: 'token', cdn: true });
  t.after(() => up.close());
  up.addImage(single);
  up.addImage(index);
  const mirror = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }] });
  t.after(() => mirror.stop());
  return { mirror, up };
}

function served(mirror: Mirror): Array<{ method: string; path: string; status: number; upstream?: string }> {
  return mirror.logs.map((l) => JSON.parse(l)).filter((e) => e.msg === 'request');
}

test('containerd pulls docker.io images through a hosts.toml tree written by `regmirror configure containerd`', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr')) return;
  const { mirror, up } = await mirrorOfFakeHub(t);
  const hosts = join(await tempDir(t, 'regmirror-certsd-'), 'certs.d');
  const out = await configure(['containerd', '--mirror', mirror.url, '--write', hosts]);
  assert.match(out, /^created .*\/docker\.io\/hosts\.toml: /m);
  const toml = await readFile(join(hosts, 'docker.io', 'hosts.toml'), 'utf8');
  assert.match(toml, /^server = "https:\/\/registry-1\.docker\.io"$/m, 'the real registry stays as the fallback');

  const ctrd = await startContainerd();
  t.after(() => ctrd.close());
  for (const img of [single, index]) {
    const ref = `docker.io/${img.name}:${img.tag}`;
    const res = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', ref]);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}\n--- mirror:\n${mirror.logs.slice(-20).join('\n')}`);
    const list = await ctrd.ctr(['images', 'ls']);
    assert.match(list.stdout, new RegExp(`^${ref.replace(/[.]/g, '\\.')}\\s+\\S+\\s+${img.root.digest}\\s`, 'm'));
    assert.ok(served(mirror).some((e) => e.path === `/v2/${img.name}/manifests/${img.tag}` && e.status === 200 && e.upstream === 'docker.io'));
  }
  assert.ok(up.counters.blobGet > 0, 'the blobs came from the upstream behind the mirror');
});

test('podman pulls docker.io/library images through a registries.conf written by `regmirror configure podman`', async (t) => {
  if (!requireTools(t, 'podman')) return;
  const { mirror, up } = await mirrorOfFakeHub(t);
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-podman-'));
  const conf = join(dir, 'registries.conf');
  await configure(['podman', '--mirror', mirror.url, '--write', conf]);
  const policy = join(dir, 'policy.json');
  await writeFile(policy, JSON.stringify({ default: [{ type: 'insecureAcceptAnything' }] }));
  // Rootful podman with its own store in the temp dir; only the registries.conf above.
  const env = { ...process.env, CONTAINERS_REGISTRIES_CONF: conf };
  const podman = (args: string[]) => run('podman', ['--root', join(dir, 'root'), '--runroot', join(dir, 'run'), '--storage-driver', 'vfs', ...args], env);
  // One hook, in this order: podman would recreate its store if the dir went first.
  t.after(async () => {
    await podman(['rmi', '--all', '--force']);
    await rm(dir, { recursive: true, force: true });
  });

  for (const img of [single, index]) {
    const ref = `docker.io/${img.name}:${img.tag}`;
    const res = await podman(['pull', '--signature-policy', policy, '--platform', 'linux/amd64', ref]);
    assert.equal(res.code, 0, `${res.stdout}\n${res.stderr}\n--- mirror:\n${mirror.logs.slice(-20).join('\n')}`);
    const digest = await podman(['image', 'inspect', '--format', '{{.Digest}}', ref]);
    assert.equal(digest.stdout.trim(), img.root.digest, digest.stderr);
    // podman asks the mirror with the registry as a path prefix.
    assert.ok(served(mirror).some((e) => e.path === `/v2/docker.io/${img.name}/manifests/${img.tag}` && e.status === 200), JSON.stringify(served(mirror)));
  }
  assert.ok(up.counters.manifestGet > 0 && up.counters.blobGet > 0);
});
