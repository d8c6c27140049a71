// The supply-chain keys of the config: `policies` (per upstream and repository glob: which
// signatures a manifest needs, and which tags may never change) and `events` (where the
// events of those policies and of the cache are sent besides the metadata store).
import { createPublicKey } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { ConfigError, duration, known, obj, oneOf, positiveInt, secret, str, strList, bool } from './config-values.js';

export type SignatureMode = 'enforce' | 'warn' | 'off';
export type TagChange = 'keep' | 'refuse' | 'follow';

/** A public key a signature may be made with, as the config names it and as PEM. */
export interface TrustedKey {
  /** What the config said (`file:/etc/regmirror/cosign.pub`), for messages and the verification cache's key. */
  ref: string;
  pem: string;
}

/** A signer's identity in a Fulcio certificate (keyless signatures). */
export interface SignerIdentity {
  /** The certificate's subject (an e-mail or a workflow URI), exactly. */
  subject: string;
  /** The OIDC issuer that vouched for it, exactly. */
  issuer: string;
}

export interface SignaturePolicy {
  mode: SignatureMode;
  keys: TrustedKey[];
  /** A Sigstore trusted root (JSON) for keyless signatures, read from a file so it works air-gapped. */
  trustedRoot?: { ref: string; json: string };
  /** Keyless: the certificate must name one of these. */
  identities: SignerIdentity[];
  /** The signed docker-reference must name the repository pulled (Docker Hub's names normalised). */
  matchReference: boolean;
}

export interface TagPolicy {
  /** Tag globs (`v*`, `[0-9]*.*`): `*` any run of characters, `?` one, `[...]` one of a class. */
  immutable: string[];
  onChange: TagChange;
}

export interface Policy {
  /** Which pulls it governs: an upstream's name (absent: every upstream) and repository globs (empty: every repository). */
  match: { upstream?: string; repositories: string[] };
  signatures?: SignaturePolicy;
  tags?: TagPolicy;
}

export interface EventsConfig {
  /** Every event is POSTed here as JSON, HMAC-signed with `secret`. */
  webhook?: { url: string; secret?: string };
  /** Events not yet delivered to the webhook kept in memory; older ones are dropped first. */
  queueSize: number;
  /** Events older than this are deleted from the metadata store. */
  retentionMs: number;
}

export const EVENTS_DEFAULTS: EventsConfig = { queueSize: 1000, retentionMs: 30 * 86_400_000 };

export function parsePolicies(v: unknown, env: NodeJS.ProcessEnv): Policy[] {
  if (v === null) return [];
  if (!Array.isArray(v)) throw new ConfigError('policies', 'must be a list');
  return v.map((p, i) => policy(obj(p, `policies[${i}]`), `policies[${i}]`, env));
}

function policy(p: Record<string, unknown>, k: string, env: NodeJS.ProcessEnv): Policy {
  known(p, `${k}.`, ['match', 'signatures', 'tags']);
  if (p.signatures === undefined && p.tags === undefined) throw new ConfigError(k, 'sets neither signatures nor tags: it would do nothing');
  const m = p.match === undefined ? {} : obj(p.match, `${k}.match`);
  known(m, `${k}.match.`, ['upstream', 'repositories']);
  return {
    match: {
      ...(m.upstream === undefined ? {} : { upstream: str(m.upstream, `${k}.match.upstream`, env) }),
      repositories: m.repositories === undefined ? [] : repositoryGlobs(m.repositories, `${k}.match.repositories`),
    },
    ...(p.signatures === undefined ? {} : { signatures: signatures(obj(p.signatures, `${k}.signatures`), `${k}.signatures`, env) }),
    ...(p.tags === undefined ? {} : { tags: tags(obj(p.tags, `${k}.tags`), `${k}.tags`) }),
  };
}

function signatures(s: Record<string, unknown>, k: string, env: NodeJS.ProcessEnv): SignaturePolicy {
  known(s, `${k}.`, ['mode', 'keys', 'trustedRoot', 'identities', 'matchReference']);
  const mode = s.mode === undefined ? 'enforce' : oneOf(s.mode, `${k}.mode`, ['enforce', 'warn', 'off'] as const);
  const keys = s.keys === undefined ? [] : strList(s.keys, `${k}.keys`, env).map((ref, i) => publicKey(ref, `${k}.keys[${i}]`));
  const trustedRoot = s.trustedRoot === undefined ? undefined : trustedRootFile(str(s.trustedRoot, `${k}.trustedRoot`, env), `${k}.trustedRoot`);
  const identities = s.identities === undefined ? [] : identityList(s.identities, `${k}.identities`, env);
  if (mode !== 'off' && keys.length === 0 && !trustedRoot) throw new ConfigError(`${k}.keys`, 'names no key (and no trustedRoot): no signature could ever be valid');
  if (identities.length > 0 && !trustedRoot) throw new ConfigError(`${k}.identities`, 'only applies with trustedRoot (keyless signatures)');
  return {
    mode,
    keys,
    ...(trustedRoot ? { trustedRoot } : {}),
    identities,
    matchReference: s.matchReference === undefined ? false : bool(s.matchReference, `${k}.matchReference`),
  };
}

