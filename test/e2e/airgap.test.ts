// The air-gap round trip as an operator runs it: prewarm and export on the connected
// side, import into a fresh data dir on the other, serve --offline with no upstream at
// all, and pull with skopeo and containerd: the digests are the originals.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdtemp, readFile, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { after, before, test } from 'node:test';
import { multiPlatformImage, singleImage, type FixtureImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { startMirror, type Mirror } from '../helpers.js';
import { requireTools, skopeo, startContainerd, writeHostsDir } from './harness.js';

const exec = promisify(execFile);
const MAIN = new URL('../../src/main.ts', import.meta.url).pathname;
const regmirror = (...args: string[]) => exec(process.execPath, ['--import', 'tsx', MAIN, ...args], { maxBuffer: 16 * 1024 * 1024 });
const sha = (b: Buffer) => 'sha256:' + createHash('sha256').update(b).digest('hex');

let dir: string;
let index: FixtureImage;
let single: FixtureImage;
let offline: Mirror;

before(async () => {
  dir = await mkdtemp(join(tmpdir(), 'regmirror-airgap-'));
  index = await multiPlatformImage({
    name: 'library/gapped',
    tag: '1',
    seed: 'gapped',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
  });
  single = await singleImage({ name: 'team/tool', tag: 'v2', seed: 'tool' });
  const up = await FakeUpstream.start();
  up.addImage(index);
  up.addImage(single);
  const config = (dataDir: string, url: string) => `dataDir: ${dataDir}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${url}\n`;
  await writeFile(join(dir, 'connected.yaml'), config(join(dir, 'connected'), up.url));
  await writeFile(join(dir, 'gapped.yaml'), config(join(dir, 'gapped'), 'http://127.0.0.1:9'));
  try {
    await regmirror('prewarm', '--config', join(dir, 'connected.yaml'), 'gapped:1', 'team/tool:v2');
    await regmirror('export', '--config', join(dir, 'connected.yaml'), '-o', join(dir, 'bundle.tar'), 'gapped:1', 'team/tool:v2');
  } finally {
    await up.close();
  }
  const imported = await regmirror('import', '--config', join(dir, 'gapped.yaml'), join(dir, 'bundle.tar'));
  assert.match(imported.stdout, /imported 2 image\(s\)/);
  offline = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9', tagTtlMs: 1 }], defaultUpstream: 'docker.io', dataDir: join(dir, 'gapped'), offline: true });
});

after(async () => {
  await offline?.close();
  await rm(dir, { recursive: true, force: true });
});

test('skopeo pulls every platform of the imported index and the single image, digests unchanged', async (t) => {
  if (!requireTools(t, 'skopeo')) return;
  for (const [img, ref, all] of [
    [index, 'library/gapped:1', true],
    [single, 'team/tool:v2', false],
  ] as const) {
    const out = join(dir, `skopeo-${img.tag}`);
    const r = await skopeo(['copy', ...(all ? ['--all'] : []), '--src-tls-verify=false', `docker://127.0.0.1:${offline.port}/${ref}`, `dir:${out}`]);
    assert.equal(r.code, 0, r.stderr);
    assert.equal(sha(await readFile(join(out, 'manifest.json'))), img.root.digest);
    for (const f of await readdir(out)) {
      if (/^[a-f0-9]{64}$/.test(f)) assert.equal(sha(await readFile(join(out, f))), `sha256:${f}`);
    }
  }
});

test('containerd pulls the imported image through the offline mirror', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr')) return;
  const ctrd = await startContainerd();
  try {
    const hosts = await writeHostsDir(join(dir, 'hosts'), [{ registry: 'docker.io', server: 'http://127.0.0.1:9', mirrorUrl: offline.url }]);
    const r = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/arm64', 'docker.io/library/gapped:1']);
    assert.equal(r.code, 0, r.stderr);
    const ls = await ctrd.ctr(['images', 'ls']);
    assert.match(ls.stdout, new RegExp(`docker\\.io/library/gapped:1\\s+\\S+\\s+${index.root.digest}`));
  } finally {
    await ctrd.close();
  }
});
