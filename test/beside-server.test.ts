// Tools and servers sharing one data dir: a second `serve` starting while the first is
// mid-download, `gc` and a running server's integrity check while an import has published
// but not yet recorded, the evictor while an import holds blobs it counted as present.
// Each pairing is two real processes; the import is stopped (SIGSTOP) at the exact step
// where the other process acts, then continued. Nothing may leave a pinned row without
// its file, nor lose a download.
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { mkdtemp, readdir, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, test } from 'node:test';
import Database from 'better-sqlite3';
import { request } from 'undici';
import { largeBlobImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli, type CliResult, counter, get, serveChild, sha256, startMirror, until } from './helpers.js';

const MB = 1024 * 1024;
const MAIN = new URL('../src/main.ts', import.meta.url).pathname;

/** `regmirror ARGS` stopped by itself at crash point `at`; cont() lets it go on. */
function stoppedAt(at: string, args: string[]): { stopped: Promise<void>; exited: Promise<CliResult>; cont(): void } {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, ...args], { env: { ...process.env, REGMIRROR_STOP_AT: at }, stdio: ['ignore', 'pipe', 'pipe'] });
  let stdout = '';
  let stderr = '';
  child.stdout!.on('data', (c: Buffer) => (stdout += c.toString()));
  child.stderr!.on('data', (c: Buffer) => (stderr += c.toString()));
  const exited = new Promise<CliResult>((resolve) => child.once('exit', (code, signal) => resolve({ code, signal, stdout, stderr })));
  // The third field of /proc/<pid>/stat is the state: T once the process stopped itself.
  const state = async () => (await readFile(`/proc/${child.pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.[0];
  let gone = false;
  void exited.then(() => (gone = true));
  const stopped = until(`regmirror ${args[0]} to stop at ${at}`, async () => {
    if (gone) throw new Error(`regmirror ${args[0]} exited before ${at}:\n${stderr}`);
    return (await state()) === 'T';
  }, 60_000);
  return { stopped, exited, cont: () => child.kill('SIGCONT') };
}

/** `regmirror serve` that stops itself the first time it reaches crash point `at`. */
function serveStoppingAt(config: string, at: string): { url: Promise<string>; stopped: Promise<void>; cont(): void; kill(): Promise<void> } {
  const child = spawn(process.execPath, ['--import', 'tsx', MAIN, 'serve', '--config', config], { env: { ...process.env, REGMIRROR_STOP_AT: at }, stdio: ['ignore', 'ignore', 'pipe'] });
  let seen = '';
  child.stderr!.on('data', (c: Buffer) => (seen += c.toString()));
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
  let gone = false;
  void exited.then(() => (gone = true));
  const check = () => {
    if (gone) throw new Error(`regmirror serve exited:\n${seen}`);
  };
  const url = (async () => {
    await until('regmirror serve to listen', () => (check(), /"msg":"listening"/.test(seen)));
    return /"msg":"listening".*?"url":"([^"]+)"/.exec(seen)![1];
  })();
  const state = async () => (await readFile(`/proc/${child.pid}/stat`, 'utf8').catch(() => '')).split(') ')[1]?.[0];
  const stopped = until(`regmirror serve to stop at ${at}`, async () => (check(), (await state()) === 'T'), 60_000);
  url.catch(() => {});
  stopped.catch(() => {});
  return {
    url,
    stopped,
    cont: () => child.kill('SIGCONT'),
    kill: async () => {
      child.kill('SIGKILL');
      await exited;
    },
  };
}

function blobPath(dataDir: string, digest: string): string {
  const hex = digest.slice(7);
  return join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex);
}


function isPinned(dataDir: string, digest: string): boolean {
  const db = new Database(join(dataDir, 'mirror.db'), { readonly: true, fileMustExist: true });
  try {
    return (db.prepare('SELECT pinned FROM blobs WHERE digest = ?').get(digest) as { pinned: number } | undefined)?.pinned === 1;
  } finally {
    db.close();
  }
}

/** Pinned rows whose file is missing: must always be none. */
function pinnedWithoutFile(dataDir: string): string[] {
  const db = new Database(join(dataDir, 'mirror.db'), { readonly: true, fileMustExist: true });
  try {
    const rows = db.prepare('SELECT digest FROM blobs WHERE pinned = 1').all() as Array<{ digest: string }>;
    return rows.map((r) => r.digest).filter((d) => !existsSync(blobPath(dataDir, d)));
  } finally {
    db.close();
  }
}

describe('tools beside a running server', () => {
  let up: FakeUpstream;
  /** An upstream that holds nothing: an air-gapped site's mirror only has what it imports. */
  let empty: FakeUpstream;
  let dir: string;
  let n = 0;
  let bundled: FixtureImage;
  let bundle: string;

  const yaml = (dataDir: string, url: string, extra = '') => `listen: "127.0.0.1:0"\ndataDir: ${dataDir}\ndefaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: ${url}\n${extra}`;
  async function fresh(url: string, extra = ''): Promise<{ dataDir: string; config: string }> {
    const dataDir = join(dir, `data${++n}`);
    const config = join(dir, `mirror${n}.yaml`);
    await writeFile(config, yaml(dataDir, url, extra));
    return { dataDir, config };
  }

  before(async () => {
    up = await FakeUpstream.start({ auth: 'none' });
    empty = await FakeUpstream.start({ auth: 'none' });
    dir = await mkdtemp(join(tmpdir(), 'regmirror-beside-'));
    bundled = await singleImage({ name: 'library/bundled', tag: '1', seed: 'beside-bundled', layerSizes: [300_000, 100_000] });
    up.addImage(bundled);
    // A bundle of it, made the way an operator would: pulled through a mirror, exported.
    const src = await fresh(up.url);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', dataDir: src.dataDir });
    try {
      assert.equal((await get(`${m.url}/v2/${bundled.name}/manifests/1`)).status, 200);
      for (const [d] of bundled.blobs) assert.equal(sha256((await get(`${m.url}/v2/${bundled.name}/blobs/${d}`)).body), d);
    } finally {
      await m.close();
    }
    bundle = join(dir, 'bundled.tar');
    const e = await cli(['export', '--config', src.config, '-o', bundle, 'library/bundled:1']);
    assert.equal(e.code, 0, e.stderr);
  });
  after(async () => {
    await up.close();
    await empty.close();
    await rm(dir, { recursive: true, force: true });
  });

  test('13.8 a second serve starting on the same data dir leaves the first one’s download alone', async () => {
    const img = largeBlobImage('library/slow', '1', 6 * MB, 'beside-slow');
    up.addImage(img);
    const [layer] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
    const { dataDir, config } = await fresh(up.url);
    // Slow enough that the second server is up long before the download ends.
    up.faults = { blobBytesPerSecond: 1 * MB };
    const first = serveChild(config);
    let second: ReturnType<typeof serveChild> | undefined;
    try {
      const url = await first.url;
      const res = await request(`${url}/v2/${img.name}/blobs/${layer}`, { signal: AbortSignal.timeout(30_000) });
      const body = (async () => {
        const chunks: Buffer[] = [];
        for await (const c of res.body) chunks.push(c as Buffer);
        return Buffer.concat(chunks);
      })();
      await until('the download’s temp file', async () => (await readdir(join(dataDir, 'tmp'))).length > 0);
      second = serveChild(config);
      const url2 = await second.url;
      assert.equal(sha256(await body), layer);
      up.faults = {};
      await until('the blob to be published', () => existsSync(blobPath(dataDir, layer)), 10_000);
      up.resetCounters();
      assert.equal(sha256((await get(`${url2}/v2/${img.name}/blobs/${layer}`)).body), layer);
      assert.equal(up.counters.blobGet, 0, 'a hit in the second server: the first one recorded its download');
    } finally {
      up.faults = {};
      first.kill();
      second?.kill();
      await Promise.all([first.exited, second?.exited]);
    }
  });

  test('13.8 gc while an import has published but not yet recorded deletes nothing of it', async () => {
    const { dataDir, config } = await fresh(empty.url);
    const imp = stoppedAt('import:before-commit', ['import', '--config', config, bundle]);
    await imp.stopped;
    const gc = await cli(['gc', '--config', config]);
    assert.equal(gc.code, 0, gc.stderr);
    imp.cont();
    const done = await imp.exited;
    assert.equal(done.code, 0, done.stderr);
    assert.deepEqual(pinnedWithoutFile(dataDir), []);
    const v = await cli(['verify', '--config', config]);
    assert.match(v.stdout, / 0 bad/, v.stdout + v.stderr);
  });

  test('13.8 gc while a prewarm has published but not yet recorded deletes nothing of it', async () => {
    const { dataDir, config } = await fresh(up.url);
    const warm = stoppedAt('publish:after-rename', ['prewarm', '--config', config, 'library/bundled:1']);
    await warm.stopped;
    const gc = await cli(['gc', '--config', config]);
    assert.equal(gc.code, 0, gc.stderr);
    warm.cont();
    const done = await warm.exited;
    assert.equal(done.code, 0, done.stderr);
    const v = await cli(['verify', '--config', config]);
    assert.match(v.stdout, / 0 bad/, v.stdout + v.stderr);
    for (const d of [bundled.root.digest, ...bundled.blobs.keys()]) assert.ok(existsSync(blobPath(dataDir, d)), `${d} is stored`);
  });

  test('13.8 a running server’s integrity check while an import has published but not yet recorded deletes nothing of it', async () => {
    const { dataDir, config } = await fresh(empty.url);
    const s = serveChild(config);
    try {
      const url = await s.url;
      const imp = stoppedAt('import:before-commit', ['import', '--config', config, bundle]);
      await imp.stopped;
      // A client asks for the published layer: the file is there, its row not yet.
      const [layer] = [...bundled.blobs].sort((a, b) => b[1].length - a[1].length)[0];
      await get(`${url}/v2/${bundled.name}/blobs/${layer}`);
      imp.cont();
      const done = await imp.exited;
      assert.equal(done.code, 0, done.stderr);
      assert.deepEqual(pinnedWithoutFile(dataDir), []);
      // The server sees another process's rows within a second (its hot-row memo); then every blob is served.
      for (const [d] of bundled.blobs) {
        await until(`${d} to be served`, async () => sha256((await get(`${url}/v2/${bundled.name}/blobs/${d}`)).body) === d, 5000);
      }
      const v = await cli(['verify', '--config', config]);
      assert.match(v.stdout, / 0 bad/, v.stdout + v.stderr);
    } finally {
      s.kill();
      await s.exited;
    }
  });

  test('13.8 the evictor while an import holds blobs it counted as present leaves no pinned row without its file', async () => {
    const big = largeBlobImage('library/filler', '1', 3 * MB, 'beside-filler');
    up.addImage(big);
    const { dataDir, config } = await fresh(up.url, 'storage:\n  maxSize: 3MiB\n  highWatermark: 90\n  lowWatermark: 50\n');
    const s = serveChild(config);
    try {
      const url = await s.url;
      assert.equal((await get(`${url}/v2/${bundled.name}/manifests/1`)).status, 200);
      for (const [d] of bundled.blobs) assert.equal(sha256((await get(`${url}/v2/${bundled.name}/blobs/${d}`)).body), d);
      await until('the pulled blobs to be recorded', () => [...bundled.blobs.keys()].every((d) => existsSync(blobPath(dataDir, d))));
      // Every blob of the bundle is in the store already: the import only verifies them.
      const imp = stoppedAt('import:before-commit', ['import', '--config', config, bundle]);
      await imp.stopped;
      // Another pull pushes the store over its limit; the least recently used go.
      const [filler] = [...big.blobs].sort((a, b) => b[1].length - a[1].length)[0];
      assert.equal(sha256((await get(`${url}/v2/${big.name}/blobs/${filler}`)).body), filler);
      await until('the evictor to remove the bundled image’s layers', () => [...bundled.blobs.keys()].some((d) => !existsSync(blobPath(dataDir, d))));
      imp.cont();
      const done = await imp.exited;
      assert.equal(done.code, 0, done.stderr);
      assert.match(done.stdout, /imported 1 image/);
      assert.deepEqual(pinnedWithoutFile(dataDir), []);
      for (const d of bundled.blobs.keys()) assert.ok(existsSync(blobPath(dataDir, d)), `${d} is pinned and stored`);
    } finally {
      s.kill();
      await s.exited;
    }
    const v = await cli(['verify', '--config', config]);
    assert.match(v.stdout, / 0 bad/, v.stdout + v.stderr);
  });

  test('13.8 the evictor never removes a blob an import pinned after the evictor chose it', async () => {
    const older = await singleImage({ name: 'library/older', tag: '1', seed: 'beside-older', layerSizes: [400_000] });
    const filler = largeBlobImage('library/filler2', '1', 3 * MB, 'beside-filler2');
    up.addImage(older);
    up.addImage(filler);
    const { dataDir, config } = await fresh(up.url, 'storage:\n  maxSize: 3MiB\n  highWatermark: 90\n  lowWatermark: 50\n');
    const s = serveStoppingAt(config, 'evict:before-delete');
    try {
      const url = await s.url;
      for (const img of [older, bundled]) {
        assert.equal((await get(`${url}/v2/${img.name}/manifests/1`)).status, 200);
        for (const [d] of img.blobs) assert.equal(sha256((await get(`${url}/v2/${img.name}/blobs/${d}`)).body), d);
      }
      await until('the pulled blobs to be stored', () => [...older.blobs.keys(), ...bundled.blobs.keys()].every((d) => existsSync(blobPath(dataDir, d))));
      // The filler pushes the store over its limit: the evictor picks the least recently
      // used (older, then bundled) and the server stops just before it deletes them.
      const [big] = [...filler.blobs].sort((a, b) => b[1].length - a[1].length)[0];
      const pulling = get(`${url}/v2/${filler.name}/blobs/${big}`).catch(() => undefined);
      await s.stopped;
      // Meanwhile an import pins the bundled image (its blobs are in the store: held, not written).
      const imp = await cli(['import', '--config', config, bundle]);
      assert.equal(imp.code, 0, imp.stderr);
      s.cont();
      await pulling;
      await until('the evictor to remove the unpinned image', async () => !existsSync(blobPath(dataDir, [...older.blobs.keys()][0])) && counter((await get(`${url}/metrics`)).body.toString(), 'regmirror_evicted_blobs_total') > 0);
      assert.deepEqual(pinnedWithoutFile(dataDir), []);
      for (const d of [bundled.root.digest, ...bundled.blobs.keys()]) {
        assert.ok(existsSync(blobPath(dataDir, d)), `${d}, pinned by the import, is still stored`);
        assert.ok(isPinned(dataDir, d), `${d} is still recorded and pinned`);
      }
    } finally {
      await s.kill();
    }
  });
});
