// `regmirror migrate --to postgres://…`: moves one mirror's metadata from the SQLite file
// of its data dir into an empty PostgreSQL database, so that it can join replicas sharing
// that database. Only rows move: the blob files stay in the data dir's content store,
// which the new config keeps using, so nothing is fetched again. The copy is one
// transaction on the target, so a failure leaves it as empty as it was found.
import { existsSync, readFileSync } from 'node:fs';
import { resolve } from 'node:path';
import { loadConfig, type Config } from '../config.js';
import { postgresUrl } from '../config-values.js';
import { MetadataUnavailable, StoreNotEmpty } from '../errors.js';
import { databaseFile } from '../store/data-dir.js';
import type { MetadataStore, RowBatch, StoredRows } from '../store/metadata-store.js';
import { describeTarget, openMetadataStore } from '../store/open-metadata.js';
import { ArgumentError, configPath, UsageError, type Values } from './args.js';

/** The tables as an operator finds them in the database, in copy order. */
const TABLE_NAMES: Record<keyof StoredRows, string> = {
  blobs: 'blobs',
  manifests: 'manifests',
  links: 'links',
  tags: 'tags',
  rateLimits: 'rate_limits',
  rollups: 'rollups',
  subjectRollups: 'subject_rollups',
};

export interface MigrateReport {
  /** host:port/database */
  target: string;
  /** Rows copied per table (SQL table names). */
  tables: Record<string, number>;
  rows: number;
  /** What the config should say from now on; the password as a reference, never itself. */
  metadata: { postgres: { url: string; password: string } };
  dataDir: string;
}

export interface MigrateTarget {
  url: string;
  password: string;
  /** How the config should name the password: where it came from. */
  passwordRef: string;
}

const fail = (problem: string) => new UsageError(`regmirror migrate: ${problem}`);
const wrongArgs = (problem: string) => new ArgumentError(`regmirror migrate: ${problem}`);

/** `regmirror migrate --to URL [--password-file FILE] [--config FILE] [--json]`. */
export async function migrateCommand(values: Values, args: string[]): Promise<number> {
  if (args.length > 0) throw wrongArgs(`unexpected argument ${JSON.stringify(args[0])} (the target is given with --to)`);
  const target = { url: targetUrl(values.to), ...targetPassword(values['password-file']) };
  const config = loadConfig(configPath(values));
  const report = await migrate(config, target);
  console.log(values.json ? JSON.stringify(report, null, 2) : formatReport(report));
  return 0;
}

/** The --to url, checked as the config checks metadata.postgres.url; a password in it is refused unseen. */
function targetUrl(url: string | undefined): string {
  if (url === undefined) throw wrongArgs('--to postgres://user@host:port/database is required');
  let password = '';
  try {
    password = new URL(url).password;
  } catch {
    // postgresUrl below says what is wrong with it.
  }
  if (password !== '') throw wrongArgs('--to must not hold a password (it would show wherever the url does): give it in PGPASSWORD or --password-file');
  try {
    return postgresUrl(url, '--to', 'PGPASSWORD');
  } catch (err) {
    throw wrongArgs((err as Error).message.replace(/^config: /, ''));
  }
}

/** --password-file, else PGPASSWORD as libpq takes it. */
function targetPassword(file: string | undefined): Pick<MigrateTarget, 'password' | 'passwordRef'> {
  if (file !== undefined) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8').trim();
    } catch (err) {
      throw fail(`--password-file: cannot read ${file} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
    }
    if (text === '') throw fail(`--password-file: ${file} is empty`);
    return { password: text, passwordRef: `file:${resolve(file)}` };
  }
  const env = process.env.PGPASSWORD;
  if (env === undefined || env === '') throw fail('no password for the target: set PGPASSWORD or give --password-file FILE');
  return { password: env, passwordRef: '${PGPASSWORD}' };
}

/** Copies the config's SQLite store into the target; refuses anything but a SQLite mirror and an empty target. */
export async function migrate(config: Config, target: MigrateTarget): Promise<MigrateReport> {
  const source = sqliteSource(config);
  const where = describeTarget(target.url);
  const to = await connect(target, where);
  try {
    const from = await openMetadataStore({ kind: 'sqlite', path: source });
    try {
      const tables = await copyRows(from, to, where);
      const rows = Object.values(tables).reduce((a, b) => a + b, 0);
      return { target: where, tables, rows, metadata: { postgres: { url: target.url, password: target.passwordRef } }, dataDir: config.dataDir };
    } finally {
      await from.close();
    }
  } finally {
    await to.close();
  }
}

/** The SQLite file to copy; checked before opening, which would create an empty one. */
function sqliteSource(config: Config): string {
  const m = config.metadata;
  if (m.kind === 'postgres') throw fail(`the config already keeps its metadata in PostgreSQL (${describeTarget(m.url)}); migrate copies a mirror's SQLite metadata there`);
  const path = databaseFile(config.dataDir);
  if (!existsSync(path)) throw fail(`no SQLite metadata to copy: ${path} does not exist (is dataDir ${config.dataDir} right?)`);
  return path;
}

/** Connects and migrates the target's schema; every failure as one line naming the server. */
async function connect(target: MigrateTarget, where: string): Promise<MetadataStore> {
  try {
    return await openMetadataStore({ kind: 'postgres', url: target.url, password: target.password, pool: 2 });
  } catch (err) {
    if (err instanceof MetadataUnavailable) throw fail(err.reason);
    throw fail(firstLine(err).replace(/^metadata: /, '') || `cannot use PostgreSQL at ${where}`);
  }
}

async function copyRows(from: MetadataStore, to: MetadataStore, where: string): Promise<Record<string, number>> {
  const counts = Object.fromEntries(Object.values(TABLE_NAMES).map((t) => [t, 0]));
  try {
    await to.importRows(counted(from.exportRows(), counts));
  } catch (err) {
    if (err instanceof StoreNotEmpty) {
      throw fail(`${where} already holds regmirror metadata (${err.table ?? 'it'} has ${rowCount(err.rows)}); migrate copies only into an empty database, and wrote nothing`);
    }
    if (err instanceof MetadataUnavailable) throw fail(`lost PostgreSQL at ${where} during the copy (${err.reason}); nothing was copied`);
    throw fail(`the copy to ${where} failed, and nothing was copied: ${firstLine(err)}`);
  }
  return counts;
}

async function* counted(batches: AsyncIterable<RowBatch>, counts: Record<string, number>): AsyncGenerator<RowBatch> {
  for await (const b of batches) {
    counts[TABLE_NAMES[b.table]] += b.rows.length;
    yield b;
  }
}

const rowCount = (n: number) => `${n} row${n === 1 ? '' : 's'}`;

function firstLine(err: unknown): string {
  return (err instanceof Error ? err.message : String(err)).split('\n')[0];
}

/** One line per table, then the config to switch to. */
export function formatReport(r: MigrateReport): string {
  const width = Math.max(...Object.keys(r.tables).map((t) => t.length));
  const lines = Object.entries(r.tables).map(([t, n]) => `${`${t}:`.padEnd(width + 1)} ${rowCount(n)} copied`);
  const { url, password } = r.metadata.postgres;
  lines.push(
    `copied ${rowCount(r.rows)} to ${r.target}; the blobs stay in ${r.dataDir}. Keep dataDir and set in the config: ` +
      `metadata: { postgres: { url: ${JSON.stringify(url)}, password: ${JSON.stringify(password)} } }`,
  );
  return lines.join('\n');
}
