// `npm run build`: src/ bundled by esbuild into dist/main.js and its lazily loaded chunks.
// One bundle instead of a tree of ES modules (and of hono's, yaml's …) costs less resident
// memory at rest: every module record, its source text and the loader's bookkeeping stay in
// the heap for the life of the process. Type checking is `npm run typecheck` (tsc), which
// `npm test` runs first; esbuild only strips the types.
//
//   npm run build [-- --outDir DIR]      (default: dist/)
import { build } from 'esbuild';
import { copyFile, rm } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';

const ROOT = new URL('..', import.meta.url).pathname;

/**
 * Left in node_modules and loaded from there: the native SQLite addon, and the clients only
 * some configurations load (PostgreSQL, S3/ECR, Sigstore), which are large and already
 * imported on first need.
 */
const EXTERNAL = ['better-sqlite3', 'pg', '@aws-sdk/*', '@sigstore/*'];

/** Files read or started at run time next to the module that names them. */
const ASSETS = ['src/http/bcrypt-thread.js', 'src/http/status-page-script.js'];

const { values } = parseArgs({ options: { outDir: { type: 'string' } } });
const outdir = resolve(ROOT, values.outDir ?? 'dist');

// Chunk names carry content hashes: without a clean dir, every build would leave its old ones.
await rm(outdir, { recursive: true, force: true });
await build({
  absWorkingDir: ROOT,
  entryPoints: ['src/main.ts'],
  outdir,
  bundle: true,
  splitting: true,
  format: 'esm',
  platform: 'node',
  target: 'node20',
  external: EXTERNAL,
  // Names kept: stack traces and CPU profiles stay readable.
  minifyWhitespace: true,
  minifySyntax: true,
  // CommonJS dependencies inside an ES module bundle call require(); give them Node's.
  banner: { js: "import { createRequire as __createRequire } from 'node:module'; const require = __createRequire(import.meta.url);" },
  logLevel: 'warning',
});
// Every chunk sits in outdir itself, so one copy beside them serves each chunk's relative URL.
for (const f of ASSETS) await copyFile(join(ROOT, f), join(outdir, f.slice(f.lastIndexOf('/') + 1)));
