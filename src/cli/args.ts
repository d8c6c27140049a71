// Command-line vocabulary shared by the commands: the options, which command takes which,
// the usage texts, and the errors a user can fix (printed as one line by main.ts).
import { readFileSync } from 'node:fs';
import { parseArgs } from 'node:util';

/** A problem the user can fix: printed as one line, exit status 1. */
export class UsageError extends Error {}

/** The command line itself is wrong (an unknown option, a missing value or argument): exit status 2. */
export class ArgumentError extends UsageError {}

export const OPTIONS = {
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
  strict: { type: 'boolean' },
  fetch: { type: 'boolean' },
  repository: { type: 'string' },
  'older-than': { type: 'string' },
  repair: { type: 'boolean' },
  force: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
  mirror: { type: 'string' },
  registries: { type: 'string' },
  write: { type: 'string' },
  print: { type: 'boolean' },
  ca: { type: 'string' },
  to: { type: 'string' },
  'password-file': { type: 'string' },
  since: { type: 'string' },
  kind: { type: 'string' },
} as const;

export type OptionName = keyof typeof OPTIONS;

export type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

/** One line (or a few) per option, as every usage text shows it. */
const OPTION_HELP: Record<OptionName, string> = {
  config: '-c, --config FILE       YAML configuration (see mirror.example.yaml); default $REGMIRROR_CONFIG',
  server: `-s, --server HOST:PORT  ask a running regmirror instead of reading its data dir (http://HOST:PORT,
                        or https://; admin token from REGMIRROR_ADMIN_TOKEN when the server requires one)`,
  file: '-f, --file FILE         image list: one reference per line (# comments), or Kubernetes/Helm YAML',
  platform: '-p, --platform LIST     platforms of multi-platform images (linux/amd64,linux/arm64 or all; default all)',
  concurrency: '    --concurrency N     blob downloads at once (default 4)',
  referrers: '    --referrers         also cache signatures and other referrers',
  'dry-run': '    --dry-run           say what would be done; change nothing',
  offline: '    --offline           never contact an upstream',
  output: '-o, --output FILE       the tar to write (- for standard output)',
  all: '    --all               every tag in the cache (tags no longer whole in it are skipped with a warning naming them)',
  strict: '    --strict            with --all: fail instead of skipping such a tag',
  fetch: '    --fetch             prewarm what is missing first',
  repository: '    --repository R      cache rm: every tag of a repository (e.g. docker.io/library/nginx)',
  'older-than': '    --older-than AGE    cache rm: images not pulled for this long (30d, 12h)',
  repair: '    --repair            remove blobs that fail, so the next pull fetches them again',
  force: '    --force             cache rm: remove pinned images too',
  json: '    --json              machine-readable output',
  to: `    --to URL            the target database, postgres://user@host:port/database
                        (no password in it: PGPASSWORD, or --password-file)`,
  'password-file': '    --password-file F   read the target\'s password from this file',
  since: '    --since AGE         only events this recent (30m, 1h, 7d)',
  kind: `    --kind LIST         only these kinds (tag_changed, image_refused, signature_failed,
                        stale_served, digest_mismatch, pinned_eviction_refused; comma-separated)`,
  mirror: '    --mirror URL        the mirror, e.g. http://127.0.0.1:5000',
  registries: `    --registries LIST   registries to send through it
                        (default docker.io,ghcr.io,quay.io,registry.k8s.io)`,
  write: '    --write PATH        merge into this hosts dir (containerd) or file; without it, print',
  print: '    --print             print the files instead of writing them (the default)',
  ca: '    --ca FILE           CA of an https mirror (containerd hosts.toml, k3s)',
  help: '-h, --help              show this help',
  version: '    --version           print the version',
};

interface CommandSpec {
  /** The synopsis, after `regmirror `. */
  synopsis: string;
  summary: string;
  options: OptionName[];
}

