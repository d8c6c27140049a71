// The command line: argv → command. The only place that calls process.exit.
import { parseArgs } from 'node:util';
import { startServer } from './cli/serve.js';
import { ConfigError, loadConfig } from './config.js';

const USAGE = `usage: regmirror <command> [options]

commands:
  serve [--config FILE]   run the mirror (embedded default config when no file is given)

options:
  -c, --config FILE       YAML configuration (see mirror.example.yaml)
  -h, --help              show this help`;

async function main(argv: string[]): Promise<number> {
  const { values, positionals } = parseArgs({
    args: argv,
    allowPositionals: true,
    options: { config: { type: 'string', short: 'c' }, help: { type: 'boolean', short: 'h' } },
  });
  const [command] = positionals;
  if (values.help || !command) {
    console.log(USAGE);
    return values.help ? 0 : 2;
  }
  if (command !== 'serve') {
    console.error(`regmirror: unknown command ${JSON.stringify(command)}\n\n${USAGE}`);
    return 2;
  }
  const config = loadConfig(values.config);
  const server = await startServer(config);
  await new Promise<void>((resolve) => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  await server.close();
  return 0;
}

main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A bad flag, a bad config or a port in use: one line naming the problem.
    const message = err instanceof ConfigError || (err as { code?: string }).code?.startsWith('ERR_PARSE_ARGS') ? (err as Error).message : `regmirror: ${(err as Error).message}`;
    console.error(message);
    process.exit(1);
  },
);
