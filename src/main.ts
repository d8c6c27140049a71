// The command line: argv → command. The only place that calls process.exit.
import { ArgumentError, commandUsage, parseCommandLine, USAGE, UsageError, versionLine } from './cli/args.js';
import { cacheCommand, gcCommand, verifyCommand } from './cli/cache-command.js';
import { ConfigureError } from './cli/client-config.js';
import { configureCommand } from './cli/configure.js';
import { eventsCommand } from './cli/events.js';
import { exportCommand } from './cli/export.js';
import { importCommand } from './cli/import.js';
import { migrateCommand } from './cli/migrate.js';
import { prewarmCommand } from './cli/prewarm.js';
import { serveCommand } from './cli/serve.js';
import { statusCommand } from './cli/status.js';
import { tagsCommand } from './cli/tags.js';
import { ConfigError } from './config.js';

async function main(argv: string[]): Promise<number> {
  const { command, args, values } = parseCommandLine(argv);
  if (values.help) {
    console.log(command === undefined ? USAGE : commandUsage(command));
    return 0;
  }
  if (values.version || command === 'version') {
    if (args.length > 0) throw new ArgumentError(`regmirror version: unexpected argument ${JSON.stringify(args[0])}`);
    console.log(versionLine());
    return 0;
  }
  switch (command) {
    case undefined:
      // A bare `regmirror` is a usage error: the help goes where errors go.
      console.error(USAGE);
      return 2;
    case 'serve':
      return serveCommand(values);
    case 'status':
      return statusCommand(values);
    case 'prewarm':
      return prewarmCommand(values, args);
    case 'export':
      return exportCommand(values, args);
    case 'import':
      return importCommand(values, args);
    case 'configure':
      return configureCommand(values, args);
    case 'cache':
      return cacheCommand(values, args);
    case 'gc':
      return gcCommand(values);
    case 'verify':
      return verifyCommand(values);
    case 'events':
      return eventsCommand(values, args);
    case 'migrate':
      return migrateCommand(values, args);
    case 'tags':
      return tagsCommand(values, args);
    default:
      throw new ArgumentError(`regmirror: unknown command ${JSON.stringify(command)} (see regmirror --help)`);
  }
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A bad flag, a bad config, a port in use: one line naming the problem.
    const e = err as Error;
    const known = err instanceof ConfigError || err instanceof UsageError;
    console.error(known ? e.message : `regmirror: ${e.message}`);
    process.exit(err instanceof ArgumentError || (err instanceof ConfigureError && err.usage) ? 2 : 1);
  },
);
