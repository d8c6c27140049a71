// `credentials: { dockerConfig: … }` of an upstream: which Docker config.json to take its
// credentials from, read once here so a missing or broken file stops the start-up.
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseDockerConfig } from './upstream/docker-config.js';
import { ConfigError, duration, known, nonBlank, str } from './config-values.js';

export interface DockerConfigRef {
  /** The config.json, an absolute path. */
  path: string;
  /** How long a credential helper may take to answer. */
  helperTimeoutMs: number;
}

const HELPER_TIMEOUT_MS = 10_000;

/**
 * `dockerConfig: /path/config.json`, or `true`: `$DOCKER_CONFIG/config.json`, else
 * `~/.docker/config.json`, as Docker looks for it.
 */
export function dockerConfigRef(c: Record<string, unknown>, key: string, env: NodeJS.ProcessEnv): DockerConfigRef {
  known(c, `${key}.`, ['dockerConfig', 'helperTimeout']);
  const k = `${key}.dockerConfig`;
  const v = c.dockerConfig;
  let path: string;
  if (v === true) path = env.DOCKER_CONFIG ? join(env.DOCKER_CONFIG, 'config.json') : join(env.HOME || homedir(), '.docker', 'config.json');
  else if (typeof v === 'string') path = nonBlank(str(v, k, env), k);
  else throw new ConfigError(k, 'must be the path of a Docker config.json, or true for $DOCKER_CONFIG/config.json (else ~/.docker/config.json)');
  path = resolve(path);
  let text: string;
  try {
    text = readFileSync(path, 'utf8');
  } catch (err) {
    throw new ConfigError(k, `cannot read ${path} (${(err as NodeJS.ErrnoException).code ?? 'error'})`);
  }
  try {
    parseDockerConfig(text);
  } catch (err) {
    throw new ConfigError(k, `${path} ${(err as Error).message}`);
  }
  return { path, helperTimeoutMs: c.helperTimeout === undefined ? HELPER_TIMEOUT_MS : duration(c.helperTimeout, `${key}.helperTimeout`, true) };
}