/** Each command and the options it takes: any other option is refused. */
export const COMMANDS: Record<string, CommandSpec> = {
  serve: { synopsis: 'serve [--config FILE] [--offline]', summary: 'run the mirror (embedded default config when no file is given)', options: ['config', 'offline'] },
  prewarm: {
    synopsis: `prewarm IMAGE... [-f FILE] [--platform linux/amd64,linux/arm64|all] [--concurrency N]
         [--server HOST:PORT | --config FILE] [--referrers] [--dry-run] [--json]`,
    summary: 'fill the cache ahead of a rollout',
    options: ['file', 'platform', 'concurrency', 'server', 'config', 'referrers', 'dry-run', 'json'],
  },
  export: {
    synopsis: 'export -o FILE|- IMAGE...|--all [--strict] [--platform LIST] [--fetch] [--config FILE] [--json]',
    summary: 'write cached images as an OCI image-layout tar',
    options: ['output', 'all', 'strict', 'platform', 'fetch', 'config', 'json'],
  },
  import: { synopsis: 'import FILE|- [--config FILE] [--json]', summary: 'verify a bundle and add it to the cache, tags pinned', options: ['config', 'json'] },
  status: {
    synopsis: 'status [--server HOST:PORT | --config FILE] [--json]',
    summary: 'pull budgets, pulls saved, hit ratio, store size',
    options: ['server', 'config', 'json'],
  },
  cache: {
    synopsis: `cache ls [--json] | cache rm IMAGE|--repository R|--older-than 30d [--force] | cache pin|unpin IMAGE
         [--server HOST:PORT | --config FILE]`,
    summary: 'what the cache holds; remove or pin whole images (pinned ones go only with --force)',
    options: ['server', 'config', 'json', 'repository', 'older-than', 'force'],
  },
  gc: { synopsis: 'gc [--dry-run] [--server HOST:PORT | --config FILE] [--json]', summary: 'make the store and the database agree', options: ['server', 'config', 'dry-run', 'json'] },
  verify: {
    synopsis: 'verify [--repair] [--server HOST:PORT | --config FILE] [--json]',
    summary: 're-hash every stored blob; --repair removes bad ones',
    options: ['server', 'config', 'repair', 'json'],
  },
  events: {
    synopsis: 'events [--since 1h] [--kind KIND,...] [--server HOST:PORT | --config FILE] [--json]',
    summary: 'what the mirror told its operators, newest first: stale tags served, digest mismatches,\npinned content it could not evict, refused images',
    options: ['since', 'kind', 'server', 'config', 'json'],
  },
  migrate: {
    synopsis: 'migrate --to postgres://USER@HOST:PORT/DB [--password-file FILE] [--config FILE] [--json]',
    summary: `copy the data dir's SQLite metadata into an empty PostgreSQL database (the blob files
stay put). Stop the server first: what it writes once the copy has begun is not copied`,
    options: ['to', 'password-file', 'config', 'json'],
  },
  configure: {
    synopsis: `configure containerd|docker|podman|k3s --mirror URL|--config FILE [--registries LIST] [--ca FILE]
         [--write DIR|FILE | --print]`,
    summary: "point a client at the mirror (merges into existing files); --config takes the mirror URL from\nlisten and the registries from the upstreams",
    options: ['mirror', 'config', 'registries', 'ca', 'write', 'print'],
  },
  tags: {
    synopsis: 'tags ls [--json] | tags accept IMAGE:TAG [--server HOST:PORT | --config FILE]',
    summary: `immutable tags (tag policies) whose upstream now names another digest; accept makes
that digest the one the tag is held to, and the next pull gets it`,
    options: ['server', 'config', 'json'],
  },
  version: { synopsis: 'version', summary: 'print the version', options: [] },
};

const indent = (text: string, by: string) => text.split('\n').map((l) => by + l).join('\n');

/** `regmirror --help`: every command, then every option. */
export const USAGE = [
  'usage: regmirror <command> [options]   (regmirror <command> --help for one command)',
  '',
  'commands:',
  ...Object.values(COMMANDS).map((c) => `  ${c.synopsis}\n${indent(c.summary, '        ')}`),
  '',
  'options:',
  ...(Object.keys(OPTION_HELP) as OptionName[]).map((o) => indent(OPTION_HELP[o], '  ')),
].join('\n');

/** `regmirror <command> --help`: its synopsis and the options it takes. */
export function commandUsage(command: string): string {
  const c = COMMANDS[command];
  const options: OptionName[] = [...c.options, 'help'];
  return [`usage: regmirror ${c.synopsis}`, '', c.summary, '', 'options:', ...options.map((o) => indent(OPTION_HELP[o], '  '))].join('\n');
}

/**
 * `regmirror <version>`, from package.json: the nearest one above this module, which is
 * src/cli/ from a checkout and dist/ (a bundle) once built.
 */
