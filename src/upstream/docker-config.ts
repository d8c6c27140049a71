// Upstream credentials from a Docker config.json, found the way Docker finds them: a
// credential helper named for the registry host (`credHelpers`), else the default store
// (`credsStore`), else the `auths` entry (base64 `auth` of user:password, or an
// `identitytoken`). The file is re-read when it changes (looked at every few seconds, and
// at once when the upstream refuses what it gave); a helper's answer is kept for a while
// and asked again when refused.
import { statSync, readFileSync } from 'node:fs';
import type { DockerConfigRef, UpstreamConfig } from '../config.js';
import { CredentialsUnavailable } from '../errors.js';
import type { Logger } from '../log.js';
import type { CredentialSource, UpstreamCredential } from './auth.js';
import { HELPER_NAME, runCredentialHelper } from './credential-helper.js';

/** The key `docker login` writes for Docker Hub, and the URL its helpers are asked about. */
const HUB_SERVER = 'https://index.docker.io/v1/';
const HUB_HOSTS = ['docker.io', 'index.docker.io', 'registry-1.docker.io'];
/** The file's mtime is looked at no more often than this. */
export const CHECK_EVERY_MS = 3_000;
/** A helper's answer is used this long before the helper is asked again. */
const HELPER_TTL_MS = 10 * 60_000;
/** A refused or failed helper answer is not asked again sooner than this. */
const HELPER_COOLDOWN_MS = 5_000;

interface AuthEntry {
  auth?: string;
  username?: string;
  password?: string;
  identitytoken?: string;
}

export interface DockerConfigFile {
  auths: Record<string, AuthEntry>;
  credHelpers: Record<string, string>;
  credsStore?: string;
}

/** Parses config.json; errors say what is wrong and where, never a value. */
export function parseDockerConfig(text: string): DockerConfigFile {
  let doc: unknown;
  try {
    doc = JSON.parse(text);
  } catch (err) {
    // V8's message quotes the text around the error, which may be a secret: keep the position only.
    const at = /position (\d+)/.exec((err as Error).message)?.[1];
    throw new Error(`is not valid JSON${at === undefined ? '' : ` (at character ${at})`}`);
  }
  if (!isObject(doc)) throw new Error('is not a JSON object');
  const auths = doc.auths ?? {};
  const helpers = doc.credHelpers ?? {};
  if (!isObject(auths)) throw new Error('auths is not an object');
  if (!isObject(helpers)) throw new Error('credHelpers is not an object');
  for (const [key, entry] of Object.entries(auths)) {
    if (!isObject(entry)) throw new Error(`auths["${key}"] is not an object`);
    for (const f of ['auth', 'username', 'password', 'identitytoken']) {
      if (entry[f] !== undefined && typeof entry[f] !== 'string') throw new Error(`auths["${key}"].${f} is not a string`);
    }
  }
  for (const [key, name] of Object.entries(helpers)) {
    if (typeof name !== 'string' || !HELPER_NAME.test(name)) throw new Error(`credHelpers["${key}"] is not a helper name`);
  }
  if (doc.credsStore !== undefined && (typeof doc.credsStore !== 'string' || !(doc.credsStore === '' || HELPER_NAME.test(doc.credsStore)))) {
    throw new Error('credsStore is not a helper name');
  }
  return { auths: auths as Record<string, AuthEntry>, credHelpers: helpers as Record<string, string>, ...(doc.credsStore ? { credsStore: doc.credsStore as string } : {}) };
}

/** What the file says to do for a registry. */
export type Lookup = { kind: 'helper'; helper: string; serverUrl: string; fallback?: UpstreamCredential } | { kind: 'entry'; credential: UpstreamCredential } | { kind: 'none' };

/**
 * The file's answer for a registry known by `hosts` (host[:port], case-insensitive). Keys
 * may be bare hosts or URLs (`https://index.docker.io/v1/`); Docker Hub's names are one.
 */
export function lookup(file: DockerConfigFile, hosts: string[]): Lookup {
  const wanted = new Set(hosts.map((h) => h.toLowerCase()));
  const hub = [...wanted].some((h) => HUB_HOSTS.includes(h));
  if (hub) for (const h of HUB_HOSTS) wanted.add(h);
  const match = (key: string) => wanted.has(hostOf(key));
  const authKey = Object.keys(file.auths).find(match);
  const entry = authKey === undefined ? undefined : fromEntry(file.auths[authKey]);
  const helperKey = Object.keys(file.credHelpers).find(match);
  const helper = helperKey === undefined ? file.credsStore : file.credHelpers[helperKey];
  if (helper) {
    const serverUrl = hub ? HUB_SERVER : (helperKey ?? authKey ?? hosts[0]);
    return { kind: 'helper', helper, serverUrl, ...(entry ? { fallback: entry } : {}) };
  }
  return entry ? { kind: 'entry', credential: entry } : { kind: 'none' };
}

