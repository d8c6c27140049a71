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
    images = [
      await singleImage({ name: 'library/kept', tag: '1', seed: 'export-kept' }),
      await singleImage({ name: 'library/gone', tag: '1', seed: 'export-gone' }),
      await singleImage({ name: 'library/thin', tag: '1', seed: 'export-thin' }),
    ];
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
      // And a layer of another image: its manifest stays.
      const layer = [...images[2].blobs.keys()].at(-1) as Digest;
      await m.metadata.forgetBlobs([layer]);
      await m.store.remove(layer);
    } finally {
      await m.stop();
    }
  });
  after(async () => {
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('18.6 cache ls marks the images whose manifest or a layer was evicted', async () => {
    const r = await cli(['cache', 'ls', '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^docker\.io\/library\/gone:1 \*\s/m);
    assert.match(r.stdout, /^docker\.io\/library\/thin:1 \*\s/m);
    assert.match(r.stdout, /^docker\.io\/library\/kept:1\s+[0-9a-f]{12}\s/m);
    assert.match(r.stdout, /^\* incomplete: part of it was evicted; the next pull fetches it again$/m);
    const json = JSON.parse((await cli(['cache', 'ls', '--json', '--config', config])).stdout) as Array<{ image: string; incomplete: boolean }>;
    assert.deepEqual(json.map((i) => [i.image, i.incomplete]), [['docker.io/library/gone:1', true], ['docker.io/library/kept:1', false], ['docker.io/library/thin:1', true]]);
  });

  test('13.12 export --all skips a tag whose manifest was evicted, with a warning; --strict and an empty result fail', async () => {
    const bundle = join(dir, 'all.tar');
    const r = await cli(['export', '--all', '-o', bundle, '--config', config]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /skipped docker\.io\/library\/gone:1: .*not in the cache/);
    assert.match(r.stderr, /exported 1 image\(s\)/);
    // 18.6: the warning says how to bring them back.
    assert.match(r.stderr, /skipped docker\.io\/library\/thin:1: blob sha256:\w+ is not in the cache/);
    assert.match(r.stderr, /regmirror export --fetch -o FILE docker\.io\/library\/gone:1 docker\.io\/library\/thin:1$/m);

    // The bundle holds the other image whole: a fresh data dir imports it.
    const fresh = join(dir, 'fresh.yaml');
    await writeFile(fresh, `dataDir: ${join(dir, 'fresh')}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const imported = await cli(['import', bundle, '--config', fresh]);
    assert.equal(imported.code, 0, imported.stderr);
    assert.match(imported.stdout, /imported 1 image\(s\)/);
    assert.match(imported.stdout, /docker\.io\/library\/kept:1 /);

    // 18.6: --json prints the summary; import --json too.
    const json = await cli(['export', '--all', '--json', '-o', join(dir, 'json.tar'), '--config', config]);
    assert.equal(json.code, 0, json.stderr);
    const summary = JSON.parse(json.stdout) as { images: Array<{ name: string; digest: string }>; blobs: number; bytes: number; skipped: Array<{ name: string }> };
    assert.deepEqual(summary.images.map((i) => [i.name, i.digest]), [['docker.io/library/kept:1', images[0].root.digest]]);
    assert.equal(summary.blobs, images[0].blobs.size + 1);
    assert.equal(summary.bytes, [...images[0].blobs.values()].reduce((n, b) => n + b.length, images[0].root.bytes.length));
    assert.deepEqual(summary.skipped.map((x) => x.name), ['docker.io/library/gone:1', 'docker.io/library/thin:1']);
    const toStdout = await cli(['export', 'library/kept:1', '--json', '-o', '-', '--config', config]);
    assert.equal(toStdout.code, 0, toStdout.stderr);
    assert.ok(toStdout.stdout.length > summary.bytes, 'the bundle on stdout');
    assert.equal(JSON.parse(toStdout.stderr).images.length, 1);
    await writeFile(join(dir, 'fresh2.yaml'), `dataDir: ${join(dir, 'fresh2')}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
    const importedJson = await cli(['import', join(dir, 'json.tar'), '--json', '--config', join(dir, 'fresh2.yaml')]);
    assert.equal(importedJson.code, 0, importedJson.stderr);
    const got = JSON.parse(importedJson.stdout) as { images: Array<{ name: string }>; blobs: number; bytes: number };
    assert.deepEqual([got.images.map((i) => i.name), got.blobs, got.bytes], [['docker.io/library/kept:1'], summary.blobs, summary.bytes]);

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
    assert.match(none.stderr, /export --fetch -o FILE docker\.io\/library\/gone:1/);
  });
});
