// Configuration: the typed Config, the embedded default (what `regmirror serve` runs with
// no file), YAML loading with ${ENV} and file: references, and validation whose errors
// name the key. mirror.example.yaml documents every key and is tested to equal DEFAULTS.
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { parseCluster, type ClusterConfig } from './config-cluster.js';
import { parseMetadata, type MetadataConfig } from './config-metadata.js';
import { dockerConfigRef, type DockerConfigRef } from './config-docker.js';
import { PARENT_KEYS, parseParent, type ParentConfig } from './config-parent.js';
import { parseEvents, parsePolicies, type EventsConfig, type Policy } from './config-policies.js';
import { parseStorage, type StorageConfig } from './config-storage.js';
import { ConfigError, UnresolvedReference, bool, checkUrl, duration, known, listenAddress, nonBlank, nonNegativeInt, obj, oneOf, optStr, positiveInt, secret, size, str, strList } from './config-values.js';

export { ConfigError, duration, size } from './config-values.js';
export { deleteGraceOf, type S3StorageConfig, type StorageConfig } from './config-storage.js';
export type { ClusterConfig } from './config-cluster.js';
export type { MetadataConfig, PostgresConfig } from './config-metadata.js';
export type { DockerConfigRef } from './config-docker.js';
export type { ParentConfig } from './config-parent.js';
export type { EventsConfig, Policy, SignaturePolicy, TagPolicy } from './config-policies.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';
/** `auto`: text when stderr is a terminal, else JSON lines. */
export type LogFormat = 'auto' | 'text' | 'json';

export interface Credentials {
  username: string;
  password: string;
}

export interface UpstreamConfig {
  /** The registry name clients use: `?ns=`, path prefix, image references. */
  name: string;
  /** Where regmirror connects to reach it. */
  url: string;
  /** Other names that select this upstream (ns or path prefix). */
  aliases: string[];
  /** How long a tag's digest is trusted before an upstream HEAD revalidates it; 0 revalidates every pull. */
  tagTtlMs: number;
  /** Blob downloads in flight at once; other upstream requests have as many slots again. */
  concurrency: number;
  connectTimeoutMs: number;
  /** Time to wait for response headers. */
  headersTimeoutMs: number;
  /** A body that sends no byte for this long is cut; there is no total-time limit. */
  idleTimeoutMs: number;
  credentials?: Credentials;
  /** `credentials: { dockerConfig }`: the credentials come from a Docker config.json and its credential helpers. */
  dockerConfig?: DockerConfigRef;
  /** `ecr`: Amazon ECR, authorized through GetAuthorizationToken; absent means `registry`. */
  type?: 'registry' | 'ecr';
  /** ecr: the registry's AWS region (required for ecr). */
  region?: string;
  /** ecr: the registry's 12-digit AWS account ID (default: the caller's account). */
  registryId?: string;
  /** ecr: URL of the ECR API, e.g. a VPC endpoint (default: the region's public endpoint). */
  endpoint?: string;
  /** Token-realm hosts, besides the upstream's own domain, that may receive the credentials (and may be on loopback or private addresses). */
  tokenRealms: string[];
  /** Redirect targets that may be on loopback or private addresses (public ones need no listing). */
  redirectHosts: string[];
  /** Under this many remaining pulls (ratelimit-remaining), stale tags are served without revalidation; 0 disables. */
  budgetFloor: number;
  /** How long an upstream 404 for a tag or digest is remembered. */
  negativeTtlMs: number;
  /** After a refused connection, a timeout or a 502/503/504, the upstream is not asked again for this long. */
  failureBackoffMs: number;
  /** Repository globs (`library/*`, `myorg/**`) clients may pull; empty allows all. */
  allow: string[];
  /** Repository globs clients may not pull; checked after allow. */
  deny: string[];
  /** false: fetched from the upstream itself even when a parent is configured; absent otherwise. */
  viaParent?: false;
}

