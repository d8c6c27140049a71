// Air-gapped bundles: a cache filled through a mirror is exported as an OCI image layout
// tar and imported into a fresh data dir, whose mirror then serves every tag, manifest
// and blob with its upstream unreachable and a tag TTL of 1 ms (only the pins keep the
// tags). skopeo reads the bundle as an oci-archive. Damaged, truncated and incomplete
// bundles are refused and leave the store exactly as it was.
import assert from 'node:assert/strict';
import { createReadStream, createWriteStream } from 'node:fs';
import { cp, mkdtemp, readdir, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join, relative } from 'node:path';
import { Readable } from 'node:stream';
import { after, before, describe, test } from 'node:test';
import { multiPlatformImage, singleImage, MediaTypes, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { openCache, type CacheContext } from '../src/cli/context.js';
import { exportImages, type ExportOptions } from '../src/cli/export.js';
import { importBundle } from '../src/cli/import.js';
import { DEFAULTS, type Config } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { ALL_TYPES, accepts, MANIFEST_TYPES } from '../src/oci/manifest.js';
import { requireTools, skopeo, startContainerd } from './e2e/harness.js';
import { get, sha256, startMirror, type Mirror } from './helpers.js';
import { metadataConfigFor } from './support/metadata-backend.js';

const PLATFORMS = [
  { os: 'linux', architecture: 'amd64' },
  { os: 'linux', architecture: 'arm64', variant: 'v8' },
];
const ALL_ACCEPT = MANIFEST_TYPES.join(', ');

/** A TCP port that counts connections and drops them: an upstream nobody may reach. */
interface Tripwire {
  url: string;
  connections: number;
  close(): Promise<void>;
}

async function tripwire(): Promise<Tripwire> {
  const wire = { url: '', connections: 0 } as Tripwire;
  const server: Server = createServer((socket) => {
    wire.connections++;
    socket.destroy();
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as { port: number };
  wire.url = `http://127.0.0.1:${port}`;
  wire.close = () => new Promise<void>((resolve) => server.close(() => resolve()));
  return wire;
}

/** `metadataOf`: whose database a copied data dir reads (on SQLite the copy has its own file). */
async function configFor(dataDir: string, url: string, metadataOf = dataDir): Promise<Config> {
  const base = DEFAULTS.upstreams[0];
  return {
    ...structuredClone(DEFAULTS),
    listen: { host: '127.0.0.1', port: 0 },
    dataDir,
    metadata: await metadataConfigFor(metadataOf),
    defaultUpstream: 'docker.io',
    upstreams: [{ ...base, aliases: [], tokenRealms: [], name: 'docker.io', url, tagTtlMs: 1, connectTimeoutMs: 2000 }],
    log: { level: 'error', format: 'json' },
  };
}

const quiet = () => createLogger('error', () => {});

/** Every file under blobs/ and tmp/ with its size, and the row counts: what "unchanged" means. */
async function snapshot(ctx: CacheContext, dataDir: string): Promise<unknown> {
  const files: string[] = [];
  const walk = async (dir: string): Promise<void> => {
    for (const e of await readdir(dir, { withFileTypes: true }).catch(() => [])) {
      const p = join(dir, e.name);
      if (e.isDirectory()) await walk(p);
      else files.push(`${relative(dataDir, p)} ${(await stat(p)).size}`);
    }
  };
  await walk(join(dataDir, 'blobs'));
  await walk(join(dataDir, 'tmp'));
  const counts: Record<string, number> = {};
  for (const t of ['blobs', 'manifests', 'links', 'tags'] as const) counts[t] = await ctx.metadata.count(t);
  return { files: files.sort(), counts, tags: await ctx.metadata.listTags() };
}

/** The entries of a tar: name, header offset, data offset and size (ustar, as the exporter writes it). */
function tarEntries(tar: Buffer): Array<{ name: string; header: number; data: number; size: number }> {
  const out = [];
  let off = 0;
  while (off + 512 <= tar.length && tar[off] !== 0) {
    const name = tar.subarray(off, off + 100).toString('utf8').replace(/\0.*$/s, '');
    const size = parseInt(tar.subarray(off + 124, off + 136).toString('utf8').replace(/\0.*$/s, '').trim(), 8);
    out.push({ name, header: off, data: off + 512, size });
    off += 512 + Math.ceil(size / 512) * 512;
  }
  return out;
}

function hex(d: string): string {
  return d.slice('sha256:'.length);
}

describe('export and import', () => {
  let work: string;
  let sourceDir: string;
  let wire: Tripwire;
  const images: Record<string, FixtureImage> = {};
  /** The multi-platform image of which only the index and linux/amd64 were pulled. */
  let partial: FixtureImage;

  async function exportTo(file: string, opts: Omit<ExportOptions, 'out'>) {
    const ctx = await openCache(await configFor(sourceDir, wire.url), { log: quiet() });
    try {
      return await exportImages(ctx, { ...opts, out: createWriteStream(file) });
    } finally {
      await ctx.close();
    }
  }

  async function importInto(dataDir: string, input: NodeJS.ReadableStream) {
    const ctx = await openCache(await configFor(dataDir, wire.url), { log: quiet() });
    try {
      return await importBundle(ctx, input);
    } finally {
      await ctx.close();
    }
  }

  before(async () => {
    work = await mkdtemp(join(tmpdir(), 'regmirror-bundle-'));
    sourceDir = join(work, 'source');
    wire = await tripwire();
    images.multi = await multiPlatformImage({ name: 'library/multi', tag: '1', seed: 'bundle-multi', platforms: PLATFORMS, layerSizes: [300_000, 5000] });
    images.single = await singleImage({ name: 'library/single', tag: '2', seed: 'bundle-single', layerSizes: [70_000] });
    images.dlist = await multiPlatformImage({ name: 'library/dlist', tag: 'v3', seed: 'bundle-dlist', platforms: PLATFORMS, format: 'docker' });
    partial = await multiPlatformImage({ name: 'library/partial', tag: 'latest', seed: 'bundle-partial', platforms: PLATFORMS });
    const up = await FakeUpstream.start();
    let source: Mirror | undefined;
    try {
      for (const img of [...Object.values(images), partial]) up.addImage(img);
      source = await startMirror({ dataDir: sourceDir, upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io' });
      // Fill the cache the way clients do: the tag, every manifest by digest, every blob.
      for (const img of Object.values(images)) {
        assert.equal((await get(`${source.url}/v2/${img.name}/manifests/${img.tag}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
        for (const d of img.manifests.keys()) assert.equal((await get(`${source.url}/v2/${img.name}/manifests/${d}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
        for (const d of img.blobs.keys()) assert.equal((await get(`${source.url}/v2/${img.name}/blobs/${d}`)).status, 200);
      }
      // partial: a linux/amd64 node's pull.
      assert.equal((await get(`${source.url}/v2/${partial.name}/manifests/${partial.tag}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
      const amd64 = childFor(partial, 'amd64');
      assert.equal((await get(`${source.url}/v2/${partial.name}/manifests/${amd64.digest}`, { headers: { accept: ALL_ACCEPT } })).status, 200);
      for (const d of blobsOf(amd64.bytes)) assert.equal((await get(`${source.url}/v2/${partial.name}/blobs/${d}`)).status, 200);
    } finally {
      await source?.stop();
      await up.close();
    }
  });

  after(async () => {
    await wire.close();
    await rm(work, { recursive: true, force: true });
  });

  test('a bundle imported into a fresh data dir is served with the upstream unreachable and a 1 ms tag TTL', async () => {
    const bundle = join(work, 'all.tar');
    const summary = await exportTo(bundle, { refs: ['docker.io/library/multi:1', 'single:2', 'library/dlist:v3'] });
    const names = ['docker.io/library/multi:1', 'docker.io/library/single:2', 'docker.io/library/dlist:v3'];
    assert.deepEqual(
      summary.images.map((i) => [i.name, i.digest, i.platforms]),
      [
        [names[0], images.multi.root.digest, ['linux/amd64', 'linux/arm64/v8']],
        [names[1], images.single.root.digest, ['single']],
        [names[2], images.dlist.root.digest, ['linux/amd64', 'linux/arm64/v8']],
      ],
    );
    const all = new Map<string, number>();
    for (const img of Object.values(images)) {
      for (const m of img.manifests.values()) all.set(m.digest, m.bytes.length);
      for (const [d, b] of img.blobs) all.set(d, b.length);
    }
    assert.equal(summary.blobs, all.size);
    assert.equal(summary.bytes, [...all.values()].reduce((a, b) => a + b, 0));

    // The layout: oci-layout, index.json naming each root both ways, every blob once.
    const tar = await readFile(bundle);
    const entries = tarEntries(tar);
    const files = entries.filter((e) => !e.name.endsWith('/'));
    assert.deepEqual(files.slice(0, 2).map((e) => e.name), ['oci-layout', 'index.json']);
    assert.deepEqual(JSON.parse(tar.subarray(files[0].data, files[0].data + files[0].size).toString()), { imageLayoutVersion: '1.0.0' });
    const index = JSON.parse(tar.subarray(files[1].data, files[1].data + files[1].size).toString());
    assert.equal(index.schemaVersion, 2);
    assert.equal(index.mediaType, MediaTypes.ociIndex);
    assert.deepEqual(
      index.manifests.map((m: { digest: string; mediaType: string; annotations: Record<string, string> }) => [m.digest, m.mediaType, m.annotations]),
      [images.multi, images.single, images.dlist].map((img, i) => [
        img.root.digest,
        img.root.mediaType,
        { 'io.containerd.image.name': names[i], 'org.opencontainers.image.ref.name': names[i] },
      ]),
    );
    assert.deepEqual(files.slice(2).map((e) => e.name).sort(), [...all.keys()].map((d) => `blobs/sha256/${hex(d)}`).sort());
    for (const e of files.slice(2)) assert.equal(sha256(tar.subarray(e.data, e.data + e.size)), `sha256:${e.name.slice('blobs/sha256/'.length)}`);

    const target = join(work, 'imported');
    const imported = await importInto(target, createReadStream(bundle));
    assert.deepEqual(
      imported.images.map((i) => [i.name, i.upstream, i.repository, i.tag, i.digest, i.mediaType]),
      [images.multi, images.single, images.dlist].map((img, i) => [names[i], 'docker.io', img.name, img.tag, img.root.digest, img.root.mediaType]),
    );
    assert.equal(imported.blobs, all.size);
    assert.equal(imported.bytes, summary.bytes);
    assert.equal(imported.present, 0);
    assert.equal(imported.unreferenced, 0);

    // Pins: every blob, and the tag for every Accept class that takes the root's type.
    const check = await openCache(await configFor(target, wire.url), { log: quiet() });
    try {
      const tags = await check.metadata.listTags();
      for (const img of Object.values(images)) {
        const rows = tags.filter((r) => r.repository === img.name && r.tag === img.tag);
        const masks = Array.from({ length: ALL_TYPES }, (_, i) => i + 1).filter((m) => accepts(m, img.root.mediaType));
        assert.deepEqual(rows.map((r) => r.accept), masks, img.name);
        assert.ok(rows.every((r) => r.pinned && r.digest === img.root.digest));
      }
      assert.equal(await check.metadata.count('blobs'), all.size);
    } finally {
      await check.close();
    }

    const clock = () => Date.now() + 24 * 3_600_000;
    const m = await startMirror({ dataDir: target, upstreams: [{ name: 'docker.io', url: wire.url, tagTtlMs: 1 }], defaultUpstream: 'docker.io', now: clock });
    try {
      for (const img of Object.values(images)) {
        for (const accept of [undefined, ALL_ACCEPT, img.root.mediaType]) {
          const r = await get(`${m.url}/v2/${img.name}/manifests/${img.tag}`, { headers: accept ? { accept } : {} });
          assert.equal(r.status, 200, `${img.name}:${img.tag} with Accept ${accept}`);
          assert.equal(r.headers['docker-content-digest'], img.root.digest);
          assert.deepEqual(r.body, img.root.bytes);
        }
        for (const man of img.manifests.values()) {
          const r = await get(`${m.url}/v2/${img.name}/manifests/${man.digest}`, { headers: { accept: ALL_ACCEPT } });
          assert.equal(r.status, 200);
          assert.equal(r.headers['content-type'], man.mediaType);
          assert.equal(sha256(r.body), man.digest);
        }
        for (const [d, b] of img.blobs) {
          const r = await get(`${m.url}/v2/${img.name}/blobs/${d}`);
          assert.equal(r.status, 200);
          assert.equal(sha256(r.body), d);
          const h = await get(`${m.url}/v2/${img.name}/blobs/${d}`, { method: 'HEAD' });
          assert.equal(h.status, 200);
          assert.equal(h.headers['content-length'], String(b.length));
        }
      }
    } finally {
      await m.stop();
    }
    assert.equal(wire.connections, 0, 'neither the export, the import nor the mirror contacted an upstream');

    // Importing the same bundle again writes nothing new and changes no count.
    const again = await importInto(target, createReadStream(bundle));
    assert.equal(again.present, all.size);
  });

  test('skopeo reads the bundle as an oci-archive, by the full reference', async (t) => {
    if (!requireTools(t, 'skopeo')) return;
    const bundle = join(work, 'skopeo.tar');
    await exportTo(bundle, { refs: ['multi:1', 'single:2'] });
    const copy = async (source: string, all: boolean) => {
      const dir = await mkdtemp(join(work, 'dir-'));
      const args = ['copy', '--override-os', 'linux', '--override-arch', 'amd64', ...(all ? ['--all'] : []), source, `dir:${dir}`];
      const r = await skopeo(args);
      assert.equal(r.code, 0, `skopeo ${args.join(' ')}: ${r.stderr}`);
      return dir;
    };
    const checkIndex = async (source: string, img: FixtureImage) => {
      // One platform, as a node pulls it: skopeo picks the child from the index.
      const one = await copy(source, false);
      const child = childFor(img, 'amd64');
      assert.equal(sha256(await readFile(join(one, 'manifest.json'))), child.digest, source);
      for (const d of blobsOf(child.bytes)) assert.equal(sha256(await readFile(join(one, hex(d)))), d);
      // Every platform: the index itself, unchanged, and each child.
      const all = await copy(source, true);
      assert.equal(sha256(await readFile(join(all, 'manifest.json'))), img.root.digest, `${source} --all`);
      for (const m of img.manifests.values()) {
        if (m.digest !== img.root.digest) assert.equal(sha256(await readFile(join(all, `${hex(m.digest)}.manifest.json`))), m.digest);
      }
    };
    await checkIndex(`oci-archive:${bundle}:docker.io/library/multi:1`, images.multi);
    const single = await copy(`oci-archive:${bundle}:docker.io/library/single:2`, false);
    assert.equal(sha256(await readFile(join(single, 'manifest.json'))), images.single.root.digest);
    for (const [d] of images.single.blobs) assert.equal(sha256(await readFile(join(single, hex(d)))), d);

    // A one-platform bundle: that platform copies; a copy of every platform cannot.
    const amd64Only = join(work, 'skopeo-amd64.tar');
    await exportTo(amd64Only, { refs: ['multi:1'], platforms: ['linux/amd64'] });
    const one = await copy(`oci-archive:${amd64Only}:docker.io/library/multi:1`, false);
    assert.equal(sha256(await readFile(join(one, 'manifest.json'))), childFor(images.multi, 'amd64').digest);
    const dir = await mkdtemp(join(work, 'dir-'));
    const failed = await skopeo(['copy', '--all', `oci-archive:${amd64Only}:docker.io/library/multi:1`, `dir:${dir}`]);
    assert.notEqual(failed.code, 0, 'skopeo copy --all needs every platform in the bundle');

    // containers/image selects a root by name only when it has an OCI media type; a Docker
    // manifest list is read from a one-image bundle without a name.
    const docker = join(work, 'skopeo-docker.tar');
    await exportTo(docker, { refs: ['dlist:v3'] });
    await checkIndex(`oci-archive:${docker}`, images.dlist);
  });

  test('ctr images import takes a one-platform bundle under the full name', async (t) => {
    if (!requireTools(t, 'containerd', 'ctr')) return;
    const bundle = join(work, 'ctr.tar');
    await exportTo(bundle, { refs: ['multi:1', 'dlist:v3'], platforms: ['linux/amd64'] });
    const c = await startContainerd();
    try {
      const r = await c.ctr(['images', 'import', '--platform', 'linux/amd64', bundle]);
      assert.equal(r.code, 0, r.stderr);
      const ls = await c.ctr(['images', 'ls', '-q']);
      assert.deepEqual(ls.stdout.trim().split('\n').sort(), ['docker.io/library/dlist:v3', 'docker.io/library/multi:1']);
      const check = await c.ctr(['images', 'check']);
      assert.equal(check.code, 0, check.stderr);
      for (const img of [images.multi, images.dlist]) {
        assert.match(check.stdout, new RegExp(`docker\\.io/${img.name}:${img.tag}\\s+\\S+\\s+${img.root.digest}\\s+complete`));
      }
    } finally {
      await c.close();
    }
  });

  test('a damaged, truncated or incomplete bundle is refused, naming the entry, and changes nothing', async () => {
    const good = join(work, 'good.tar');
    await exportTo(good, { refs: ['multi:1'] });
    const tar = await readFile(good);
    const entries = tarEntries(tar);
    const layer = entries.find((e) => e.name === `blobs/sha256/${hex(childLayer(images.multi))}`)!;
    assert.ok(layer, 'the big layer is in the bundle');
    const indexEntry = entries.find((e) => e.name === 'index.json')!;

    // A target that already holds something: the single image.
    const target = join(work, 'refusing');
    const base = join(work, 'single.tar');
    await exportTo(base, { refs: ['single:2'] });
    await importInto(target, createReadStream(base));

    const flipped = Buffer.from(tar);
    flipped[layer.data + Math.floor(layer.size / 2)] ^= 0x01;
    const badIndex = Buffer.from(tar);
    badIndex.write('x', indexEntry.data);
    const cases: Array<[string, Buffer, RegExp]> = [
      ['one flipped byte in a layer', flipped, new RegExp(`^import: ${layer.name}: content does not match its digest$`)],
      ['truncated inside a layer', tar.subarray(0, layer.data + 1000), new RegExp(`^import: ${layer.name}: the bundle is truncated`)],
      ['truncated before a layer', tar.subarray(0, layer.header), /^import: blobs\/sha256\/[0-9a-f]{64}: missing from the bundle/],
      ['truncated inside a header', tar.subarray(0, layer.header + 100), /^import: bundle after blobs\/sha256\/[0-9a-f]{64}: the bundle is truncated$/],
      ['a bad index.json', badIndex, /^import: index\.json: not valid JSON$/],
      ['no tar at all', Buffer.alloc(4096, 7), /^import: bundle: not a tar archive$/],
    ];
    const ctx = await openCache(await configFor(target, wire.url), { log: quiet() });
    try {
      const before = await snapshot(ctx, target);
      for (const [what, bytes, message] of cases) {
        await assert.rejects(importBundle(ctx, Readable.from([bytes])), (err: Error) => {
          assert.match(err.message, message, what);
          return true;
        });
        assert.deepEqual(await snapshot(ctx, target), before, `${what}: the store is unchanged`);
      }
      // The intact bundle still imports into the same store afterwards.
      const ok = await importBundle(ctx, Readable.from([tar]));
      assert.equal(ok.images[0].digest, images.multi.root.digest);
    } finally {
      await ctx.close();
    }
  });

  test('export refuses what is not in the cache, naming the image; --platform exports what is', async () => {
    const out = join(work, 'refused.tar');
    await assert.rejects(exportTo(out, { refs: ['alpine:3'] }), /^Error: export: docker\.io\/library\/alpine:3: not in the cache/);
    const written = await stat(out).then((s) => s.size, () => 0); // the stream may be closed before it opened the file
    assert.equal(written, 0, 'nothing is written when an image is missing');
    await assert.rejects(exportTo(out, { refs: [] }), /^Error: export: no image references given$/);
    await assert.rejects(exportTo(out, { refs: ['single:2', 'quay.example/org/app:1'] }), /export: quay\.example\/org\/app:1: registry quay\.example is not configured/);
    await assert.rejects(exportTo(out, { refs: [`single@sha256:${'0'.repeat(64)}`] }), /export: docker\.io\/library\/single@sha256:0{64}: manifest sha256:0{64} is not in the cache/);
    await assert.rejects(exportTo(out, { refs: ['single:2'], platforms: ['linux'] }), /platform "linux" is not os\/arch/);
    const arm64 = childFor(partial, 'arm64');
    await assert.rejects(
      exportTo(out, { refs: ['partial'] }),
      new RegExp(`export: docker\\.io/library/partial:latest: manifest ${arm64.digest} \\(linux/arm64/v8\\) is not in the cache`),
    );
    await assert.rejects(exportTo(out, { refs: ['partial'], platforms: ['linux/s390x'] }), /partial:latest: no manifest in the index is for linux\/s390x/);

    // With the platform that was pulled: the index goes whole, only linux/amd64's content with it.
    const bundle = join(work, 'partial.tar');
    const summary = await exportTo(bundle, { refs: ['partial'], platforms: ['linux/amd64'] });
    assert.deepEqual(summary.images[0].platforms, ['linux/amd64']);
    const names = tarEntries(await readFile(bundle)).map((e) => e.name);
    assert.ok(names.includes(`blobs/sha256/${hex(partial.root.digest)}`));
    assert.ok(!names.includes(`blobs/sha256/${hex(arm64.digest)}`));
    const target = join(work, 'partial-import');
    await importInto(target, createReadStream(bundle));
    const m = await startMirror({ dataDir: target, upstreams: [{ name: 'docker.io', url: wire.url, tagTtlMs: 1 }], defaultUpstream: 'docker.io' });
    try {
      const r = await get(`${m.url}/v2/${partial.name}/manifests/latest`);
      assert.equal(r.status, 200);
      assert.deepEqual(r.body, partial.root.bytes, 'the index bytes are unchanged');
      const child = childFor(partial, 'amd64');
      assert.equal(sha256((await get(`${m.url}/v2/${partial.name}/manifests/${child.digest}`, { headers: { accept: ALL_ACCEPT } })).body), child.digest);
    } finally {
      await m.stop();
    }

    // Every tag in the database (one linux/amd64 each).
    const every = await exportTo(join(work, 'every.tar'), { refs: 'all', platforms: ['linux/amd64'] });
    assert.deepEqual(every.images.map((i) => i.name).sort(), [
      'docker.io/library/dlist:v3',
      'docker.io/library/multi:1',
      'docker.io/library/partial:latest',
      'docker.io/library/single:2',
    ]);
    assert.equal(wire.connections, 0);
  });

  test('a blob damaged in the cache fails the export, naming it', async () => {
    const copyDir = join(work, 'damaged-source');
    await cp(sourceDir, copyDir, { recursive: true });
    const layer = [...images.single.blobs.keys()].find((d) => images.single.blobs.get(d)!.length > 10_000)!;
    const file = join(copyDir, 'blobs', 'sha256', hex(layer).slice(0, 2), hex(layer));
    const bytes = await readFile(file);
    bytes[100] ^= 0xff;
    await writeFile(file, bytes);
    const ctx = await openCache(await configFor(copyDir, wire.url, sourceDir), { log: quiet() });
    try {
      await assert.rejects(
        exportImages(ctx, { refs: ['single:2'], out: createWriteStream(join(work, 'damaged.tar')) }),
        new RegExp(`^Error: export: blob ${layer} is damaged in the cache`),
      );
    } finally {
      await ctx.close();
    }
  });

  test('a bundle naming a registry this mirror does not configure is refused', async () => {
    const bundle = join(work, 'single-again.tar');
    await exportTo(bundle, { refs: ['single:2'] });
    const tar = await readFile(bundle);
    const index = tarEntries(tar).find((e) => e.name === 'index.json')!;
    // Same length, so the tar stays valid: docker.io → dockex.io.
    const text = tar.subarray(index.data, index.data + index.size).toString().replaceAll('docker.io/', 'dockex.io/');
    tar.write(text, index.data);
    const target = join(work, 'other-registry');
    await assert.rejects(importInto(target, Readable.from([tar])), /^Error: import: index\.json: dockex\.io\/library\/single:2: registry dockex\.io is not configured on this mirror$/);
  });
});

/** The child manifest of an index fixture for an architecture. */
function childFor(img: FixtureImage, architecture: string): { digest: string; bytes: Buffer } {
  const index = JSON.parse(img.root.bytes.toString()) as { manifests: Array<{ digest: string; platform: { architecture: string } }> };
  const d = index.manifests.find((m) => m.platform.architecture === architecture)!.digest;
  return img.manifests.get(d)!;
}

/** Config and layer digests of an image manifest. */
function blobsOf(manifest: Buffer): string[] {
  const m = JSON.parse(manifest.toString()) as { config: { digest: string }; layers: Array<{ digest: string }> };
  return [m.config.digest, ...m.layers.map((l) => l.digest)];
}

/** The first (largest) layer of an index fixture's amd64 image. */
function childLayer(img: FixtureImage): string {
  return blobsOf(childFor(img, 'amd64').bytes)[1];
}
