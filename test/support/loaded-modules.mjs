// Preloaded (node --import) into a regmirror child by test/lean-imports.test.ts: when the
// process exits it appends every module it loaded to $REGMIRROR_LOADED_OUT, one per line:
// ES modules as the loader hook saw them, CommonJS ones from require's cache (which also
// holds the CommonJS packages ES modules imported).
import { appendFileSync } from 'node:fs';
import { createRequire, register } from 'node:module';

const out = process.env.REGMIRROR_LOADED_OUT;
if (out) {
  register(new URL('./loaded-modules-hooks.mjs', import.meta.url), { data: { out } });
  const cache = createRequire(import.meta.url).cache;
  process.on('exit', () => appendFileSync(out, Object.keys(cache).map((p) => `cjs ${p}\n`).join('')));
}