/** `https://host:5000/v1/` and `host:5000` both name host:5000, as Docker's ConvertToHostname has it. */
function hostOf(key: string): string {
  return key.replace(/^[a-z][a-z0-9+.-]*:\/\//i, '').split('/')[0].toLowerCase();
}

function fromEntry(e: AuthEntry): UpstreamCredential | undefined {
  if (e.identitytoken) return { kind: 'identity-token', token: e.identitytoken };
  if (e.auth) {
    const decoded = Buffer.from(e.auth, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon > 0 && colon < decoded.length - 1) return { kind: 'password', username: decoded.slice(0, colon), password: decoded.slice(colon + 1) };
    return undefined;
  }
  return e.username && e.password ? { kind: 'password', username: e.username, password: e.password } : undefined;
}

function isObject(v: unknown): v is Record<string, unknown> {
  return typeof v === 'object' && v !== null && !Array.isArray(v);
}

export interface DockerConfigSourceOptions {
  /** The config.json. */
  path: string;
  /** The names the registry goes by: the upstream's name and its URL's host. */
  hosts: string[];
  helperTimeoutMs: number;
  log: Logger;
  now?: () => number;
  env?: NodeJS.ProcessEnv;
}

interface Current {
  credential?: UpstreamCredential;
  /** Set for a helper's answer: when to ask it again. */
  helperUntil?: number;
  obtainedAt: number;
}

/** The credentials a Docker config.json gives one upstream, kept current. */
export class DockerConfigSource implements CredentialSource {
  readonly #opts: DockerConfigSourceOptions;
  readonly #now: () => number;
  #file?: DockerConfigFile;
  #stamp = '';
  #checkedAt = -Infinity;
  #current?: Current;
  #failure?: { error: Error; until: number };
  #inflight?: Promise<UpstreamCredential | undefined>;

  constructor(opts: DockerConfigSourceOptions) {
    this.#opts = opts;
    this.#now = opts.now ?? Date.now;
  }

  /** The registry is known by its name and by its URL's host: a Docker config may use either. */
  static fromConfig(ref: DockerConfigRef, upstream: UpstreamConfig, log: Logger): DockerConfigSource {
    return new DockerConfigSource({ path: ref.path, helperTimeoutMs: ref.helperTimeoutMs, hosts: [upstream.name, new URL(upstream.url).host], log });
  }

  get(): Promise<UpstreamCredential | undefined> {
    this.#inflight ??= this.#resolve().finally(() => {
      this.#inflight = undefined;
    });
    return this.#inflight;
  }

  async refused(sent: UpstreamCredential): Promise<UpstreamCredential | undefined> {
    await this.#inflight?.catch(() => {});
    const c = this.#current;
    if (c && c.helperUntil !== undefined && this.#now() - c.obtainedAt >= HELPER_COOLDOWN_MS) c.helperUntil = 0;
    this.#checkedAt = -Infinity;
    const fresh = await this.get();
    return fresh && !same(fresh, sent) ? fresh : undefined;
  }

  async #resolve(): Promise<UpstreamCredential | undefined> {
    const now = this.#now();
    if (now - this.#checkedAt >= CHECK_EVERY_MS) this.#reload(now);
    const c = this.#current;
    if (c && (c.helperUntil === undefined || now < c.helperUntil)) return c.credential;
    if (this.#failure && now < this.#failure.until) throw this.#failure.error;
    return this.#obtain(now);
  }

  /** Reads the file again when its mtime, size or inode changed; a broken file keeps the last good one. */
  #reload(now: number): void {
    this.#checkedAt = now;
    const path = this.#opts.path;
    let stamp: string;
    let text: string;
    try {
      const st = statSync(path);
      stamp = `${st.mtimeMs}:${st.size}:${st.ino}`;
      if (stamp === this.#stamp) return;
      text = readFileSync(path, 'utf8');
    } catch (err) {
      if (this.#stamp !== 'unreadable') this.#opts.log.warn('cannot read the Docker config; keeping the credentials last read from it', { file: path, reason: (err as NodeJS.ErrnoException).code ?? 'error' });
      this.#stamp = 'unreadable';
      return;
    }
    this.#stamp = stamp;
    try {
      this.#file = parseDockerConfig(text);
    } catch (err) {
      this.#opts.log.warn('the Docker config is broken; keeping the credentials last read from it', { file: path, reason: (err as Error).message });
      return;
    }
    this.#current = undefined;
    this.#failure = undefined;
  }

  async #obtain(now: number): Promise<UpstreamCredential | undefined> {
    const found = this.#file ? lookup(this.#file, this.#opts.hosts) : ({ kind: 'none' } as const);
    const file = this.#opts.path;
    if (found.kind !== 'helper') {
      const credential = found.kind === 'entry' ? found.credential : undefined;
      this.#current = { credential, obtainedAt: now };
      if (credential) this.#opts.log.info('using upstream credentials from a Docker config', { file, from: 'auths', kind: credential.kind });
      else this.#opts.log.info('the Docker config holds no credentials for this upstream; asking anonymously', { file, hosts: this.#opts.hosts });
      return credential;
    }
    let credential: UpstreamCredential | undefined;
    try {
      credential = (await runCredentialHelper(found.helper, found.serverUrl, { timeoutMs: this.#opts.helperTimeoutMs, env: this.#opts.env })) ?? found.fallback;
    } catch (err) {
      const error = err instanceof CredentialsUnavailable ? err : new CredentialsUnavailable(String(err));
      this.#failure = { error, until: this.#now() + HELPER_COOLDOWN_MS };
      this.#opts.log.warn('a Docker credential helper failed', { file, helper: `docker-credential-${found.helper}`, reason: error.message });
      throw error;
    }
    const at = this.#now();
    this.#current = { credential, obtainedAt: at, helperUntil: at + HELPER_TTL_MS };
    this.#failure = undefined;
    this.#opts.log.info('using upstream credentials from a Docker credential helper', { file, helper: `docker-credential-${found.helper}`, found: credential !== undefined });
    return credential;
  }
}

function same(a: UpstreamCredential, b: UpstreamCredential): boolean {
  const key = (c: UpstreamCredential) => (c.kind === 'password' ? `p\0${c.username}\0${c.password}` : `t\0${c.token}`);
  return key(a) === key(b);
}
