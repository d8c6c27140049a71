// The pool under PostgresMetadataStore and the two ways it is used: one statement, or a
// transaction on one client. Every failure leaves through storeError(), so a server that
// is down or restarting reads as MetadataUnavailable and nothing it does can crash the
// process (idle clients whose server went away report on the pool's `error` event).
import pg from 'pg';
import type { ConnectionOptions } from 'node:tls';
import { storeError } from './errors.js';

export interface PostgresOptions {
  /** postgres://user@host:port/database (no password in it). */
  url: string;
  password: string;
  /** Connections at most (default 10). */
  pool?: number;
  /** TLS to the server: true verifies against the system CAs; `ca` is PEM text. */
  ssl?: boolean | { ca?: string; rejectUnauthorized?: boolean };
  /** How long getting a connection may take (default 3 s). */
  connectTimeoutMs?: number;
  /** How long one statement may take (default 5 s). */
  queryTimeoutMs?: number;
  /** An idle client lost its server; the pool replaces it on next use. */
  onIdleError?: (err: Error) => void;
}

/** A named prepared statement: parsed once per connection, then only executed. */
export interface Statement {
  name: string;
  text: string;
}

const INT8_OID = 20;

/**
 * Statement timeout of the commands' whole-store work (gc's reconcile, moving a store),
 * which a large store needs: the serving path keeps the short one, so a request never
 * waits long on a server that does not answer.
 */
export const SLOW_TIMEOUT_MS = 300_000;

// BIGINT (ms times, sizes, counts) as a JS number, for this pool only: every value stored
// is far below 2^53, and other users of pg in the process keep its default (strings).
const TYPES: pg.CustomTypesConfig = {
  getTypeParser: ((oid: number, format?: 'text' | 'binary') => (oid === INT8_OID ? Number : pg.types.getTypeParser(oid, format))) as pg.CustomTypesConfig['getTypeParser'],
};

/** Where the url points, for messages: host:port/database (the url holds no secret, but this is shorter). */

/** Pool settings from the options. The url is split here: pg lets a connection string override a separate password. */
export function poolConfig(opts: PostgresOptions): pg.PoolConfig {
  const u = new URL(opts.url);
  const queryTimeout = opts.queryTimeoutMs ?? 5000;
  return {
    host: u.hostname.replace(/^\[(.*)\]$/, '$1'),
    port: u.port ? Number(u.port) : 5432,
    user: decodeURIComponent(u.username),
    database: decodeURIComponent(u.pathname.slice(1)),
    password: opts.password,
    max: opts.pool ?? 10,
    connectionTimeoutMillis: opts.connectTimeoutMs ?? 3000,
    // The server cancels a slow statement; the client gives up on a server that does not answer at all.
    statement_timeout: queryTimeout,
    query_timeout: queryTimeout,
    ssl: sslConfig(opts.ssl),
    types: TYPES,
    application_name: 'regmirror',
    keepAlive: true,
  };
}

function sslConfig(ssl: PostgresOptions['ssl']): boolean | ConnectionOptions {
  if (ssl === undefined || typeof ssl === 'boolean') return ssl ?? false;
  return { ...(ssl.ca === undefined ? {} : { ca: ssl.ca }), rejectUnauthorized: ssl.rejectUnauthorized ?? true };
}

/** What runs statements: the pool (one statement) or a transaction's client. */
export interface Queries {
  rows<R extends pg.QueryResultRow>(s: Statement, values?: unknown[]): Promise<R[]>;
  /** Rows affected. */
  changes(s: Statement, values?: unknown[]): Promise<number>;
}

export class Session implements Queries {
  readonly #pool: pg.Pool;

  constructor(opts: PostgresOptions) {
    this.#pool = new pg.Pool(poolConfig(opts));
    const onIdleError = opts.onIdleError ?? (() => {});
    this.#pool.on('error', (err) => onIdleError(err));
  }