export interface Config {
  listen: { host: string; port: number };
  dataDir: string;
  metadata: MetadataConfig;
  /** Upstream for requests with neither `ns` nor a path prefix (Docker's registry-mirrors). */
  defaultUpstream?: string;
  upstreams: UpstreamConfig[];
  /** Another mirror every upstream is fetched through (`?ns=<upstream name>`); unset: upstreams directly. */
  parent?: ParentConfig;
  log: { level: LogLevel; format: LogFormat };
  /** Bytes of manifest bodies kept in memory. */
  manifestMemoryBytes: number;
  /** Never contact an upstream: serve what is cached, whatever its age; misses say so. */
  offline: boolean;
  /** Bearer token for the admin endpoints (POST /_regmirror/prewarm); unset leaves them open. */
  adminToken?: string;
  /** Serve HTTPS (and HTTP/2 by ALPN) with this PEM certificate and key; reloaded on SIGHUP. */
  tls?: { cert: string; key: string };
  /** Client access control: off when neither is set. */
  auth: { tokens: string[]; htpasswd?: string };
  storage: StorageConfig;
  /** Set on every replica of a cluster sharing one PostgreSQL and one bucket. */
  cluster?: ClusterConfig;
  /** Signature and tag policies, the first that matches a pull governing it; unset: none. */
  policies?: Policy[];
  /** The event webhook, queue and retention; unset: events are only stored. */
  events?: EventsConfig;
  limits: {
    /** Open connections one client address may hold; 0: no limit. */
    connectionsPerClient: number;
    /** A client connection with no byte sent or received for this long is closed. */
    clientIdleTimeoutMs: number;
    /** Time a client has to send its request headers. */
    headersTimeoutMs: number;
    /** On SIGTERM, how long in-flight responses may take to finish. */
    shutdownGraceMs: number;
  };
}

const UPSTREAM_DEFAULTS = {
  aliases: [] as string[],
  tagTtlMs: 5 * 60_000,
  concurrency: 32,
  connectTimeoutMs: 10_000,
  headersTimeoutMs: 30_000,
  idleTimeoutMs: 60_000,
  tokenRealms: [] as string[],
  redirectHosts: [] as string[],
  budgetFloor: 0,
  negativeTtlMs: 60_000,
  failureBackoffMs: 10_000,
  allow: [] as string[],
  deny: [] as string[],
};

function upstream(name: string, url: string, aliases: string[] = []): UpstreamConfig {
  return { ...UPSTREAM_DEFAULTS, name, url, aliases };
}

/** The embedded default: what runs with no config file. */
export const DEFAULTS: Config = {
  listen: { host: '0.0.0.0', port: 5000 },
  dataDir: './data',
  metadata: { kind: 'sqlite' },
  defaultUpstream: 'docker.io',
  upstreams: [
    upstream('docker.io', 'https://registry-1.docker.io', ['index.docker.io', 'registry-1.docker.io']),
    upstream('ghcr.io', 'https://ghcr.io'),
    upstream('quay.io', 'https://quay.io'),
    upstream('registry.k8s.io', 'https://registry.k8s.io'),
  ],
  log: { level: 'info', format: 'auto' },
  manifestMemoryBytes: 64 * 1024 * 1024,
  offline: false,
  auth: { tokens: [] },
  storage: { maxSize: 0, highWatermark: 95, lowWatermark: 85, verifyEveryMs: 0, backend: 'fs', redirect: false },
  limits: { connectionsPerClient: 256, clientIdleTimeoutMs: 120_000, headersTimeoutMs: 30_000, shutdownGraceMs: 30_000 },
};

export interface LoadOptions {
  /** The file the text came from, named in a YAML error. */
  source?: string;
  /**
   * `storage`: only the secrets of the data dir (database, bucket) must resolve; upstream,
   * parent and client secrets that cannot be resolved here are left out. For the commands
   * that read the data dir and contact no upstream; `serve` keeps the default, `all`.
   */
  secrets?: 'all' | 'storage';
}

/** Runs a secret's parser; with secrets: storage, one that cannot be resolved here is left out. */
export type Spare = <T>(read: () => T) => T | undefined;

function spareWith(opts: LoadOptions): Spare {
  return (read) => {
    try {
      return read();
    } catch (err) {
      if (opts.secrets === 'storage' && err instanceof UnresolvedReference) return undefined;
      throw err;
    }
  };
}

