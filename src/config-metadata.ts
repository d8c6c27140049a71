// The metadata section of the config: SQLite in the data dir, or a PostgreSQL database
// that replicas share, with its password kept out of the URL.
import { ConfigError, bool, intInRange, known, obj, pemFile, postgresUrl, secret, str } from './config-values.js';

/**
 * Where the metadata (tags, blobs, links, counters) lives: SQLite (`mirror.db` in the data
 * dir, one host), or a PostgreSQL database that several replicas share.
 */
export type MetadataConfig = { kind: 'sqlite' } | ({ kind: 'postgres' } & PostgresConfig);

export interface PostgresConfig {
  /** postgres://user@host:port/database, never with a password. */
  url: string;
  password: string;
  /** Connections per process. */
  pool: number;
  /** TLS: off, on (system CAs), or verified against `ca` (PEM text, read from the configured file). */
  ssl: boolean | { ca?: string; rejectUnauthorized: boolean };
}

export function parseMetadata(v: unknown, env: NodeJS.ProcessEnv): MetadataConfig {
  if (v === 'sqlite') return { kind: 'sqlite' };
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError('metadata', 'must be sqlite or a mapping with postgres');
  const m = obj(v, 'metadata');
  known(m, 'metadata.', ['postgres']);
  const p = obj(m.postgres, 'metadata.postgres');
  known(p, 'metadata.postgres.', ['url', 'password', 'pool', 'ssl']);
  if (p.url === undefined) throw new ConfigError('metadata.postgres.url', 'required (postgres://user@host:5432/database)');
  if (p.password === undefined) throw new ConfigError('metadata.postgres.password', 'required (the role\'s password; ${ENV} or file: like every secret)');
  return {
    kind: 'postgres',
    url: postgresUrl(str(p.url, 'metadata.postgres.url', env), 'metadata.postgres.url', 'metadata.postgres.password'),
    password: secret(p.password, 'metadata.postgres.password', env),
    pool: p.pool === undefined ? 10 : intInRange(p.pool, 'metadata.postgres.pool', 1, 100),
    ssl: p.ssl === undefined ? false : postgresSsl(p.ssl, env),
  };
}

/** false, true (verified against the system CAs), or { ca, rejectUnauthorized }. */
function postgresSsl(v: unknown, env: NodeJS.ProcessEnv): PostgresConfig['ssl'] {
  if (typeof v === 'boolean') return v;
  const key = 'metadata.postgres.ssl';
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(key, 'must be true, false or a mapping with ca and rejectUnauthorized');
  const o = obj(v, key);
  known(o, `${key}.`, ['ca', 'rejectUnauthorized']);
  return {
    ...(o.ca === undefined ? {} : { ca: pemFile(o.ca, `${key}.ca`, env) }),
    rejectUnauthorized: o.rejectUnauthorized === undefined ? true : bool(o.rejectUnauthorized, `${key}.rejectUnauthorized`),
  };
}
