// Docker credential helpers: `docker-credential-<name> get` with the server URL on stdin
// answers `{ "Username": …, "Secret": … }` on stdout. The helper is found on PATH and run
// without a shell; it runs in a process group of its own so a timeout kills whatever it
// started too (a shell script's `sleep` would otherwise hold the pipes open). Its output
// holds the secret, so no error message quotes it.
import { spawn } from 'node:child_process';
import { CredentialsUnavailable } from '../errors.js';
import type { UpstreamCredential } from './auth.js';

/** Helper names become part of a command name: no path separators, nothing a shell would read. */
export const HELPER_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
/** More than this on stdout is not a credential answer. */
const MAX_OUTPUT = 64 * 1024;
/** What helpers print (and exit non-zero with) when they hold nothing for the server. */
const NOT_FOUND = /credentials not found/i;
/** A helper answering with this user name hands over an identity (refresh) token. */
const TOKEN_USER = '<token>';

export interface HelperOptions {
  timeoutMs: number;
  env?: NodeJS.ProcessEnv;
}

/** Runs the helper; undefined when it holds no credentials for `serverUrl`. */
export function runCredentialHelper(name: string, serverUrl: string, opts: HelperOptions): Promise<UpstreamCredential | undefined> {
  const command = `docker-credential-${name}`;
  if (!HELPER_NAME.test(name)) return Promise.reject(new CredentialsUnavailable(`credential helper name ${JSON.stringify(name)} is not a plain name`));
  return new Promise((resolve, reject) => {
    const fail = (why: string) => reject(new CredentialsUnavailable(`credential helper ${command} ${why}`));
    const child = spawn(command, ['get'], { stdio: ['pipe', 'pipe', 'ignore'], env: opts.env ?? process.env, detached: true });
    const chunks: Buffer[] = [];
    let size = 0;
    let settled = false;
    const finish = (then: () => void) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      then();
    };
    const killGroup = () => {
      try {
        if (child.pid !== undefined) process.kill(-child.pid, 'SIGKILL');
      } catch {
        // Already gone.
      }
      child.stdout?.destroy();
    };
    const timer = setTimeout(() => finish(() => {
      killGroup();
      fail(`did not answer within ${opts.timeoutMs} ms`);
    }), opts.timeoutMs);
    child.on('error', (err: NodeJS.ErrnoException) => finish(() => fail(err.code === 'ENOENT' ? 'is not on PATH' : `could not be started (${err.code ?? 'error'})`)));
    // A helper that exits without reading stdin makes the write fail with EPIPE: its exit says more.
    child.stdin?.on('error', () => {});
    child.stdin?.end(serverUrl);
    child.stdout?.on('data', (c: Buffer) => {
      size += c.length;
      if (size > MAX_OUTPUT) return finish(() => {
        killGroup();
        fail(`answered more than ${MAX_OUTPUT} bytes`);
      });
      chunks.push(c);
    });
    child.stdout?.on('error', () => {});
    child.on('close', (code, signal) => finish(() => {
      const out = Buffer.concat(chunks).toString('utf8');
      if (code === 0) return settle(() => parseAnswer(out), resolve, fail);
      if (NOT_FOUND.test(out)) return resolve(undefined);
      fail(signal ? `was killed by ${signal}` : `exited with status ${code}`);
    }));
  });
}

function settle<T>(fn: () => T, resolve: (v: T) => void, fail: (why: string) => void): void {
  try {
    resolve(fn());
  } catch (err) {
    fail((err as Error).message);
  }
}

function parseAnswer(out: string): UpstreamCredential | undefined {
  let doc: { Username?: unknown; Secret?: unknown };
  try {
    doc = JSON.parse(out) as typeof doc;
  } catch {
    throw new Error('answered something that is not JSON');
  }
  if (typeof doc !== 'object' || doc === null) throw new Error('answered something that is not a JSON object');
  if (typeof doc.Secret !== 'string' || doc.Secret === '') return undefined;
  if (doc.Username === TOKEN_USER) return { kind: 'identity-token', token: doc.Secret };
  if (typeof doc.Username !== 'string' || doc.Username === '') throw new Error('answered a secret without a Username');
  return { kind: 'password', username: doc.Username, password: doc.Secret };
}
