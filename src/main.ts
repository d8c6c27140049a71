// The command line: argv → command. The only place that calls process.exit.
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import { startServer } from './cli/serve.js';
import { fetchStatus, formatStatus, gatherStatus } from './cli/status.js';
import { ConfigError, loadConfig } from './config.js';
import { MetadataDb } from './store/metadata.js';

const USAGE = `usage: regmirror <command> [options]

commands:
  serve  [--config FILE]                      run the mirror (embedded default config when no file is given)
  status [--server URL | --config FILE] [--json]
                                              pull budgets, pulls saved, hit ratio, store size

options:
  -c, --config FILE       YAML configuration (see mirror.example.yaml)
  -s, --server URL        ask a running regmirror instead of reading its data dir
      --json              machine-readable output
  -h, --help              show this help`;

/** A problem the user can fix: printed as one line, exit code 1. */
class UsageError extends Error {}

const OPTIONS = {
  config: { type: 'string', short: 'c' },
  server: { type: 'string', short: 's' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
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
    default:
      throw new UsageError(`regmirror: unknown command ${JSON.stringify(command)} (see regmirror --help)`);
  }
}

async function serveCommand(values: Values): Promise<number> {
  const server = await startServer(loadConfig(values.config));
  await new Promise<void>((resolve) => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  await server.close();
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
