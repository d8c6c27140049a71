// Who may use the mirror: client authentication (static tokens, htpasswd bcrypt users)
// answered with the Basic challenge every registry client understands, and per-upstream
// repository allow/deny globs, so the mirror is no free proxy to arbitrary images.
import { createHash, timingSafeEqual } from 'node:crypto';
import bcrypt from 'bcryptjs';
import { LRUCache } from 'lru-cache';

/** htpasswd lines `user:$2y$...`; only bcrypt is accepted (the others are weak). Throws naming the line. */
export function parseHtpasswd(text: string, source: string): Map<string, string> {
  const users = new Map<string, string>();
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim();
    if (!line || line.startsWith('#')) return;
    const colon = line.indexOf(':');
    const hash = line.slice(colon + 1);
    if (colon <= 0 || !/^\$2[aby]\$\d\d\$/.test(hash)) throw new Error(`${source}:${i + 1}: not a bcrypt htpasswd entry (create one with htpasswd -B)`);
    users.set(line.slice(0, colon), hash);
  });
  return users;
}

export interface ClientAuthConfig {
  tokens: string[];
  users: Map<string, string>;
}

/** Checks Authorization headers; verified headers are remembered briefly, since bcrypt is slow on purpose. */
export class ClientAuth {
  readonly #tokens: Buffer[];
  readonly #users: Map<string, string>;
  readonly #verified = new LRUCache<string, true>({ max: 10_000, ttl: 5 * 60_000 });

  constructor(cfg: ClientAuthConfig) {
    this.#tokens = cfg.tokens.map((t) => Buffer.from(t));
    this.#users = cfg.users;
  }

  /** The challenge sent with a 401. */
  static readonly challenge = 'Basic realm="regmirror"';

  async allows(header: string | undefined): Promise<boolean> {
    if (!header) return false;
    const key = createHash('sha256').update(header).digest('base64');
    if (this.#verified.get(key)) return true;
    const ok = await this.#check(header);
    if (ok) this.#verified.set(key, true);
    return ok;
  }

  async #check(header: string): Promise<boolean> {
    const [scheme, value = ''] = header.split(/\s+/, 2);
    if (/^bearer$/i.test(scheme)) return this.#isToken(value);
    if (!/^basic$/i.test(scheme)) return false;
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return false;
    const [user, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
    // Any user name with a token as password, so `docker login` works with tokens.
    if (this.#isToken(password)) return true;
    const hash = this.#users.get(user);
    return hash !== undefined && bcrypt.compare(password, hash);
  }

  #isToken(value: string): boolean {
    // Never a match for nothing, even if an empty token was configured.
    if (value.trim() === '') return false;
    const given = Buffer.from(value);
    return this.#tokens.some((t) => t.length === given.length && timingSafeEqual(t, given));
  }
}

/** `library/*` (one component), `myorg/**` (any depth) → a matcher over normalised repository names. */
export function globMatcher(globs: string[]): (repository: string) => boolean {
  const res = globs.map((g) => new RegExp('^' + g.split('**').map((part) => part.split('*').map(escape).join('[^/]*')).join('.*') + '$'));
  return (repository) => res.some((re) => re.test(repository));
}

function escape(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}
