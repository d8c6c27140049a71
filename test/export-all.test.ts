// `regmirror export --all` over a cache that a running mirror keeps evicting from: a tag
// whose manifest is gone is skipped with a warning instead of failing the whole bundle.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import type { Digest } from '../src/oci/digest.js';
import { cli, downloadsSettled, get, sha256, startMirror } from './helpers.js';

describe('export --all over an evicted tag', () => {
  let up: FakeUpstream;
  let dir: string;
  let config: string;
  let images: FixtureImage[];

  before(async () => {
    up = await FakeUpstream.start();
    images = [await singleImage({ name: 'library/kept', tag: '1', seed: 'export-kept' }), await singleImage({ name: 'library/gone', tag: '1', seed: 'export-gone' })];
    for (const img of images) up.addImage(img);
    dir = await mkdtemp(join(tmpdir(), 'regmirror-export-all-'));
    const dataDir = join(dir, 'data');
    config = join(dir, 'mirror.yaml');
    await writeFile(config, `dataDir: ${dataDir}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir });
    try {
      for (const img of images) {
        assert.equal((await get(`${m.url}/v2/${img.name}/manifests/${img.tag}`)).status, 200);
        for (const [d] of img.blobs) assert.equal(sha256((await get(`${m.url}/v2/${img.name}/blobs/${d}`)).body), d);
      }
      await downloadsSettled(m);
      // What the evictor does to a least recently used manifest: its rows, then its file. The tag stays.
      const gone = images[1].root.digest as Digest;
      await m.metadata.forgetBlobs([gone]);
      await m.store.remove(gone);
    } finally {
      await m.stop();
    }
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('13.12 export --all skips a tag whose manifest was evicted, with a warning; --strict and an empty result fail', async () => {
    const bundle = join(dir, 'all.tar');
    const r = await cli(['export', '--all', '-o', bundle, '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipped docker\.io\/library\/gone:1: .*not in the cache/);
    assert.match(r.stderr, /exported 1 image\(s\)/);

    // The bundle holds the other image whole: a fresh data dir imports it.
    const fresh = join(dir, 'fresh.yaml');
    await writeFile(fresh, `dataDir: ${join(dir, 'fresh')}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const imported = await cli(['import', bundle, '--config', fresh]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /imported 1 image\(s\)/);
    assert.match(imported.stdout, /docker\.io\/library\/kept:1 /);

    const strict = await cli(['export', '--all', '--strict', '-o', join(dir, 'strict.tar'), '--config', config]);
    assert.notEqual(strict.code, 0);
    assert.match(strict.stderr, /library\/gone:1.*not in the cache/);

    // Nothing exportable at all is a failure, not an empty bundle.
    const kept = images[0].root.digest;
    const rm1 = await cli(['cache', 'rm', 'docker.io/library/kept:1', '--config', config]);
    assert.equal(rm1.code, 0, rm1.stderr);
    const none = await cli(['export', '--all', '-o', join(dir, 'none.tar'), '--config', config]);
    assert.notEqual(none.code, 0, `exit ${none.code} with ${kept} removed`);
    assert.match(none.stderr, /library\/gone:1/);
  });
});
