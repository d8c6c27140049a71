// The command line: argv → command. The only place that calls process.exit.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { createReadStream, createWriteStream, type WriteStream } from 'node:fs';
import { readFile, rm } from 'node:fs/promises';
import { configureCommand } from './cli/configure.js';
import { openCache } from './cli/context.js';
import { exportImages } from './cli/export.js';
import { importBundle } from './cli/import.js';
import { imagesFromFile, parsePlatforms, prewarm, prewarmViaServer, type PrewarmEvent, type PrewarmResult } from './cli/prewarm.js';
import { ProgressView, summaryTable } from './cli/progress.js';
import { startServer } from './cli/serve.js';
import { fetchStatus, formatBytes, formatStatus, gatherStatus } from './cli/status.js';
import { ConfigError, loadConfig } from './config.js';
import { createLogger } from './log.js';
import { MetadataDb } from './store/metadata.js';

const USAGE = `usage: regmirror <command> [options]

commands:
  serve  [--config FILE] [--offline]          run the mirror (embedded default config when no file is given)
  prewarm IMAGE... [-f FILE] [--platform linux/amd64,linux/arm64|all] [--concurrency N]
         [--server URL | --config FILE] [--referrers] [--dry-run] [--json]
                                              fill the cache ahead of a rollout
  export -o FILE|- IMAGE...|--all [--platform LIST] [--fetch] [--config FILE]
                                              write cached images as an OCI image-layout tar
  import FILE|- [--config FILE]               verify a bundle and add it to the cache, tags pinned
  status [--server URL | --config FILE] [--json]
                                              pull budgets, pulls saved, hit ratio, store size
  configure containerd|docker|podman|k3s --mirror URL [--registries LIST] [--ca FILE]
         [--write DIR|FILE | --print]         point a client at the mirror (merges into existing files)

options:
  -c, --config FILE       YAML configuration (see mirror.example.yaml)
  -s, --server URL        ask a running regmirror instead of reading its data dir
                          (admin token from REGMIRROR_ADMIN_TOKEN when the server requires one)
  -f, --file FILE         image list: one reference per line (# comments), or Kubernetes/Helm YAML
  -p, --platform LIST     platforms of multi-platform images to cache (default all)
      --concurrency N     blob downloads at once (default 4)
      --referrers         also cache signatures and other referrers
      --dry-run           say what is cached and what would be fetched; fetch nothing
      --offline           never contact an upstream (serve)
  -o, --output FILE       export: the tar to write (- for standard output)
      --all               export: every tag in the cache
      --fetch             export: prewarm what is missing first
      --json              machine-readable output
      --mirror URL        configure: the mirror, e.g. http://127.0.0.1:5000
      --registries LIST   configure: registries to send through it
                          (default docker.io,ghcr.io,quay.io,registry.k8s.io)
      --write PATH        configure: merge into this hosts dir (containerd) or file; without it, print
      --print             configure: print the files instead of writing them (the default)
      --ca FILE           configure: CA of an https mirror (containerd hosts.toml, k3s)
  -h, --help              show this help`;

/** A problem the user can fix: printed as one line, exit code 1. */
class UsageError extends Error {}

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  server: { type: 'string', short: 's' },
  json: { type: 'boolean' },
  file: { type: 'string', short: 'f', multiple: true },
  platform: { type: 'string', short: 'p' },
  concurrency: { type: 'string' },
  referrers: { type: 'boolean' },
  'dry-run': { type: 'boolean' },
  offline: { type: 'boolean' },
  output: { type: 'string', short: 'o' },
  all: { type: 'boolean' },
  fetch: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  mirror: { type: 'string' },
  registries: { type: 'string' },
  write: { type: 'string' },
  print: { type: 'boolean' },
  ca: { type: 'string' },
} as const;

type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  const [command] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  switch (command) {
    case 'serve':
      return serveCommand(values);
    case 'status':
      return statusCommand(values);
    case 'prewarm':
      return prewarmCommand(values, positionals.slice(1));
    case 'export':
      return exportCommand(values, positionals.slice(1));
    case 'import':
      return importCommand(values, positionals.slice(1));
    case 'configure':
      return configureCommand(values, positionals.slice(1));
    default:
      throw new UsageError(`regmirror: unknown command ${JSON.stringify(command)} (see regmirror --help)`);
  }
}

async function serveCommand(values: Values): Promise<number> {
  const config = loadConfig(values.config);
  if (values.offline) config.offline = true;
  const server = await startServer(config);
  process.on('SIGHUP', () => {
    server.reloadTls().catch((err: Error) => console.error(`regmirror: TLS reload failed, keeping the old certificate: ${err.message}`));
  });
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  // Responses in flight finish within limits.shutdownGrace; a second signal cuts them.
  process.once('SIGTERM', () => void server.close());
  process.once('SIGINT', () => void server.close());
  await server.shutdown();
  return 0;
}

async function statusCommand(values: Values): Promise<number> {
  let report;
  if (values.server) {
    report = await fetchStatus(values.server).catch((err: Error) => {
      throw new UsageError(`regmirror status: cannot reach ${values.server}: ${err.message}`);
    });
  } else {
    const config = loadConfig(values.config);
    const metadata = new MetadataDb(join(config.dataDir, 'mirror.db'));
    try {
      report = gatherStatus({ metadata, now: Date.now() });
    } finally {
      metadata.close();
    }
  }
  console.log(values.json ? JSON.stringify(report, null, 2) : formatStatus(report));
  return 0;
}

