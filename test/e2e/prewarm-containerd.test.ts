// prewarm --platform linux/amd64, then containerd pulls that platform through the mirror
// without a single upstream request.
import assert from 'node:assert/strict';
import { execFile } from 'node:child_process';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { test } from 'node:test';
import { multiPlatformImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { startMirror } from '../helpers.js';
import { requireTools, startContainerd, writeHostsDir } from './harness.js';

const exec = promisify(execFile);
const MAIN = new URL('../../src/main.ts', import.meta.url).pathname;

test('a prewarmed platform is pulled by containerd with zero upstream requests', async (t) => {
  if (!requireTools(t, 'containerd', 'ctr')) return;
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-prewarm-e2e-'));
  const up = await FakeUpstream.start();
  const img = await multiPlatformImage({
    name: 'library/warm',
    tag: '1',
    seed: 'warm-e2e',
    platforms: [
      { os: 'linux', architecture: 'amd64' },
      { os: 'linux', architecture: 'arm64' },
    ],
  });
  up.addImage(img);
  const dataDir = join(dir, 'data');
  await writeFile(join(dir, 'mirror.yaml'), `dataDir: ${dataDir}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
  const ctrd = await startContainerd();
  try {
    await exec(process.execPath, ['--import', 'tsx', MAIN, 'prewarm', '--config', join(dir, 'mirror.yaml'), '--platform', 'linux/amd64', 'library/warm:1']);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], dataDir });
    try {
      up.resetCounters();
      const hosts = await writeHostsDir(join(dir, 'hosts'), [{ registry: 'docker.io', server: 'http://127.0.0.1:9', mirrorUrl: m.url }]);
      const r = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, '--platform', 'linux/amd64', 'docker.io/library/warm:1']);
      assert.equal(r.code, 0, r.stderr);
      assert.equal(up.counters.total + up.counters.token + up.counters.cdnGet, 0, 'the pull never reached the upstream');
    } finally {
      await m.close();
    }
  } finally {
    await ctrd.close();
    await up.close();
    await rm(dir, { recursive: true, force: true });
  }
});
