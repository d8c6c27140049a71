// Command-line vocabulary shared by the commands: the options, the usage text, and the
// error a user can fix (printed as one line by main.ts, exit status 1).
import { parseArgs } from 'node:util';

export const USAGE = `usage: regmirror <command> [options]

commands:
  serve  [--config FILE] [--offline]          run the mirror (embedded default config when no file is given)
  prewarm IMAGE... [-f FILE] [--platform linux/amd64,linux/arm64|all] [--concurrency N]
         [--server URL | --config FILE] [--referrers] [--dry-run] [--json]
                                              fill the cache ahead of a rollout
  export -o FILE|- IMAGE...|--all [--strict] [--platform LIST] [--fetch] [--config FILE]
                                              write cached images as an OCI image-layout tar
  import FILE|- [--config FILE]               verify a bundle and add it to the cache, tags pinned
  status [--server URL | --config FILE] [--json]
                                              pull budgets, pulls saved, hit ratio, store size
  cache ls [--json] | cache rm IMAGE|--repository R|--older-than 30d | cache pin|unpin IMAGE
                                              what the cache holds; remove or pin whole images
  gc [--dry-run]                              make the store and the database agree
  verify [--repair]                           re-hash every stored blob; --repair removes bad ones
  migrate --to postgres://USER@HOST:PORT/DB [--password-file FILE] [--config FILE] [--json]
                                              copy the data dir's SQLite metadata into an empty PostgreSQL
                                              database (the blob files stay put). Stop the server first:
                                              what it writes once the copy has begun is not copied
  configure containerd|docker|podman|k3s --mirror URL [--registries LIST] [--ca FILE]
         [--write DIR|FILE | --print]         point a client at the mirror (merges into existing files)

options:
  -c, --config FILE       YAML configuration (see mirror.example.yaml); default $REGMIRROR_CONFIG
  -s, --server URL        ask a running regmirror instead of reading its data dir
                          (admin token from REGMIRROR_ADMIN_TOKEN when the server requires one)
  -f, --file FILE         image list: one reference per line (# comments), or Kubernetes/Helm YAML
  -p, --platform LIST     platforms of multi-platform images to cache (default all)
      --concurrency N     blob downloads at once (default 4)
      --referrers         also cache signatures and other referrers
      --dry-run           say what is cached and what would be fetched; fetch nothing
      --offline           never contact an upstream (serve)
  -o, --output FILE       export: the tar to write (- for standard output)
      --all               export: every tag in the cache (tags no longer whole in it are skipped with a warning)
      --strict            export --all: fail instead of skipping such a tag
      --fetch             export: prewarm what is missing first
      --repository R      cache rm: every tag of a repository (e.g. docker.io/library/nginx)
      --older-than AGE    cache rm: images not pulled for this long (30d, 12h)
      --repair            verify: remove blobs that fail, so the next pull fetches them again
      --json              machine-readable output
      --to URL            migrate: the target database, postgres://user@host:port/database
                          (no password in it: PGPASSWORD, or --password-file)
      --password-file F   migrate: read the target's password from this file
      --mirror URL        configure: the mirror, e.g. http://127.0.0.1:5000
      --registries LIST   configure: registries to send through it
                          (default docker.io,ghcr.io,quay.io,registry.k8s.io)
      --write PATH        configure: merge into this hosts dir (containerd) or file; without it, print
      --print             configure: print the files instead of writing them (the default)
      --ca FILE           configure: CA of an https mirror (containerd hosts.toml, k3s)
  -h, --help              show this help
  -V, --version           print the version`;

/** A problem the user can fix: printed as one line, exit code 1. */
export class UsageError extends Error {}

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
  help: { type: 'boolean', short: 'h' },
  version: { type: 'boolean', short: 'V' },
  mirror: { type: 'string' },
  registries: { type: 'string' },
  write: { type: 'string' },
  print: { type: 'boolean' },
  ca: { type: 'string' },
  to: { type: 'string' },
  'password-file': { type: 'string' },
} as const;

export type Values = ReturnType<typeof parseArgs<{ options: typeof OPTIONS; allowPositionals: true }>>['values'];

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
