// Who may use the mirror: client authentication (static tokens, htpasswd bcrypt users)
// answered with the Basic challenge every registry client understands, and per-upstream
// repository allow/deny globs, so the mirror is no free proxy to arbitrary images.
import { createHash, timingSafeEqual } from 'node:crypto';
import { countBoundedLru } from '../lru.js';
import { BcryptWorker } from './bcrypt-worker.js';

/** `library/*` (one component), `myorg/**` (any depth) → a matcher over normalised repository names. */
export { globMatcher } from '../oci/repository-glob.js';

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

/** What a credential check found: let in, refused, or refused at once because the address failed too often. */
export type Verdict = 'ok' | 'refused' | 'throttled';

/** Failed (or running) password checks one client address may have within FAILURE_WINDOW_MS. */
const FAILURES_PER_ADDRESS = 10;
const FAILURE_WINDOW_MS = 60_000;
/** Password checks queued on the worker at once, across all addresses. */
const MAX_PENDING = 64;

/** Password checks per client address: those that failed lately and those still running. */
class AddressBudget {
  readonly #failures = countBoundedLru<string, number>(10_000, { ttl: FAILURE_WINDOW_MS });
  readonly #running = new Map<string, number>();

  spent(client: string): boolean {
    return (this.#failures.get(client) ?? 0) + (this.#running.get(client) ?? 0) >= FAILURES_PER_ADDRESS;
  }

  /** Counts a check as running until the returned function is called with its outcome. */
  begin(client: string): (ok: boolean) => void {
    this.#running.set(client, (this.#running.get(client) ?? 0) + 1);
    return (ok) => {
      const left = (this.#running.get(client) ?? 1) - 1;
      if (left > 0) this.#running.set(client, left);
      else this.#running.delete(client);
      if (!ok) this.#failures.set(client, (this.#failures.get(client) ?? 0) + 1);
    };
  }
}

/**
 * Checks Authorization headers. Verified headers are remembered briefly, since bcrypt is
 * slow on purpose; it runs on a worker thread, a header that just failed is refused at
 * once, and an address with too many failures is throttled before any bcrypt runs.
 */
export class ClientAuth {
  readonly #tokens: Buffer[];
  readonly #users: Map<string, string>;
  /** An unknown user is compared against this, so it takes as long as a known one. */
  readonly #decoy?: string;
  readonly #bcrypt = new BcryptWorker();
  readonly #verified = countBoundedLru<string, true>(10_000, { ttl: 5 * 60_000 });
  readonly #failed = countBoundedLru<string, true>(10_000, { ttl: FAILURE_WINDOW_MS });
  readonly #budget = new AddressBudget();

  constructor(cfg: ClientAuthConfig) {
    this.#tokens = cfg.tokens.filter((t) => t.trim() !== '').map((t) => Buffer.from(t));
    this.#users = cfg.users;
    this.#decoy = [...cfg.users.values()].sort((a, b) => cost(b) - cost(a))[0];
  }

  /** The challenge sent with a 401. */
  static readonly challenge = 'Basic realm="regmirror"';

  async allows(header: string | undefined, client = '?'): Promise<boolean> {
    return (await this.check(header, client)) === 'ok';
  }

  /** `client` is the caller's address, for the failure budget. */
  async check(header: string | undefined, client = '?'): Promise<Verdict> {
    if (!header) return 'refused';
    const key = createHash('sha256').update(header).digest('base64');
    if (this.#verified.get(key)) return 'ok';
    if (this.#failed.get(key)) return 'refused';
    const basic = this.#parse(header);
    if (typeof basic === 'string') return basic;
    if (this.#budget.spent(client) || this.#bcrypt.pending >= MAX_PENDING) return 'throttled';
    const end = this.#budget.begin(client);
    let ok = false;
    try {
      ok = await this.#password(basic.user, basic.password);
    } finally {
      end(ok);
    }
    (ok ? this.#verified : this.#failed).set(key, true);
    return ok ? 'ok' : 'refused';
  }

  /** Tokens are settled here; a Basic user and password are left for bcrypt. */
  #parse(header: string): Verdict | { user: string; password: string } {
    const [scheme, value = ''] = header.split(/\s+/, 2);
    if (/^bearer$/i.test(scheme)) return this.#isToken(value) ? 'ok' : 'refused';
    if (!/^basic$/i.test(scheme)) return 'refused';
    const decoded = Buffer.from(value, 'base64').toString('utf8');
    const colon = decoded.indexOf(':');
    if (colon < 0) return 'refused';
    const [user, password] = [decoded.slice(0, colon), decoded.slice(colon + 1)];
    // Any user name with a token as password, so `docker login` works with tokens.
    if (this.#isToken(password)) return 'ok';
    if (!this.#decoy || password === '') return 'refused';
    return { user, password };
  }

  async #password(user: string, password: string): Promise<boolean> {
    const hash = this.#users.get(user);
    const ok = await this.#bcrypt.compare(password, hash ?? this.#decoy!);
    return ok && hash !== undefined;
  }

  #isToken(value: string): boolean {
    // Never a match for nothing, even if an empty token was configured.
    if (value.trim() === '') return false;
    const given = Buffer.from(value);
    return this.#tokens.some((t) => t.length === given.length && timingSafeEqual(t, given));
  }

  /** Stops the bcrypt thread. */
  close(): Promise<void> {
    return this.#bcrypt.close();
  }
}

/** The client's address from a node-server request's env, for per-address budgets. */
export function clientAddress(env: unknown): string {
  return (env as { incoming?: { socket?: { remoteAddress?: string } } } | undefined)?.incoming?.socket?.remoteAddress ?? '?';
}

/** The cost factor of a bcrypt hash (`$2y$10$...` → 10). */
function cost(hash: string): number {
  return Number(hash.slice(4, 6)) || 0;
}