export function versionLine(): string {
  for (let dir = new URL('.', import.meta.url); ; dir = new URL('..', dir)) {
    const text = readOptional(new URL('package.json', dir));
    if (text !== undefined) return `regmirror ${(JSON.parse(text) as { version: string }).version}`;
    if (dir.pathname === '/') return 'regmirror (version unknown)';
  }
}

function readOptional(file: URL): string | undefined {
  try {
    return readFileSync(file, 'utf8');
  } catch {
    return undefined;
  }
}

export interface CommandLine {
  /** Undefined for `regmirror --help`, `--version` or nothing at all. */
  command?: string;
  args: string[];
  values: Values;
}

/**
 * argv → the command, its arguments and its options. Options may come before the command;
 * an option the command does not take is refused even when another command takes it.
 */
export function parseCommandLine(argv: string[]): CommandLine {
  // A first, lenient pass only finds the command, so its own table can judge the options.
  const first = parseArgs({ args: argv, options: OPTIONS, allowPositionals: true, strict: false, tokens: true });
  const command = first.positionals[0];
  if (command !== undefined && !(command in COMMANDS)) throw new ArgumentError(`regmirror: unknown command ${JSON.stringify(command)} (see regmirror --help)`);
  const allowed: OptionName[] = command === undefined ? ['help', 'version'] : [...COMMANDS[command].options, 'help'];
  const options = Object.fromEntries(allowed.map((o) => [o, OPTIONS[o]]));
  const { values, positionals, tokens } = parseArgs({ args: argv, options, allowPositionals: true, strict: false, tokens: true });
  const see = command === undefined ? 'regmirror --help' : `regmirror ${command} --help`;
  const where = command === undefined ? 'regmirror' : `regmirror ${command}`;
  for (const t of tokens) {
    if (t.kind !== 'option') continue;
    const spec = (options as Record<string, { type: string }>)[t.name];
    if (!spec) throw new ArgumentError(`regmirror: unknown option ${t.rawName} (see ${see})`);
    if (spec.type === 'boolean' && t.value !== undefined) throw new ArgumentError(`${where}: ${t.rawName} takes no value (see ${see})`);
    // As node's strict mode: `--config --json` is a forgotten value, `-o -` is standard output.
    const forgotten = t.value === undefined || (!t.inlineValue && t.value.length > 1 && t.value.startsWith('-'));
    if (spec.type === 'string' && forgotten) throw new ArgumentError(`${where}: ${t.rawName} needs a value (see ${see})`);
  }
  return { command, args: positionals.slice(1), values: values as Values };
}

/** Standard input as text (lists given as -). */
export function readStdin(): Promise<string> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    process.stdin.on('data', (c: Buffer) => chunks.push(c));
    process.stdin.on('end', () => resolve(Buffer.concat(chunks).toString('utf8')));
    process.stdin.on('error', reject);
  });
}

/** The config file: --config, else $REGMIRROR_CONFIG (containers), else the embedded default. */
export function configPath(values: Values): string | undefined {
  return values.config ?? (process.env.REGMIRROR_CONFIG || undefined);
}

/**
 * --server as an origin: `host:port` means http://host:port; a URL must be http(s) with no
 * path, for the admin endpoints are at the server's root.
 */
export function serverOrigin(value: string, command: string): string {
  const bad = (why: string) => new ArgumentError(`regmirror ${command}: --server ${value}: ${why}; give HOST:PORT (e.g. 127.0.0.1:5000) or http(s)://HOST:PORT`);
  const withScheme = /^[a-z][a-z0-9+.-]*:\/\//i.test(value);
  if (!withScheme && !/^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\]):\d{1,5}$/i.test(value)) throw bad('not a host:port');
  let url: URL;
  try {
    url = new URL(withScheme ? value : `http://${value}`);
  } catch {
    throw bad('not a URL');
  }
  if (url.protocol !== 'http:' && url.protocol !== 'https:') throw bad(`the scheme ${url.protocol.slice(0, -1)} is neither http nor https`);
  if ((url.pathname !== '/' && url.pathname !== '') || url.search || url.hash) throw bad('a path, query or fragment means nothing here');
  if (url.username || url.password) throw bad('no user or password in it (the admin token comes from REGMIRROR_ADMIN_TOKEN)');
  return url.origin;
}