/** `file:/path/cosign.pub`, a plain path, or the PEM text itself: an ECDSA P-256, Ed25519 or RSA public key. */
function publicKey(ref: string, k: string): TrustedKey {
  const pem = ref.includes('-----BEGIN') ? ref : readText(ref.startsWith('file:') ? ref.slice(5) : ref, k);
  let type: string | undefined;
  let curve: string | undefined;
  try {
    const key = createPublicKey(pem);
    type = key.asymmetricKeyType;
    curve = key.asymmetricKeyDetails?.namedCurve;
  } catch (err) {
    throw new ConfigError(k, `holds no PEM public key (${(err as Error).message})`);
  }
  const supported = type === 'ed25519' || type === 'rsa' || (type === 'ec' && curve === 'prime256v1');
  if (!supported) throw new ConfigError(k, `is a ${type}${curve ? ` ${curve}` : ''} key: ECDSA P-256, Ed25519 and RSA keys are supported`);
  return { ref: ref.includes('-----BEGIN') ? 'inline key' : ref, pem };
}

function trustedRootFile(ref: string, k: string): { ref: string; json: string } {
  const json = readText(ref.startsWith('file:') ? ref.slice(5) : ref, k);
  try {
    JSON.parse(json);
  } catch {
    throw new ConfigError(k, 'the file it names is not JSON (a Sigstore trusted root)');
  }
  return { ref, json };
}

function identityList(v: unknown, k: string, env: NodeJS.ProcessEnv): SignerIdentity[] {
  if (!Array.isArray(v)) throw new ConfigError(k, 'must be a list');
  return v.map((item, i) => {
    const o = obj(item, `${k}[${i}]`);
    known(o, `${k}[${i}].`, ['subject', 'issuer']);
    return { subject: str(o.subject, `${k}[${i}].subject`, env), issuer: str(o.issuer, `${k}[${i}].issuer`, env) };
  });
}

function tags(t: Record<string, unknown>, k: string): TagPolicy {
  known(t, `${k}.`, ['immutable', 'onChange']);
  const immutable = strList(t.immutable, `${k}.immutable`, {});
  immutable.forEach((g, i) => {
    if (!/^[A-Za-z0-9_.*?\-[\]]+$/.test(g)) throw new ConfigError(`${k}.immutable[${i}]`, 'a tag glob uses tag characters, *, ? and [...]');
  });
  return { immutable, onChange: t.onChange === undefined ? 'keep' : oneOf(t.onChange, `${k}.onChange`, ['keep', 'refuse', 'follow'] as const) };
}

function repositoryGlobs(v: unknown, k: string): string[] {
  const list = strList(v, k, {});
  list.forEach((g, i) => {
    if (!/^[a-z0-9._\-/*]+$/.test(g)) throw new ConfigError(`${k}[${i}]`, 'a repository glob uses lower-case names, /, * and **');
  });
  return list;
}

export function parseEvents(v: unknown, env: NodeJS.ProcessEnv, spare: <T>(read: () => T) => T | undefined = (read) => read()): EventsConfig {
  if (v === null) return { ...EVENTS_DEFAULTS };
  const e = obj(v, 'events');
  known(e, 'events.', ['webhook', 'secret', 'queueSize', 'retention']);
  if (e.secret !== undefined && e.webhook === undefined) throw new ConfigError('events.secret', 'only applies with events.webhook');
  let webhook: EventsConfig['webhook'];
  if (e.webhook !== undefined) {
    const url = str(e.webhook, 'events.webhook', env);
    let u: URL;
    try {
      u = new URL(url);
    } catch {
      throw new ConfigError('events.webhook', 'not a URL');
    }
    if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigError('events.webhook', 'must be an http or https URL');
    const key = e.secret === undefined ? undefined : spare(() => secret(e.secret, 'events.secret', env));
    // A command that cannot resolve the secret sends nothing rather than unsigned events.
    if (e.secret === undefined || key !== undefined) webhook = { url, ...(key === undefined ? {} : { secret: key }) };
  }
  return {
    ...(webhook ? { webhook } : {}),
    queueSize: e.queueSize === undefined ? EVENTS_DEFAULTS.queueSize : positiveInt(e.queueSize, 'events.queueSize'),
    retentionMs: e.retention === undefined ? EVENTS_DEFAULTS.retentionMs : duration(e.retention, 'events.retention', true),
  };
}

function readText(path: string, k: string): string {
  try {
    return readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(k, `cannot read the file it names (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
}