/** Reads and validates a YAML config file; no path gives the embedded default. */
export function loadConfig(path?: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): Config {
  if (!path) return structuredClone(DEFAULTS);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(path, `cannot read: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
  }
  return parseConfig(text, env, { ...opts, source: path });
}

export function parseConfig(text: string, env: NodeJS.ProcessEnv = process.env, opts: LoadOptions = {}): Config {
  let doc: unknown;
  try {
    doc = parseYaml(text);
  } catch (err) {
    throw new ConfigError(opts.source ?? '(file)', `not valid YAML: ${(err as Error).message.split('\n')[0].replace(/:$/, '')}`);
  }
  const raw = obj(doc ?? {}, '(root)');
  known(raw, '', ['listen', 'dataDir', 'metadata', 'defaultUpstream', 'upstreams', 'log', 'manifestMemory', 'offline', 'adminToken', 'tls', 'auth', 'limits', 'storage', 'cluster', 'policies', 'events', ...PARENT_KEYS]);
  const spare = spareWith(opts);
  const parent = parseParent(raw, env, spare);
  const adminToken = raw.adminToken === undefined || raw.adminToken === null ? undefined : spare(() => secret(raw.adminToken, 'adminToken', env));
  const cfg: Config = {
    listen: raw.listen === undefined ? DEFAULTS.listen : listenAddress(str(raw.listen, 'listen', env), 'listen'),
    dataDir: raw.dataDir === undefined ? DEFAULTS.dataDir : str(raw.dataDir, 'dataDir', env),
    metadata: raw.metadata === undefined ? { ...DEFAULTS.metadata } : parseMetadata(raw.metadata, env),
    defaultUpstream: optStr(raw.defaultUpstream, 'defaultUpstream', env),
    upstreams: raw.upstreams === undefined ? structuredClone(DEFAULTS.upstreams) : upstreams(raw.upstreams, env, spare),
    ...(parent ? { parent } : {}),
    log: { ...DEFAULTS.log },
    manifestMemoryBytes: raw.manifestMemory === undefined ? DEFAULTS.manifestMemoryBytes : size(raw.manifestMemory, 'manifestMemory'),
    offline: raw.offline === undefined ? DEFAULTS.offline : bool(raw.offline, 'offline'),
    ...(adminToken === undefined ? {} : { adminToken }),
    ...(raw.tls === undefined || raw.tls === null ? {} : { tls: tlsFiles(raw.tls, env) }),
    auth: raw.auth === undefined || raw.auth === null ? { tokens: [] } : clientAuth(raw.auth, env, spare),
    limits: raw.limits === undefined ? { ...DEFAULTS.limits } : limits(raw.limits),
    storage: raw.storage === undefined ? { ...DEFAULTS.storage } : parseStorage(raw.storage, DEFAULTS.storage, env),
    ...(raw.cluster === undefined || raw.cluster === null ? {} : { cluster: parseCluster(raw.cluster, env) }),
    ...(raw.policies === undefined ? {} : { policies: parsePolicies(raw.policies, env) }),
    ...(raw.events === undefined ? {} : { events: parseEvents(raw.events, env, spare) }),
  };
  // Replicas share what they cache: a disk or a SQLite file of one's own would split it.
  if (cfg.cluster && (cfg.metadata.kind !== 'postgres' || cfg.storage.backend !== 's3')) {
    throw new ConfigError('cluster', 'needs metadata: postgres and storage.backend: s3, which the replicas share');
  }
  // Unset: Docker Hub stays the default when the file configures it, else there is none.
  if (raw.defaultUpstream === undefined && cfg.upstreams.some((u) => u.name === DEFAULTS.defaultUpstream)) cfg.defaultUpstream = DEFAULTS.defaultUpstream;
  if (raw.log !== undefined) {
    const log = obj(raw.log, 'log');
    known(log, 'log.', ['level', 'format']);
    if (log.level !== undefined) cfg.log.level = oneOf(log.level, 'log.level', ['debug', 'info', 'warn', 'error'] as const);
    if (log.format !== undefined) cfg.log.format = oneOf(log.format, 'log.format', ['auto', 'text', 'json'] as const);
  }
  checkNames(cfg);
  return cfg;
}

function upstreams(value: unknown, env: NodeJS.ProcessEnv, spare: Spare): UpstreamConfig[] {
  const map = obj(value, 'upstreams');
  return Object.entries(map).map(([name, v]) => upstreamEntry(name, obj(v ?? {}, `upstreams.${name}`), env, spare));
}

function upstreamEntry(name: string, u: Record<string, unknown>, env: NodeJS.ProcessEnv, spare: Spare): UpstreamConfig {
  const k = `upstreams.${name}`;
  known(u, `${k}.`, ['url', 'aliases', 'tagTtl', 'concurrency', 'timeouts', 'credentials', 'tokenRealms', 'redirectHosts', 'parent', ...ECR_KEYS, ...POLICY_KEYS]);
  if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]+)?$/.test(name)) throw new ConfigError(k, 'an upstream name must be a registry host name such as ghcr.io');
  const url = str(u.url, `${k}.url`, env);
  checkUrl(url, `${k}.url`);
  const t = u.timeouts === undefined ? {} : obj(u.timeouts, `${k}.timeouts`);
  known(t, `${k}.timeouts.`, ['connect', 'headers', 'idle']);
  const d = UPSTREAM_DEFAULTS;
  const creds = u.credentials === undefined ? undefined : spare(() => credentials(u.credentials, `${k}.credentials`, env));
  return {
    name,
    url: url.replace(/\/+$/, ''),
    aliases: u.aliases === undefined ? [] : strList(u.aliases, `${k}.aliases`, env),
    tagTtlMs: u.tagTtl === undefined ? d.tagTtlMs : duration(u.tagTtl, `${k}.tagTtl`),
    concurrency: u.concurrency === undefined ? d.concurrency : positiveInt(u.concurrency, `${k}.concurrency`),
    connectTimeoutMs: t.connect === undefined ? d.connectTimeoutMs : duration(t.connect, `${k}.timeouts.connect`, true),
    headersTimeoutMs: t.headers === undefined ? d.headersTimeoutMs : duration(t.headers, `${k}.timeouts.headers`, true),
    idleTimeoutMs: t.idle === undefined ? d.idleTimeoutMs : duration(t.idle, `${k}.timeouts.idle`, true),
    ...(creds ?? {}),
    tokenRealms: u.tokenRealms === undefined ? [] : hosts(u.tokenRealms, `${k}.tokenRealms`, env),
    redirectHosts: u.redirectHosts === undefined ? [] : hosts(u.redirectHosts, `${k}.redirectHosts`, env),
    ...upstreamType(u, k, env),
    ...upstreamPolicy(u, k),
    // Only the opt-out is kept, so an upstream that says nothing compares equal to DEFAULTS.
    ...(u.parent === undefined || bool(u.parent, `${k}.parent`) ? {} : { viaParent: false as const }),
  };
}

const POLICY_KEYS = ['budgetFloor', 'negativeTtl', 'failureBackoff', 'allow', 'deny'];

/** How an upstream is spared: its pull-budget floor, negative caching and failure backoff. */
function upstreamPolicy(u: Record<string, unknown>, k: string): Pick<UpstreamConfig, 'budgetFloor' | 'negativeTtlMs' | 'failureBackoffMs' | 'allow' | 'deny'> {
  const d = UPSTREAM_DEFAULTS;
  return {
    allow: u.allow === undefined ? [] : globs(u.allow, `${k}.allow`),
    deny: u.deny === undefined ? [] : globs(u.deny, `${k}.deny`),
    budgetFloor: u.budgetFloor === undefined ? d.budgetFloor : nonNegativeInt(u.budgetFloor, `${k}.budgetFloor`),
    negativeTtlMs: u.negativeTtl === undefined ? d.negativeTtlMs : duration(u.negativeTtl, `${k}.negativeTtl`),
    failureBackoffMs: u.failureBackoff === undefined ? d.failureBackoffMs : duration(u.failureBackoff, `${k}.failureBackoff`),
  };
}

const ECR_KEYS = ['type', 'region', 'registryId', 'endpoint'];

/** `type` and the ECR keys. A plain registry (the default) adds no keys, so DEFAULTS compare equal. */
function upstreamType(u: Record<string, unknown>, k: string, env: NodeJS.ProcessEnv): Pick<UpstreamConfig, 'type' | 'region' | 'registryId' | 'endpoint'> {
  const type = u.type === undefined ? 'registry' : oneOf(u.type, `${k}.type`, ['registry', 'ecr'] as const);
  if (type === 'registry') {
    for (const key of ECR_KEYS.slice(1)) if (u[key] !== undefined) throw new ConfigError(`${k}.${key}`, 'only applies to type: ecr');
    return {};
  }
  // The password comes from GetAuthorizationToken with the AWS credential chain, never from the file.
  if (u.credentials !== undefined) throw new ConfigError(`${k}.credentials`, 'not used with type: ecr (AWS credentials come from the environment, a profile, web identity or the instance role)');
  if (u.region === undefined) throw new ConfigError(`${k}.region`, 'required for type: ecr (an AWS region such as us-east-1)');
  const region = str(u.region, `${k}.region`, env);
  if (!/^[a-z]{2}(-[a-z]+)+-\d+$/.test(region)) throw new ConfigError(`${k}.region`, 'must be an AWS region such as us-east-1');
  const out: Pick<UpstreamConfig, 'type' | 'region' | 'registryId' | 'endpoint'> = { type, region };
  if (u.registryId !== undefined) {
    out.registryId = str(u.registryId, `${k}.registryId`, env);
    if (!/^\d{12}$/.test(out.registryId)) throw new ConfigError(`${k}.registryId`, 'must be a 12-digit AWS account ID (quote it so YAML keeps a leading 0)');
  }
  if (u.endpoint !== undefined) {
    out.endpoint = str(u.endpoint, `${k}.endpoint`, env).replace(/\/+$/, '');
    let url: URL;
    try {
      url = new URL(out.endpoint);
    } catch {
      throw new ConfigError(`${k}.endpoint`, 'not a URL');
    }
    if (url.protocol !== 'http:' && url.protocol !== 'https:') throw new ConfigError(`${k}.endpoint`, 'must be an http or https URL');
    if (url.search || url.hash || out.endpoint.includes('?') || out.endpoint.includes('#')) throw new ConfigError(`${k}.endpoint`, 'must have no query or fragment');
  }
  return out;
}

/** Host names or addresses, with an optional port: `auth.example.com`, `10.0.0.7:5001`, `[fd00::7]`. */
function hosts(v: unknown, key: string, env: NodeJS.ProcessEnv): string[] {
  const list = strList(v, key, env);
  list.forEach((h, i) => {
    if (!/^(?:[a-z0-9]([a-z0-9.-]*[a-z0-9])?|\[[0-9a-f:.]+\])(:[0-9]+)?$/i.test(h)) throw new ConfigError(`${key}[${i}]`, 'must be a host name or address, optionally with :port (no scheme or path)');
  });
  return list;
}

function globs(v: unknown, key: string): string[] {
  const list = strList(v, key, {});
  list.forEach((g, i) => {
    if (!/^[a-z0-9._\-/*]+$/.test(g)) throw new ConfigError(`${key}[${i}]`, 'a repository glob uses lower-case names, /, * and **');
  });
  return list;
}

function tlsFiles(v: unknown, env: NodeJS.ProcessEnv): { cert: string; key: string } {
  const t = obj(v, 'tls');
  known(t, 'tls.', ['cert', 'key']);
  return { cert: str(t.cert, 'tls.cert', env), key: str(t.key, 'tls.key', env) };
}

function clientAuth(v: unknown, env: NodeJS.ProcessEnv, spare: Spare): Config['auth'] {
  const a = obj(v, 'auth');
  known(a, 'auth.', ['tokens', 'htpasswd']);
  const listed = a.tokens === undefined ? [] : (spare(() => strList(a.tokens, 'auth.tokens', env)) ?? []);
  const tokens = listed.flatMap((t, i) => spare(() => secret(t, `auth.tokens[${i}]`, env)) ?? []);
  return { tokens, ...(a.htpasswd === undefined ? {} : { htpasswd: nonBlank(str(a.htpasswd, 'auth.htpasswd', env), 'auth.htpasswd') }) };
}

function limits(v: unknown): Config['limits'] {
  const l = obj(v, 'limits');
  known(l, 'limits.', ['connectionsPerClient', 'clientIdleTimeout', 'headersTimeout', 'shutdownGrace']);
  const d = DEFAULTS.limits;
  return {
    connectionsPerClient: l.connectionsPerClient === undefined ? d.connectionsPerClient : nonNegativeInt(l.connectionsPerClient, 'limits.connectionsPerClient'),
    clientIdleTimeoutMs: l.clientIdleTimeout === undefined ? d.clientIdleTimeoutMs : duration(l.clientIdleTimeout, 'limits.clientIdleTimeout', true),
    headersTimeoutMs: l.headersTimeout === undefined ? d.headersTimeoutMs : duration(l.headersTimeout, 'limits.headersTimeout', true),
    shutdownGraceMs: l.shutdownGrace === undefined ? d.shutdownGraceMs : duration(l.shutdownGrace, 'limits.shutdownGrace'),
  };
}

/** A username and password, or `dockerConfig` (a Docker config.json, whose entries may change). */
function credentials(value: unknown, key: string, env: NodeJS.ProcessEnv): Pick<UpstreamConfig, 'credentials' | 'dockerConfig'> {
  const c = obj(value, key);
  if (c.dockerConfig !== undefined) return { dockerConfig: dockerConfigRef(c, key, env) };
  known(c, `${key}.`, ['username', 'password', 'dockerConfig']);
  return { credentials: { username: secret(c.username, `${key}.username`, env), password: secret(c.password, `${key}.password`, env) } };
}

function checkNames(cfg: Config): void {
  const seen = new Set<string>();
  for (const u of cfg.upstreams) {
    // Names are matched case-insensitively, as DNS names are.
    for (const n of [u.name, ...u.aliases].map((x) => x.toLowerCase())) {
      if (seen.has(n)) throw new ConfigError(`upstreams.${u.name}`, `the name ${n} selects more than one upstream`);
      seen.add(n);
    }
  }
  if (cfg.defaultUpstream !== undefined && !cfg.upstreams.some((u) => u.name === cfg.defaultUpstream)) {
    throw new ConfigError('defaultUpstream', `names no configured upstream (${cfg.defaultUpstream})`);
  }
}

