// The value parsers behind config.ts: each turns one YAML value into a typed one, or
// throws a ConfigError naming the key (`config: upstreams.ghcr.io.url: not a URL`).
import { readFileSync } from 'node:fs';

export class ConfigError extends Error {
  constructor(key: string, problem: string) {
    super(`config: ${key}: ${problem}`);
    this.name = 'ConfigError';
  }
}

/** A reference this process cannot resolve here: an unset ${VAR}, or a secret's file: it cannot read. */
export class UnresolvedReference extends ConfigError {}

/**
 * A secret is a string, a ${ENV} reference, or `file:/path` (a mounted Kubernetes secret).
 * An empty or blank one is refused: an empty ${CI_TOKEN} or secret file would otherwise
 * turn "a token is required" into "an empty token will do".
 */
export function secret(value: unknown, key: string, env: NodeJS.ProcessEnv): string {
  const s = str(value, key, env);
  if (!s.startsWith('file:')) return nonBlank(s, key);
  let text: string;
  try {
    text = readFileSync(s.slice(5), 'utf8').trim();
  } catch (err) {
    throw new UnresolvedReference(key, `cannot read the file it names (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!text) throw new ConfigError(key, 'is empty: the file it names holds no secret');
  return text;
}

/** The value, unless it is empty or only whitespace (such as an unset-but-defined ${VAR}). */
export function nonBlank(s: string, key: string): string {
  if (s.trim() === '') throw new ConfigError(key, 'is empty: a secret or path must have a value');
  return s;
}

export function obj(v: unknown, key: string): Record<string, unknown> {
  if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigError(key, 'must be a mapping');
  return v as Record<string, unknown>;
}

export function known(o: Record<string, unknown>, prefix: string, keys: string[]): void {
  for (const k of Object.keys(o)) {
    if (keys.includes(k)) continue;
    const near = nearest(k, keys);
    throw new ConfigError(`${prefix}${k}`, near ? `unknown key (did you mean ${near}?)` : `unknown key (expected one of ${keys.join(', ')})`);
  }
}

/** The known key a typo most likely meant: a case slip, or a couple of letters off. */
function nearest(key: string, keys: string[]): string | undefined {
  const folded = keys.find((k) => k.toLowerCase() === key.toLowerCase());
  if (folded) return folded;
  const scored = keys.map((k) => ({ k, d: editDistance(key.toLowerCase(), k.toLowerCase()) })).sort((a, b) => a.d - b.d);
  // Short keys are a letter or two from everything: only a near miss is a suggestion.
  const best = scored[0];
  return best && best.d <= Math.min(2, Math.floor(key.length / 3)) && scored[1]?.d !== best.d ? best.k : undefined;
}

/** Levenshtein distance (insertions, deletions and substitutions). */
function editDistance(a: string, b: string): number {
  let prev = Array.from({ length: b.length + 1 }, (_, j) => j);
  for (let i = 1; i <= a.length; i++) {
    const row = [i];
    for (let j = 1; j <= b.length; j++) row[j] = Math.min(prev[j] + 1, row[j - 1] + 1, prev[j - 1] + (a[i - 1] === b[j - 1] ? 0 : 1));
    prev = row;
  }
  return prev[b.length];
}

/** Strings may carry ${VAR} references to the environment; an unset variable is an error. */
export function str(v: unknown, key: string, env: NodeJS.ProcessEnv): string {
  if (typeof v === 'number') v = String(v);
  if (typeof v !== 'string') throw new ConfigError(key, 'must be a string');
  return v.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const value = env[name];
    if (value === undefined) throw new UnresolvedReference(key, `environment variable ${name} is not set`);
    return value;
  });
}

export function optStr(v: unknown, key: string, env: NodeJS.ProcessEnv): string | undefined {
  return v === undefined || v === null || v === '' ? undefined : str(v, key, env);
}

export function strList(v: unknown, key: string, env: NodeJS.ProcessEnv): string[] {
  if (!Array.isArray(v)) throw new ConfigError(key, 'must be a list');
  return v.map((item, i) => str(item, `${key}[${i}]`, env));
}

export function oneOf<T extends string>(v: unknown, key: string, values: readonly T[]): T {
  if (typeof v !== 'string' || !values.includes(v as T)) throw new ConfigError(key, `must be one of ${values.join(', ')}`);
  return v as T;
}

export function nonNegativeInt(v: unknown, key: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 0) throw new ConfigError(key, 'must be a whole number of at least 0');
  return v;
}

export function bool(v: unknown, key: string): boolean {
  if (typeof v !== 'boolean') throw new ConfigError(key, 'must be true or false');
  return v;
}

export function positiveInt(v: unknown, key: string): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < 1) throw new ConfigError(key, 'must be a whole number of at least 1');
  return v;
}

/** A whole number from `min` to `max`. */
export function intInRange(v: unknown, key: string, min: number, max: number): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < min || v > max) throw new ConfigError(key, `must be a whole number from ${min} to ${max}`);
  return v;
}

/**
 * postgres://user@host:port/database. The password has a key of its own (a secret, with
 * ${ENV} or file:): in the url it would end up wherever the url is shown. The url itself
 * is never echoed, in case it holds one anyway.
 */
export function postgresUrl(url: string, key: string, passwordKey: string): string {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(key, 'not a URL (postgres://user@host:5432/database)');
  }
  if (u.protocol !== 'postgres:' && u.protocol !== 'postgresql:') throw new ConfigError(key, 'must be a postgres:// or postgresql:// URL');
  if (u.password !== '') throw new ConfigError(key, `must not hold a password: set ${passwordKey} (it takes \${ENV} or file: like every secret)`);
  if (u.hostname === '') throw new ConfigError(key, 'must name a host (postgres://user@host:5432/database)');
  if (!/^\/[^/]+$/.test(u.pathname)) throw new ConfigError(key, 'must name one database as its path (postgres://user@host:5432/database)');
  if (u.search || u.hash || url.includes('?') || url.includes('#')) throw new ConfigError(key, 'must have no query or fragment (TLS is set with metadata.postgres.ssl)');
  return url;
}

/** A PEM file named by a path or `file:/path`, read now so a missing file fails at start-up. */
export function pemFile(value: unknown, key: string, env: NodeJS.ProcessEnv): string {
  const s = nonBlank(str(value, key, env), key);
  const path = s.startsWith('file:') ? s.slice(5) : s;
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(key, `cannot read the file it names (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  if (!text.includes('-----BEGIN CERTIFICATE-----')) throw new ConfigError(key, 'the file it names holds no PEM certificate');
  return text;
}

export function checkUrl(url: string, key: string): void {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ConfigError(key, 'not a URL');
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError(key, 'must be an http or https URL');
  if (u.pathname !== '/' && u.pathname !== '') throw new ConfigError(key, 'must have no path (the /v2/ API is at its root)');
  if (u.search || u.hash || url.includes('?') || url.includes('#')) throw new ConfigError(key, 'must have no query or fragment');
}

const DURATION_UNITS: Record<string, number> = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 };

/** `90s`, `5m`, `168h`, `1h30m`; a bare 0 is zero. */
export function duration(v: unknown, key: string, positive = false): number {
  const text = typeof v === 'number' && v === 0 ? '0s' : v;
  if (typeof text !== 'string' || !/^(\d+(ms|s|m|h|d))+$/.test(text)) {
    throw new ConfigError(key, 'must be a duration such as 30s, 5m or 168h');
  }
  let ms = 0;
  for (const [, n, unit] of text.matchAll(/(\d+)(ms|s|m|h|d)/g)) ms += Number(n) * DURATION_UNITS[unit];
  if (positive && ms === 0) throw new ConfigError(key, 'must be longer than 0');
  return ms;
}

const SIZE_UNITS: Record<string, number> = { '': 1, B: 1, KB: 1e3, MB: 1e6, GB: 1e9, TB: 1e12, KiB: 1024, MiB: 1024 ** 2, GiB: 1024 ** 3, TiB: 1024 ** 4 };

/** Bytes with an optional unit: `64MiB`, `500GB`, `1048576`. */
export function size(v: unknown, key: string): number {
  const text = typeof v === 'number' && Number.isSafeInteger(v) && v >= 0 ? String(v) : v;
  const m = typeof text === 'string' ? /^(\d+)\s*([KMGT]i?B|B)?$/.exec(text) : null;
  if (!m) throw new ConfigError(key, 'must be a size such as 64MiB or 500GB');
  return Number(m[1]) * SIZE_UNITS[m[2] ?? ''];
}

export function listenAddress(text: string, key: string): { host: string; port: number } {
  const m = /^(?:\[([0-9a-fA-F:]+)\]|([^:]*)):(\d{1,5})$/.exec(text);
  const port = m ? Number(m[3]) : NaN;
  if (!m || port > 65535) throw new ConfigError(key, 'must be host:port or :port, e.g. :5000 or 127.0.0.1:5000');
  return { host: m[1] ?? (m[2] || '0.0.0.0'), port };
}
