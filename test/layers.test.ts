// The dependency direction of docs/architecture.md, checked on the import and re-export
// lines and on dynamic imports: oci/ depends on nothing, store/ and upstream/ only on
// oci/, cluster/ on those, cache/ never on http/, and only http/ imports hono; only store/sqlite/ prepares
// SQL; storage backends (store/fs/, store/sqlite/, store/postgres/, …) and paths under
// the data dir stay in store/, so cache/ and cli/ see the interfaces and the spool only.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';

const SRC = new URL('../src/', import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

/** Static imports (with a binding or for effect), `export … from`, and `import('…')`. */
const IMPORT_FORMS = [/^(?:import|export)\b[^'";]*?\bfrom\s*['"]([^'"]+)['"]/gm, /^import\s*['"]([^'"]+)['"]/gm, /\bimport\(\s*['"]([^'"]+)['"]\s*\)/g];

function imports(file: string): string[] {
  const text = readFileSync(file, 'utf8');
  return IMPORT_FORMS.flatMap((re) => [...text.matchAll(re)].map((m) => m[1]));
}

/** `spec` imported from `file`, as a path relative to src/ (relative specifiers only). */
function resolved(file: string, spec: string): string | undefined {
  return spec.startsWith('.') ? relative(SRC, join(file, '..', spec)) : undefined;
}

/** Folders under src/store/ holding one storage backend each. */
const BACKENDS = /^store\/(fs|postgres|sqlite|s3)\//;

/** What each folder may import from the others (relative imports resolved to their folder). */
const ALLOWED: Record<string, string[]> = {
  oci: ['oci', 'errors'],
  store: ['store', 'oci', 'errors', 'lru'],
  upstream: ['upstream', 'oci', 'errors', 'config', 'log'],
  cluster: ['cluster', 'store', 'upstream', 'oci', 'errors', 'log'],
  cache: ['cache', 'cluster', 'events', 'config-policies', 'store', 'upstream', 'oci', 'errors', 'log', 'metrics', 'lru'],
  events: ['events', 'store', 'upstream', 'oci', 'errors', 'log', 'metrics', 'config-policies'],
  policy: ['policy', 'cache', 'store', 'upstream', 'oci', 'errors', 'config', 'config-policies', 'log', 'metrics', 'events', 'lru'],
  http: ['http', 'cache', 'cluster', 'policy', 'oci', 'errors', 'log', 'config', 'metrics', 'bytes', 'lru'],
};

test('imports follow the layer direction', () => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    const layer = rel.includes('/') ? rel.split('/')[0] : undefined;
    if (!layer || !(layer in ALLOWED)) continue;
    for (const spec of imports(file)) {
      if (spec.startsWith('.')) {
        const target = relative(SRC, join(file, '..', spec));
        const targetLayer = target.includes('/') ? target.split('/')[0] : target.replace(/\.js$/, '');
        assert.ok(ALLOWED[layer].includes(targetLayer), `${rel} imports ${spec}`);
      } else if (spec.startsWith('hono') || spec.startsWith('@hono/')) {
        assert.equal(layer, 'http', `${rel} imports ${spec}: only http/ speaks hono`);
      }
    }
  }
});

test('only the SQLite backend (store/sqlite/) prepares SQL', () => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    if (rel.startsWith('store/sqlite/')) continue;
    assert.ok(!/\.prepare\(/.test(readFileSync(file, 'utf8')), `${rel} prepares SQL`);
  }
});

test('the import scanner sees re-exports and dynamic imports', () => {
  assert.ok(imports(join(SRC, 'cache', 'blobs.ts')).includes('../store/body-source.js'), 'export … from');
  assert.ok(imports(join(SRC, 'upstream', 'ecr.ts')).includes('@aws-sdk/client-ecr'), 'import()');
});

test('only store/ imports a storage backend; the composition root gets its stores from a factory', () => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    if (rel.startsWith('store/')) continue;
    for (const spec of imports(file)) {
      const target = resolved(file, spec);
      assert.ok(target === undefined || !BACKENDS.test(target), `${rel} imports the backend module ${spec}`);
    }
  }
});

test('paths under the data dir are built only in store/, and the spool is read there only through its readers', () => {
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    if (rel.startsWith('store/')) continue;
    const text = readFileSync(file, 'utf8');
    assert.ok(!/join\([^)]*dataDir/.test(text), `${rel} builds a path under the data dir`);
    assert.ok(!/['"]mirror\.db['"]|join\([^)]*['"](?:tmp|blobs)['"]/.test(text), `${rel} names a data dir entry`);
    assert.ok(!/\.(?:placeAt|relinkTo|pathFor)\(/.test(text), `${rel} uses a file-store-only method`);
    if (rel.startsWith('cache/')) assert.ok(!imports(file).some((s) => s.startsWith('node:fs')), `${rel} touches files itself`);
  }
});

test("undici and prom-client values come through their core modules, never the packages' indexes", () => {
  // The indexes load fetch, WebSocket, mocks, the Pushgateway… into every process
  // (docs/architecture.md, Memory); type-only imports load nothing and stay allowed.
  const cores: Record<string, string> = { undici: 'upstream/undici-core.ts', 'prom-client': 'prom-client-core.ts' };
  for (const file of files(SRC)) {
    const rel = relative(SRC, file);
    const text = readFileSync(file, 'utf8');
    for (const [pkg, core] of Object.entries(cores)) {
      if (rel === core) continue;
      const value = new RegExp(`^(?:import|export)(?!\\s+type\\b)[^'";]*?\\bfrom\\s*['"]${pkg}['"]|\\bimport\\(\\s*['"]${pkg}['"]`, 'm');
      assert.ok(!value.test(text), `${rel} imports values from ${pkg}: use src/${core}`);
    }
  }
});
