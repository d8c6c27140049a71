// The dependency direction of docs/architecture.md, checked on the import lines: oci/
// depends on nothing, store/ and upstream/ only on oci/, cache/ never on http/, and only
// http/ imports hono; only store/sqlite/ prepares SQL.
import assert from 'node:assert/strict';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { test } from 'node:test';

const SRC = new URL('../src/', import.meta.url).pathname;

function files(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => (e.isDirectory() ? files(join(dir, e.name)) : e.name.endsWith('.ts') ? [join(dir, e.name)] : []));
}

function imports(file: string): string[] {
  return [...readFileSync(file, 'utf8').matchAll(/^import[^'"]*['"]([^'"]+)['"]/gm)].map((m) => m[1]);
}

/** What each folder may import from the others (relative imports resolved to their folder). */
const ALLOWED: Record<string, string[]> = {
  oci: ['oci', 'errors'],
  store: ['store', 'oci', 'errors'],
  upstream: ['upstream', 'oci', 'errors', 'config', 'log'],
  cache: ['cache', 'store', 'upstream', 'oci', 'errors', 'log', 'metrics'],
  http: ['http', 'cache', 'oci', 'errors', 'log', 'config', 'metrics'],
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