async function prewarmCommand(values: Values, args: string[]): Promise<number> {
  const images = [...args];
  for (const file of values.file ?? []) {
    const text = file === '-' ? await readStdin() : await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`regmirror prewarm: cannot read ${file}: ${err.code ?? err.message}`);
    });
    images.push(...imagesFromFile(text));
  }
  if (images.length === 0) throw new UsageError('regmirror prewarm: name at least one image, or a list with -f');
  const concurrency = values.concurrency === undefined ? 4 : Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new UsageError('regmirror prewarm: --concurrency must be a whole number from 1 to 64');
  let platforms: ReturnType<typeof parsePlatforms>;
  try {
    platforms = parsePlatforms(values.platform ?? 'all');
  } catch (err) {
    throw new UsageError(`regmirror prewarm: ${(err as Error).message}`);
  }
  const view = new ProgressView(process.stderr, process.stderr.isTTY === true && !values.json);
  const onEvent = (e: PrewarmEvent) => view.event(e);
  let results: PrewarmResult[];
  if (values.server) {
    if (values['dry-run']) throw new UsageError('regmirror prewarm: --dry-run reads the data dir; use it without --server');
    results = await prewarmViaServer(values.server, images, {
      platforms: values.platform,
      concurrency,
      referrers: values.referrers,
      token: process.env.REGMIRROR_ADMIN_TOKEN,
      onEvent,
    });
  } else {
    const ctx = await openCache(loadConfig(values.config), { log: createLogger('warn') });
    try {
      results = await prewarm(ctx, images, { platforms, concurrency, referrers: values.referrers, dryRun: values['dry-run'], onEvent });
    } finally {
      await ctx.close();
    }
  }
  console.log(values.json ? JSON.stringify(results, null, 2) : summaryTable(results));
  return results.some((r) => r.error) ? 1 : 0;
}

async function exportCommand(values: Values, refs: string[]): Promise<number> {
  if (!values.output) throw new UsageError('regmirror export: name the bundle with -o FILE (or -o - for standard output)');
  if (values.all === (refs.length > 0)) throw new UsageError('regmirror export: name images or give --all, not both or neither');
  const platforms = values.platform === undefined || values.platform === 'all' ? 'all' : values.platform.split(',').map((p) => p.trim());
  const ctx = await openCache(loadConfig(values.config), { log: createLogger('warn') });
  try {
    if (values.fetch && refs.length > 0) {
      const view = new ProgressView(process.stderr, process.stderr.isTTY === true);
      const warmed = await prewarm(ctx, refs, { platforms: parsePlatforms(values.platform ?? 'all'), concurrency: 4, onEvent: (e) => view.event(e) });
      const failed = warmed.filter((r) => r.error);
      if (failed.length) throw new UsageError(`regmirror export: could not fetch ${failed.map((r) => `${r.image} (${r.error})`).join('; ')}`);
    }
    const toStdout = values.output === '-';
    const out = toStdout ? process.stdout : createWriteStream(values.output);
    const summary = await exportImages(ctx, { refs: values.all ? 'all' : refs, platforms, out }).catch(async (err: Error) => {
      if (!toStdout) await rm(values.output!, { force: true });
      throw new UsageError(`regmirror export: ${err.message}`);
    });
    if (!toStdout) await new Promise<void>((resolve) => (out as WriteStream).once('close', () => resolve()));
    process.stderr.write(`exported ${summary.images.length} image(s), ${summary.blobs} blobs, ${formatBytes(summary.bytes)}\n`);
    for (const i of summary.images) process.stderr.write(`  ${i.name} ${i.digest.slice(0, 19)} ${i.platforms.join(',')}\n`);
    return 0;
  } finally {
    await ctx.close();
  }
}

async function importCommand(values: Values, args: string[]): Promise<number> {
  if (args.length !== 1) throw new UsageError('regmirror import: name one bundle file (or - for standard input)');
  const input = args[0] === '-' ? process.stdin : createReadStream(args[0]);
  const ctx = await openCache(loadConfig(values.config), { log: createLogger('warn') });
  try {
    const summary = await importBundle(ctx, input).catch((err: Error) => {
      throw new UsageError(err.message.startsWith('import:') ? `regmirror ${err.message}` : `regmirror import: ${err.message}`);
    });
    console.log(`imported ${summary.images.length} image(s), ${summary.blobs} blobs, ${formatBytes(summary.bytes)} (${summary.present} already cached); tags pinned:`);
    for (const i of summary.images) console.log(`  ${i.name} ${i.digest}`);
    return 0;
  } finally {
    await ctx.close();
  }
}

function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A bad flag, a bad config, a port in use: one line naming the problem.
    const e = err as Error & { code?: string };
    const known = err instanceof ConfigError || err instanceof UsageError || e.code?.startsWith('ERR_PARSE_ARGS');
    console.error(known ? e.message : `regmirror: ${e.message}`);
    process.exit(1);
  },
);
