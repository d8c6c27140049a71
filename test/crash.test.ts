// kill -9 at chosen points — mid-download, just before and just after a blob is renamed
// into place, just before an import commits — then restart: every image pulls with the
// right digests, verify finds nothing wrong, and tmp/ is empty.
import assert from 'node:assert/strict';
import { mkdtemp, readdir, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, beforeEach, describe, test } from 'node:test';
import { request } from 'undici';
import { largeBlobImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli, get, serveChild, sha256, startMirror } from './helpers.js';
import { metadataYamlFor } from './support/metadata-backend.js';

const MB = 1024 * 1024;

describe('kill -9 and restart', () => {
  let up: FakeUpstream;
  let dir: string;
  let config: string;
  let dataDir: string;
  let images: FixtureImage[];

  before(async () => {
    up = await FakeUpstream.start();
    images = [largeBlobImage('library/big', '1', 24 * MB, 'crash-big'), await singleImage({ name: 'library/small', tag: '1', seed: 'crash-small', layerSizes: [200_000, 50_000] })];
    for (const img of images) up.addImage(img);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-crash-'));
  });
  // Every test starts from an empty cache of its own, so its crash point is reached.
  let n = 0;
  beforeEach(async () => {
    dataDir = join(dir, `data${++n}`);
    config = join(dir, `mirror${n}.yaml`);
    await writeFile(config, `listen: "127.0.0.1:0"\ndataDir: ${dataDir}\n${await metadataYamlFor(dataDir)}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  /** After a restart: every image pulls correctly, verify is clean, tmp/ is empty. */
  async function restartAndCheck(): Promise<void> {
    const s = serveChild(config);
    try {
      const url = await s.url;
      assert.deepEqual(await readdir(join(dataDir, 'tmp')), [], 'no file left in tmp/');
      for (const img of images) {
        assert.equal((await get(`${url}/v2/${img.name}/manifests/${img.tag}`)).status, 200);
        for (const [d] of img.blobs) assert.equal(sha256((await get(`${url}/v2/${img.name}/blobs/${d}`)).body), d);
      }
    } finally {
      s.kill();
      await s.exited;
    }
    const v = await cli(['verify', '--config', config]);
    assert.match(v.stdout, / 0 bad/);
  }

  for (const point of ['publish:before-rename', 'publish:after-rename']) {
    test(`killed at ${point}`, async () => {
      const s = serveChild(config, { REGMIRROR_CRASH_AT: point });
      const url = await s.url;
      const img = images[1];
      await request(`${url}/v2/${img.name}/manifests/${img.tag}`).then((r) => r.body.dump(), () => {});
      const died = await s.exited;
      assert.equal(died.signal, 'SIGKILL', 'the process died at the crash point');
      await restartAndCheck();
    });
  }

  test('killed mid-download, with a client reading', async () => {
    up.faults = { blobBytesPerSecond: 8 * MB };
    const s = serveChild(config);
    const url = await s.url;
    const big = images[0];
    const [layer] = [...big.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    const res = await request(`${url}/v2/${big.name}/blobs/${layer}`);
    let received = 0;
    const reading = (async () => {
      for await (const c of res.body) {
        received += (c as Buffer).length;
        if (received > 4 * MB) s.kill();
      }
    })().catch(() => 'cut');
    assert.equal(await reading, 'cut', 'the client sees a failed transfer, not a complete body');
    await s.exited;
    up.faults = {};
    await restartAndCheck();
  });
});

test('killed just before an import commits: the store takes the bundle on the next try', async () => {
  const up = await FakeUpstream.start();
  const img = await singleImage({ name: 'library/bundled', tag: '1', seed: 'crash-bundle' });
  up.addImage(img);
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-crash-import-'));
  try {
    const source = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir: join(dir, 'src') });
    const cfg = async (d: string) => `dataDir: ${d}\n${await metadataYamlFor(d)}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`;
    await writeFile(join(dir, 'src.yaml'), await cfg(source.dataDir));
    await writeFile(join(dir, 'dst.yaml'), await cfg(join(dir, 'dst')));
    await get(`${source.url}/v2/library/bundled/manifests/1`);
    for (const [d] of img.blobs) await get(`${source.url}/v2/library/bundled/blobs/${d}`);
    await source.close();
    assert.equal((await cli(['export', '--config', join(dir, 'src.yaml'), '-o', join(dir, 'b.tar'), 'library/bundled:1'])).code, 0);
    const crashed = await cli(['import', '--config', join(dir, 'dst.yaml'), join(dir, 'b.tar')], { REGMIRROR_CRASH_AT: 'import:before-commit' });
    assert.equal(crashed.signal, 'SIGKILL');
    const ok = await cli(['import', '--config', join(dir, 'dst.yaml'), join(dir, 'b.tar')]);
    assert.match(ok.stdout, /imported 1 image/);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: 'http://127.0.0.1:9' }], defaultUpstream: 'docker.io', dataDir: join(dir, 'dst'), offline: true });
    try {
      assert.deepEqual(await readdir(join(dir, 'dst', 'tmp')), []);
      assert.equal((await get(`${m.url}/v2/library/bundled/manifests/1`)).headers['docker-content-digest'], img.root.digest);
      for (const [d] of img.blobs) assert.equal(sha256((await get(`${m.url}/v2/library/bundled/blobs/${d}`)).body), d);
    } finally {
      await m.close();
    }
    const v = await cli(['verify', '--config', join(dir, 'dst.yaml')]);
    assert.match(v.stdout, / 0 bad/);
  } finally {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  }
});