  async rows<R extends pg.QueryResultRow>(s: Statement, values: unknown[] = []): Promise<R[]> {
    try {
      return (await this.#pool.query<R>({ name: s.name, text: s.text, values })).rows;
    } catch (err) {
      throw storeError(err);
    }
  }

  async changes(s: Statement, values: unknown[] = []): Promise<number> {
    try {
      return (await this.#pool.query({ name: s.name, text: s.text, values })).rowCount ?? 0;
    } catch (err) {
      throw storeError(err);
    }
  }

  /**
   * Runs `fn` between BEGIN and COMMIT on one client: all of its writes or none. A client
   * whose transaction could not be ended cleanly is dropped from the pool, not reused.
   * `slow`: statements may take SLOW_TIMEOUT_MS.
   */
  async transaction<T>(fn: (q: Queries) => Promise<T>, opts: { slow?: boolean } = {}): Promise<T> {
    return this.withClient(async (client) => {
      await client.query('BEGIN');
      try {
        if (opts.slow) await client.query(`SET LOCAL statement_timeout = ${SLOW_TIMEOUT_MS}`);
        const out = await fn(clientQueries(client, opts.slow ? SLOW_TIMEOUT_MS : undefined));
        await client.query('COMMIT');
        return out;
      } catch (err) {
        // The failure is what the caller needs to see; a failed ROLLBACK only means the
        // connection is gone, and withClient drops it either way.
        await client.query('ROLLBACK').catch(() => {});
        throw err;
      }
    });
  }

  /** Lends one client to `fn` (migrations); errors are mapped, the client released. */
  async withClient<T>(fn: (client: pg.PoolClient) => Promise<T>): Promise<T> {
    const lease = await this.#lease();
    try {
      return await fn(lease.client);
    } catch (err) {
      lease.failed(err);
      throw storeError(err);
    } finally {
      lease.release();
    }
  }

  /**
   * Yields what `read` yields from one REPEATABLE READ snapshot, so every batch of an
   * export belongs to the same moment. A reader that stops early leaves the transaction
   * open: that client is dropped, not put back.
   */
  async *snapshot<T>(read: (q: Queries) => AsyncIterable<T>): AsyncGenerator<T> {
    const lease = await this.#lease();
    let finished = false;
    try {
      await lease.client.query('BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY');
      await lease.client.query(`SET LOCAL statement_timeout = ${SLOW_TIMEOUT_MS}`);
      yield* read(clientQueries(lease.client, SLOW_TIMEOUT_MS));
      await lease.client.query('COMMIT');
      finished = true;
    } catch (err) {
      lease.failed(err);
      throw storeError(err);
    } finally {
      if (!finished) lease.failed(new Error('snapshot abandoned'));
      lease.release();
    }
  }

  async #lease(): Promise<Lease> {
    let client: pg.PoolClient;
    try {
      client = await this.#pool.connect();
    } catch (err) {
      throw storeError(err);
    }
    // A checked-out client has no listener of its own: a server lost between two
    // statements would otherwise be an unhandled 'error' event.
    let broken: Error | undefined;
    const onError = (err: Error) => (broken ??= err);
    client.on('error', onError);
    return {
      client,
      // Any failure inside may have left the connection mid-transaction or mid-query.
      failed: (err) => (broken ??= err instanceof Error ? err : new Error(String(err))),
      release: () => {
        client.off('error', onError);
        client.release(broken);
      },
    };
  }

  end(): Promise<void> {
    return this.#pool.end();
  }
}

/** A client lent out of the pool; released with the error that makes it unfit for reuse, if any. */
interface Lease {
  client: pg.PoolClient;
  failed(err: unknown): void;
  release(): void;
}

/** `timeoutMs` overrides the pool's query timeout (pg takes it per query, beside the config's types). */
function clientQueries(client: pg.PoolClient, timeoutMs?: number): Queries {
  const config = (s: Statement, values: unknown[]) => ({ name: s.name, text: s.text, values, ...(timeoutMs === undefined ? {} : { query_timeout: timeoutMs }) });
  return {
    rows: async <R extends pg.QueryResultRow>(s: Statement, values: unknown[] = []) => (await client.query<R>(config(s, values))).rows,
    changes: async (s: Statement, values: unknown[] = []) => (await client.query(config(s, values))).rowCount ?? 0,
  };
}
