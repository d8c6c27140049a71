// The tier keys of the config: `parent` (another mirror every upstream is fetched
// through), its credentials, and whether a failing parent is bypassed.
import { ConfigError, bool, checkUrl, known, obj, secret, str } from './config-values.js';

export interface ParentConfig {
  /** The parent mirror's origin, e.g. http://central:5000 (no path, no userinfo). */
  url: string;
  /** Sent to the parent only (Basic, or for its token server); never an upstream's. */
  credentials?: { username: string; password: string };
  /** When the parent fails (unreachable, 5xx), ask the upstream itself. */
  fallback: boolean;
}

export const PARENT_KEYS = ['parent', 'parentCredentials', 'parentFallback'];

/** The tier keys of the root mapping, or undefined when `parent` is unset. */
export function parseParent(raw: Record<string, unknown>, env: NodeJS.ProcessEnv, spare: <T>(read: () => T) => T | undefined = (read) => read()): ParentConfig | undefined {
  if (raw.parent === undefined || raw.parent === null || raw.parent === '') {
    // Without a parent these would silently do nothing: say so instead.
    for (const key of PARENT_KEYS.slice(1)) if (raw[key] !== undefined) throw new ConfigError(key, 'only applies with parent');
    return undefined;
  }
  const url = str(raw.parent, 'parent', env);
  checkUrl(url, 'parent');
  // A password in the URL would be shown wherever the URL is (logs, error messages).
  if (new URL(url).username !== '' || new URL(url).password !== '') throw new ConfigError('parent', 'must hold no user or password: set parentCredentials');
  const credentials = raw.parentCredentials === undefined ? undefined : spare(() => parentCredentials(raw.parentCredentials, env));
  return {
    url: url.replace(/\/+$/, ''),
    ...(credentials === undefined ? {} : { credentials }),
    fallback: raw.parentFallback === undefined ? true : bool(raw.parentFallback, 'parentFallback'),
  };
}

function parentCredentials(v: unknown, env: NodeJS.ProcessEnv): { username: string; password: string } {
  const c = obj(v, 'parentCredentials');
  known(c, 'parentCredentials.', ['username', 'password']);
  return { username: secret(c.username, 'parentCredentials.username', env), password: secret(c.password, 'parentCredentials.password', env) };
}
