// A serve process at rest holds only the modules serving needs: undici's dispatchers but not
// its fetch, WebSocket, cache or mocks; prom-client's metrics but not its Pushgateway or
// cluster aggregator; no AWS SDK, PostgreSQL driver or Sigstore verifier when the config
// names none of them; no one-shot command's code. Each of these costs resident memory in
// every mirror (docs/architecture.md, Memory). The child records what it loaded
// (test/support/loaded-modules.mjs) and writes it out when it exits.
import assert from 'node:assert/strict';
import { generateKeyPairSync } from 'node:crypto';
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { test } from 'node:test';
import { request } from 'undici';
import { serveChild } from './helpers.js';

const PRELOAD = pathToFileURL(join(import.meta.dirname, 'support', 'loaded-modules.mjs')).href;

/** Starts serve on `config` (YAML), GETs /v2/, stops it with SIGTERM; the loaded module paths. */
async function loadedBy(config: string): Promise<string[]> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-lean-'));
  try {
    const file = join(dir, 'mirror.yaml');
    const out = join(dir, 'loaded.txt');
    await writeFile(file, `listen: "127.0.0.1:0"\ndataDir: ${JSON.stringify(join(dir, 'data'))}\n${config}`);
    const child = serveChild(file, { REGMIRROR_LOADED_OUT: out, NODE_OPTIONS: `${process.env.NODE_OPTIONS ?? ''} --import=${PRELOAD}`.trim() });
    const url = await child.url;
    const res = await request(`${url}/v2/`);
    await res.body.dump();
    assert.equal(res.statusCode, 200);
    child.kill('SIGTERM');
    assert.equal((await child.exited).code, 0, child.stderr());
    return (await readFile(out, 'utf8')).split('\n').filter(Boolean).map((l) => decodeURIComponent(l.slice(4)).replace(/^file:\/\//, ''));
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

function matching(loaded: string[], pattern: RegExp): string[] {
  return loaded.filter((p) => pattern.test(p));
}

test('serve on the default upstreams loads none of the heavy modules it does not use', async () => {
  const loaded = await loadedBy('');
  // The record is real: what serving needs is in it.
  assert.ok(matching(loaded, /node_modules\/undici\/lib\/dispatcher\/agent\.js$/).length === 1, 'undici Agent');
  assert.ok(matching(loaded, /node_modules\/prom-client\/lib\/registry\.js$/).length === 1, 'prom-client Registry');
  assert.ok(matching(loaded, /node_modules\/better-sqlite3\//).length > 0, 'better-sqlite3');
  assert.ok(matching(loaded, /src\/cli\/serve\.ts$/).length === 1, 'serve command');
  const heavy: Record<string, RegExp> = {
    "undici's index (fetch, WebSocket, cache, mocks)": /node_modules\/undici\/(index\.js|lib\/(web|mock|cache)\/)/,
    "prom-client's index, Pushgateway, cluster, Summary": /node_modules\/prom-client\/(index\.js|lib\/(pushgateway|cluster|summary)\.js)/,
    'the OpenTelemetry API (prom-client exemplars)': /node_modules\/@opentelemetry\//,
    'the AWS SDK': /node_modules\/@aws-sdk\//,
    'the PostgreSQL driver': /node_modules\/pg(-[a-z]+)?\//,
    'the Sigstore libraries': /node_modules\/@sigstore\//,
    'tldts (the Public Suffix List)': /node_modules\/tldts(-core)?\//,
    "the one-shot commands' code": /src\/cli\/(export|import|migrate|configure|client-config|toml-sections|cache-command|events)\.ts$/,
  };
  for (const [what, pattern] of Object.entries(heavy)) assert.deepEqual(matching(loaded, pattern), [], `${what} loaded at rest`);
});

test('a signature policy loads the Sigstore verifier, which serve without one does not hold', async () => {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-lean-key-'));
  try {
    const key = join(dir, 'cosign.pub');
    await writeFile(key, generateKeyPairSync('ec', { namedCurve: 'P-256' }).publicKey.export({ type: 'spki', format: 'pem' }));
    const loaded = await loadedBy(`policies:\n  - match: { upstream: docker.io, repositories: ["myorg/**"] }\n    signatures:\n      mode: warn\n      keys: [${JSON.stringify('file:' + key)}]\n`);
    assert.ok(matching(loaded, /node_modules\/@sigstore\/verify\//).length > 0, '@sigstore/verify');
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
});
