// Proves the e2e harness itself (registry + token auth, containerd, skopeo) without
// regmirror in the path, so a failing proxy e2e test can be blamed on the proxy.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { multiPlatformImage, sha256, singleImage } from '../../fixtures/images.js';
import { requireTools, skopeo, startContainerd, startDistribution, writeHostsDir, type Snapshotter } from './harness.js';

const platforms = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64' },
];

test('distribution with token auth serves pushed images to skopeo', async (t) => {
  if (!requireTools(t, 'docker-registry', 'openssl', 'skopeo')) return;
  const dist = await startDistribution();
  t.after(() => dist.close());
  const work = await mkdtemp(join(tmpdir(), 'regmirror-harness-'));
  t.after(() => rm(work, { recursive: true, force: true }));

  const single = await singleImage({ name: 'harness/single', tag: 'v1', seed: 'harness-single' });
  const multi = await multiPlatformImage({ name: 'harness/multi', tag: 'v1', seed: 'harness-multi', platforms });
  await dist.push(single);
  await dist.push(multi);

  // Token auth must really be on: an anonymous manifest GET is challenged, not served.
  const anon = await fetch(`${dist.url}/v2/${single.name}/manifests/${single.tag}`);
  assert.equal(anon.status, 401);
  assert.match(anon.headers.get('www-authenticate') ?? '', /^Bearer realm="[^"]+",service="[^"]+"/);

  for (const img of [single, multi]) {
    const ref = `docker://${dist.host}/${img.name}:${img.tag}`;
    const inspect = await skopeo(['inspect', '--tls-verify=false', '--raw', ref]);
    assert.equal(inspect.code, 0, inspect.stderr);
    assert.equal(sha256(inspect.stdout), img.root.digest);

    const dest = join(work, img.name.replace('/', '-'));
    const copy = await skopeo(['copy', '--src-tls-verify=false', ref, `dir:${dest}`]);
    assert.equal(copy.code, 0, copy.stderr);
    assert.ok((await readdir(dest)).includes('manifest.json'));
  }
});

// The default picks overlayfs where it mounts (it does on a plain root fs) and native
// elsewhere (nested containers); native is forced once too so the fallback stays proven.
for (const snapshotter of [undefined, 'native'] as const) {
  test(`containerd pulls and unpacks through a hosts.toml mirror host (${snapshotter ?? 'auto'})`, async (t) => {
    if (!requireTools(t, 'docker-registry', 'openssl', 'containerd', 'ctr')) return;
    await pullThroughMirror(t, snapshotter);
  });
}

async function pullThroughMirror(t: TestContext, snapshotter: Snapshotter | undefined): Promise<void> {
  const dist = await startDistribution();
  t.after(() => dist.close());
  const ctrd = await startContainerd({ snapshotter });
  t.after(() => ctrd.close());
  const hosts = await mkdtemp(join(tmpdir(), 'regmirror-hosts-'));
  t.after(() => rm(hosts, { recursive: true, force: true }));

  // docker.io/<img> means library/<img> upstream, and the mirror is asked for that name.
  const single = await singleImage({ name: 'library/harness-single', tag: 'v1', seed: 'ctr-single' });
  const multi = await multiPlatformImage({ name: 'library/harness-multi', tag: 'v1', seed: 'ctr-multi', platforms });
  await dist.push(single);
  await dist.push(multi);
  // The real server is unreachable here; a pull that succeeds must have used the mirror.
  await writeHostsDir(hosts, [{ registry: 'docker.io', server: 'https://registry-1.docker.io', mirrorUrl: dist.url }]);

  for (const img of [single, multi]) {
    const ref = `docker.io/${img.name}:${img.tag}`;
    const pull = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', ref]);
    assert.equal(pull.code, 0, `${pull.stdout}\n${pull.stderr}\n${ctrd.logs()}`);

    const list = await ctrd.ctr(['images', 'ls']);
    assert.match(list.stdout, new RegExp(`${ref}\\s+\\S+\\s+${img.root.digest}`));
    // `images check` reports per-image unpack state for the snapshotter ctr uses.
    const check = await ctrd.ctr(['images', 'check', `name==${ref}`]);
    assert.equal(check.code, 0, check.stderr);
    assert.match(check.stdout, /complete.*\btrue\s*$/m, `not unpacked (${ctrd.snapshotter}):\n${check.stdout}`);
  }
}
