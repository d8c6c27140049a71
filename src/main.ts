// The command line: argv → command. The only place that calls process.exit.
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import { OPTIONS, USAGE, UsageError } from './cli/args.js';
import { cacheCommand, gcCommand, verifyCommand } from './cli/cache-command.js';
import { configureCommand } from './cli/configure.js';
import { exportCommand } from './cli/export.js';
import { importCommand } from './cli/import.js';
import { migrateCommand } from './cli/migrate.js';
import { prewarmCommand } from './cli/prewarm.js';
import { serveCommand } from './cli/serve.js';
import { statusCommand } from './cli/status.js';
import { ConfigError } from './config.js';

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({ args: argv, allowPositionals: true, options: OPTIONS });
  const [command] = positionals;
  if (values.version) {
    console.log(`regmirror ${version()}`);
    return 0;
  }
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
    case 'cache':
      return cacheCommand(values, positionals.slice(1));
    case 'gc':
      return gcCommand(values);
    case 'verify':
      return verifyCommand(values);
    case 'migrate':
      return migrateCommand(values, positionals.slice(1));
    default:
      throw new UsageError(`regmirror: unknown command ${JSON.stringify(command)} (see regmirror --help)`);
  }
}

/** package.json sits one level above both src/ and dist/, in a checkout and in an install alike. */
function version(): string {
  const pkg = JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version?: unknown };
  return String(pkg.version);
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
