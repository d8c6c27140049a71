// The command line: argv → command. The only place that calls process.exit. Each command's
// module is imported when it runs, so `serve` holds none of the one-shot commands' code.
import { ArgumentError, commandUsage, parseCommandLine, USAGE, UsageError, versionLine } from './cli/args.js';
import { ConfigureError } from './cli/configure-error.js';
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
      return (await import('./cli/serve.js')).serveCommand(values);
    case 'status':
      return (await import('./cli/status.js')).statusCommand(values);
    case 'prewarm':
      return (await import('./cli/prewarm.js')).prewarmCommand(values, args);
    case 'export':
      return (await import('./cli/export.js')).exportCommand(values, args);
    case 'import':
      return (await import('./cli/import.js')).importCommand(values, args);
    case 'configure':
      return (await import('./cli/configure.js')).configureCommand(values, args);
    case 'cache':
      return (await import('./cli/cache-command.js')).cacheCommand(values, args);
    case 'gc':
      return (await import('./cli/cache-command.js')).gcCommand(values);
    case 'verify':
      return (await import('./cli/cache-command.js')).verifyCommand(values);
    case 'events':
      return (await import('./cli/events.js')).eventsCommand(values, args);
    case 'migrate':
      return (await import('./cli/migrate.js')).migrateCommand(values, args);
    case 'tags':
      return (await import('./cli/tags.js')).tagsCommand(values, args);
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
