// A throwaway PostgreSQL 15 server for tests: a fresh cluster in a temp dir, on a free
// loopback port, with password (SCRAM) auth over TCP as a real deployment has, and trust
// only on its private unix socket for setting up roles and databases. Built for speed
// (no fsync, small buffers): a cluster starts in about a second. No server outlives the
// test process: every one still running is shut down when it exits.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chownSync, existsSync, rmSync } from 'node:fs';
import { mkdtemp } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pg from 'pg';
import { DaemonRegistry, freePort } from './daemons.js';

const BIN = '/usr/lib/postgresql/15/bin';
const SUPERUSER = 'postgres';
const READY_TIMEOUT_MS = 15_000;

export interface PgServer {
  readonly host: string;
  readonly port: number;
  /** The role the tests connect as (owner of `database` and of every createDatabase()). */
  readonly user: string;
  readonly password: string;
  readonly database: string;
  /** postgres://user@127.0.0.1:port/database, without the password. */
  readonly url: string;
  /** The postmaster's PID while it runs. */
  readonly pid: number;
  /** Fast shutdown (SIGINT: open sessions are cut), resolved once the postmaster has exited. */
  stop(): Promise<void>;
  /** Starts the server again on the same data dir and port. */
  start(): Promise<void>;
  /** A new empty database owned by `user`, for one test. */
  createDatabase(name: string): Promise<{ database: string; url: string }>;
  /** Stops the server and removes its data dir. */
  destroy(): Promise<void>;
}

/** Who runs initdb and postgres: PostgreSQL refuses root, so root hands them to the postgres user. */
interface RunAs {
  uid?: number;
  gid?: number;
}

/** Servers still running, with their data dirs: told to quit at once (SIGQUIT: the postmaster takes its backends with it) should the process end. */
const running = new DaemonRegistry('SIGQUIT');

/** Starts a fresh cluster and creates a role and a database with a password. */
export async function startPostgres(): Promise<PgServer> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-pg-'));
  try {
    const runAs = await unprivileged();
    if (runAs.uid !== undefined) chownSync(dir, runAs.uid, runAs.gid!);
    await initdb(dir, runAs);
    return await Cluster.boot(dir, await freePort(), runAs);
  } catch (err) {
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
}

class Cluster implements PgServer {
  readonly host = '127.0.0.1';
  readonly user = 'regmirror';
  readonly database = 'regmirror';
  readonly password = randomBytes(12).toString('hex');
  #child: ChildProcess | undefined;

  private constructor(
    readonly dir: string,
    readonly port: number,
    readonly runAs: RunAs,
  ) {}

  static async boot(dir: string, port: number, runAs: RunAs): Promise<Cluster> {
    const c = new Cluster(dir, port, runAs);
    await c.start();
    try {
      await c.#admin(`CREATE ROLE ${c.user} LOGIN PASSWORD '${c.password}'`, `CREATE DATABASE ${c.database} OWNER ${c.user}`);
    } catch (err) {
      await c.destroy();
      throw err;
    }
    return c;
  }

  get url(): string {
    return `postgres://${this.user}@${this.host}:${this.port}/${this.database}`;
  }

  get pid(): number {
    if (this.#child?.pid === undefined) throw new Error('postgres is not running');
    return this.#child.pid;
  }

  async start(): Promise<void> {
    if (this.#child) return;
    const args = ['-D', this.dir, '-k', this.dir, '-p', String(this.port), ...SETTINGS.flatMap((s) => ['-c', s])];
    const child = spawn(`${BIN}/postgres`, args, { ...this.runAs, stdio: ['ignore', 'ignore', 'pipe'] });
    running.add(child, this.dir);
    this.#child = child;
    const log = tail(child);
    const exited = new Promise<never>((_, reject) => {
      child.once('exit', (code, signal) => reject(new Error(`postgres exited during start-up (${signal ?? code}):\n${log()}`)));
      child.once('error', reject);
    });
    child.once('exit', () => {
      running.delete(child);
      if (this.#child === child) this.#child = undefined;
    });
    try {
      await Promise.race([this.#ready(), exited]);
    } catch (err) {
      await this.stop();
      throw err;
    }
  }

  async stop(): Promise<void> {
    const child = this.#child;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill('SIGINT');
    await exited;
  }

  async createDatabase(name: string): Promise<{ database: string; url: string }> {
    if (!/^[a-z_][a-z0-9_]{0,62}$/.test(name)) throw new Error(`createDatabase: ${name} is not a plain lower-case identifier`);
    await this.#admin(`CREATE DATABASE ${name} OWNER ${this.user}`);
    return { database: name, url: `postgres://${this.user}@${this.host}:${this.port}/${name}` };
  }

  async destroy(): Promise<void> {
    await this.stop();
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** Runs statements as the superuser over the unix socket (trusted; TCP wants a password). */
  async #admin(...statements: string[]): Promise<void> {
    const client = new pg.Client({ host: this.dir, port: this.port, user: SUPERUSER, database: 'postgres' });
    await client.connect();
    try {
      for (const s of statements) await client.query(s);
    } finally {
      await client.end();
    }
  }

  /** Resolves once the server takes connections on its socket. */
  async #ready(): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      try {
        await this.#admin('SELECT 1');
        return;
      } catch (err) {
        if (Date.now() > deadline) throw new Error(`postgres did not accept connections within ${READY_TIMEOUT_MS} ms: ${(err as Error).message}`);
        await new Promise((r) => setTimeout(r, 25));
      }
    }
  }
}

// A test cluster trades durability for speed and a small footprint.
const SETTINGS = [
  'listen_addresses=127.0.0.1',
  'fsync=off',
  'synchronous_commit=off',
  'full_page_writes=off',
  'shared_buffers=16MB',
  'max_connections=60',
  'max_wal_size=64MB',
  'autovacuum=off',
  'log_min_messages=warning',
];

async function initdb(dir: string, runAs: RunAs): Promise<void> {
  const args = ['-D', dir, '-U', SUPERUSER, '-E', 'UTF8', '--locale=C', '--auth-local=trust', '--auth-host=scram-sha-256', '--no-sync', '--no-instructions'];
  const child = spawn(`${BIN}/initdb`, args, { ...runAs, stdio: ['ignore', 'ignore', 'pipe'] });
  const log = tail(child);
  const code = await new Promise<number | null>((resolve, reject) => {
    child.once('error', reject);
    child.once('exit', resolve);
  });
  if (code !== 0) throw new Error(`initdb failed (${code}):\n${log()}`);
}

async function unprivileged(): Promise<RunAs> {
  if (process.getuid?.() !== 0) return {};
  if (!existsSync(`${BIN}/postgres`)) throw new Error(`PostgreSQL 15 is not installed (${BIN}): apt-get install postgresql-15`);
  const id = (flag: string) =>
    new Promise<number>((resolve, reject) => {
      const child = spawn('id', [flag, SUPERUSER], { stdio: ['ignore', 'pipe', 'ignore'] });
      let out = '';
      child.stdout.on('data', (b: Buffer) => (out += b.toString()));
      child.once('error', reject);
      child.once('exit', (code) => (code === 0 ? resolve(Number(out.trim())) : reject(new Error(`no ${SUPERUSER} user to run PostgreSQL as (root may not)`))));
    });
  return { uid: await id('-u'), gid: await id('-g') };
}

/** Keeps the last lines a child wrote to stderr (read, so a full pipe never blocks it). */
function tail(child: ChildProcess): () => string {
  let text = '';
  child.stderr?.on('data', (b: Buffer) => {
    text = (text + b.toString()).slice(-4000);
  });
  return () => text;
}

