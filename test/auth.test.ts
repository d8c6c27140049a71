// Upstream authentication: the WWW-Authenticate parser, and RegistryAuthorizer against a
// real token server on loopback. Host names under .test are resolved to 127.0.0.1 by the
// dispatcher, so realm-trust rules can be checked with realistic names.
import assert from 'node:assert/strict';
import { createServer, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { after, before, beforeEach, describe, test } from 'node:test';
import { Agent } from 'undici';
import { UpstreamInvalid, UpstreamUnauthorized, UpstreamUnavailable } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { parseChallenges, RegistryAuthorizer, type RegistryAuthorizerOptions } from '../src/upstream/auth.js';

describe('parseChallenges', () => {
  test("Docker Hub's challenge", () => {
    assert.deepEqual(
      parseChallenges('Bearer realm="https://auth.docker.io/token",service="registry.docker.io",scope="repository:library/nginx:pull"'),
      [
        {
          scheme: 'bearer',
          params: { realm: 'https://auth.docker.io/token', service: 'registry.docker.io', scope: 'repository:library/nginx:pull' },
        },
      ],
    );
  });

  test("GHCR's challenge", () => {
    assert.deepEqual(parseChallenges('Bearer realm="https://ghcr.io/token",service="ghcr.io",scope="repository:org/app:pull"'), [
      { scheme: 'bearer', params: { realm: 'https://ghcr.io/token', service: 'ghcr.io', scope: 'repository:org/app:pull' } },
    ]);
  });

  test('Basic with a realm', () => {
    assert.deepEqual(parseChallenges('Basic realm="Registry Realm"'), [{ scheme: 'basic', params: { realm: 'Registry Realm' } }]);
  });

  test('two challenges in one header', () => {
    assert.deepEqual(parseChallenges('Basic realm="corp registry", Bearer realm="https://auth.example.com/token",service="registry.example.com"'), [
      { scheme: 'basic', params: { realm: 'corp registry' } },
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'registry.example.com' } },
    ]);
  });

  test('a comma inside a quoted scope does not split the challenge', () => {
    assert.deepEqual(parseChallenges('Bearer realm="https://auth.example.com/token",service="reg",scope="repository:a:pull,push"'), [
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'reg', scope: 'repository:a:pull,push' } },
    ]);
    // Even when what follows the comma looks like the start of another challenge.
    assert.deepEqual(parseChallenges('Basic realm="Acme, Inc realm=x"'), [{ scheme: 'basic', params: { realm: 'Acme, Inc realm=x' } }]);
  });

  test('an array of header values, one challenge each', () => {
    assert.deepEqual(parseChallenges(['Basic realm="r"', 'Bearer realm="https://auth.example.com/token",service="s"']), [
      { scheme: 'basic', params: { realm: 'r' } },
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 's' } },
    ]);
  });

  test('scheme and parameter names are case-insensitive; values are kept as sent', () => {
    assert.deepEqual(parseChallenges('BEARER Realm="https://Auth.Example.com/Token", Service="Reg"'), [
      { scheme: 'bearer', params: { realm: 'https://Auth.Example.com/Token', service: 'Reg' } },
    ]);
  });

  test('unquoted values and escaped quotes', () => {
    assert.deepEqual(parseChallenges('Bearer realm=https://auth.example.com/token,service=reg'), [
      { scheme: 'bearer', params: { realm: 'https://auth.example.com/token', service: 'reg' } },
    ]);
    assert.deepEqual(parseChallenges('Basic realm="say \\"hi\\""'), [{ scheme: 'basic', params: { realm: 'say "hi"' } }]);
  });

  test('nothing, or garbage, yields no usable challenge and does not throw', () => {
    assert.deepEqual(parseChallenges(undefined), []);
    assert.deepEqual(parseChallenges(''), []);
    assert.deepEqual(parseChallenges([]), []);
    for (const junk of ['!!!', ',,,', '=', '"realm"', '\u0000\u0001', 'Bearer', 'Bearer "unterminated', 'x'.repeat(10_000)]) {
      const out = parseChallenges(junk);
      assert.ok(
        out.every((c) => c.params.realm === undefined),
        `${JSON.stringify(junk.slice(0, 20))} -> ${JSON.stringify(out).slice(0, 200)}`,
      );
    }
  });
});

// ---- RegistryAuthorizer against a real token server ----

interface SeenRequest {
  host: string;
  path: string;
  query: URLSearchParams;
  authorization?: string;
}

type Reply = (req: SeenRequest, n: number) => { status?: number; body: unknown };

const defaultReply: Reply = (_req, n) => ({ body: { token: `tok-${n}`, expires_in: 300 } });

let server: ReturnType<typeof createServer>;
let port: number;
let seen: SeenRequest[] = [];
let reply: Reply = defaultReply;
let dispatcher: Agent;

before(async () => {
  server = createServer((req: IncomingMessage, res: ServerResponse) => {
    const url = new URL(req.url ?? '/', 'http://x');
    const r: SeenRequest = { host: req.headers.host ?? '', path: url.pathname, query: url.searchParams, authorization: req.headers.authorization };
    seen.push(r);
    const { status = 200, body } = reply(r, seen.length);
    res.writeHead(status, { 'content-type': 'application/json' });
    res.end(typeof body === 'string' ? body : JSON.stringify(body));
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  port = (server.address() as AddressInfo).port;
  // Every *.test name resolves to the token server's loopback address.
  dispatcher = new Agent({
    connect: {
      lookup: (hostname, opts, cb) => {
        if (!hostname.endsWith('.test') && hostname !== '127.0.0.1') return cb(new Error(`unexpected host ${hostname}`), '', 4);
        if (opts.all) cb(null, [{ address: '127.0.0.1', family: 4 }]);
        else cb(null, '127.0.0.1', 4);
      },
    },
  });
});

after(async () => {
  await dispatcher.close();
  await new Promise<void>((resolve) => server.close(() => resolve()));
});

beforeEach(() => {
  seen = [];
  reply = defaultReply;
});

const SCOPE = 'repository:library/nginx:pull';
const OTHER_SCOPE = 'repository:library/alpine:pull';
const CREDS = { username: 'alice', password: 's3cret-pw' };
const BASIC = 'Basic ' + Buffer.from('alice:s3cret-pw').toString('base64');

function authorizer(opts: Partial<RegistryAuthorizerOptions> & { upstreamUrl: string }, logs: string[] = []): RegistryAuthorizer {
  return new RegistryAuthorizer({ dispatcher, log: createLogger('debug', (l) => logs.push(l)), timeoutMs: 5000, ...opts });
}

/** A Docker-Hub-style challenge whose realm is the token server under `host`. */
function challenge(host: string, scope = SCOPE) {
  return parseChallenges(`Bearer realm="http://${host}:${port}/token",service="registry.docker.io",scope="${scope}"`);
}

describe('RegistryAuthorizer (Bearer)', () => {
  test('before any challenge: no header, no token request', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test' });
    assert.equal(await a.header(SCOPE), undefined);
    assert.equal(seen.length, 0);
  });

  test('a challenge makes it fetch a token for the scope, anonymously without credentials', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test' });
    assert.equal(await a.onChallenge(SCOPE, challenge('auth.docker.test')), 'Bearer tok-1');
    assert.equal(seen.length, 1);
    assert.equal(seen[0].host, `auth.docker.test:${port}`);
    assert.equal(seen[0].path, '/token');
    assert.equal(seen[0].query.get('service'), 'registry.docker.io');
    assert.deepEqual(seen[0].query.getAll('scope'), [SCOPE]);
    assert.equal(seen[0].authorization, undefined);
  });

  test('tokens are cached per scope: a second header() makes no request', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test' });
    await a.onChallenge(SCOPE, challenge('auth.docker.test'));
    assert.equal(await a.header(SCOPE), 'Bearer tok-1');
    assert.equal(await a.header(SCOPE), 'Bearer tok-1');
    assert.equal(seen.length, 1);

    // Another scope needs its own token, fetched from the realm already learnt.
    assert.equal(await a.header(OTHER_SCOPE), 'Bearer tok-2');
    assert.equal(seen.length, 2);
    assert.deepEqual(seen[1].query.getAll('scope'), [OTHER_SCOPE]);
    assert.equal(await a.header(SCOPE), 'Bearer tok-1');
    assert.equal(await a.header(OTHER_SCOPE), 'Bearer tok-2');
    assert.equal(seen.length, 2);
  });

  test('a token is reused within its lifetime and refreshed once it has expired', async () => {
    let now = 1_700_000_000_000;
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test', now: () => now });
    await a.onChallenge(SCOPE, challenge('auth.docker.test')); // expires_in 300
    now += 60_000;
    assert.equal(await a.header(SCOPE), 'Bearer tok-1');
    assert.equal(seen.length, 1);
    now += 240_000; // 300 s after issue
    assert.equal(await a.header(SCOPE), 'Bearer tok-2');
    assert.equal(seen.length, 2);
    assert.equal(await a.header(SCOPE), 'Bearer tok-2');
    assert.equal(seen.length, 2);
  });

  test('no expires_in: the token is reused until invalidate()', async () => {
    reply = (_r, n) => ({ body: { token: `tok-${n}` } });
    let now = 1_700_000_000_000;
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test', now: () => now });
    await a.onChallenge(SCOPE, challenge('auth.docker.test'));
    now += 7 * 24 * 3_600_000;
    assert.equal(await a.header(SCOPE), 'Bearer tok-1');
    assert.equal(seen.length, 1);
    a.invalidate(SCOPE);
    assert.equal(await a.header(SCOPE), 'Bearer tok-2');
    assert.equal(seen.length, 2);
  });

  test('a token server answering access_token (OAuth2 style) works too', async () => {
    reply = () => ({ body: { access_token: 'oauth-tok', expires_in: 300 } });
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test' });
    assert.equal(await a.onChallenge(SCOPE, challenge('auth.docker.test')), 'Bearer oauth-tok');
  });

  test('concurrent header() calls for one scope make one token request', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test' });
    await a.onChallenge(SCOPE, challenge('auth.docker.test'));
    a.invalidate(SCOPE);
    reply = (_r, n) => ({ body: { token: `tok-${n}`, expires_in: 300 } });
    const headers = await Promise.all(Array.from({ length: 10 }, () => a.header(SCOPE)));
    assert.deepEqual(headers, Array(10).fill('Bearer tok-2'));
    assert.equal(seen.length, 2);
  });

  test('concurrent 401s for one scope make one token request', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test' });
    const headers = await Promise.all(Array.from({ length: 5 }, () => a.onChallenge(SCOPE, challenge('auth.docker.test'))));
    assert.deepEqual(headers, Array(5).fill('Bearer tok-1'));
    assert.equal(seen.length, 1);
  });

  test('token server failures become typed errors', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test', credentials: CREDS });
    reply = () => ({ status: 401, body: { errors: [] } });
    await assert.rejects(a.onChallenge(SCOPE, challenge('auth.docker.test')), (e: unknown) => e instanceof UpstreamUnauthorized && e.status === 401);
    reply = () => ({ status: 503, body: 'busy' });
    await assert.rejects(a.onChallenge(SCOPE, challenge('auth.docker.test')), UpstreamUnavailable);
    reply = () => ({ body: '<html>' });
    await assert.rejects(a.onChallenge(SCOPE, challenge('auth.docker.test')), UpstreamInvalid);
    reply = () => ({ body: { token: '' } });
    await assert.rejects(a.onChallenge(SCOPE, challenge('auth.docker.test')), UpstreamInvalid);
  });
});

describe('RegistryAuthorizer credentials', () => {
  test('sent as Basic to a realm on the upstream host', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS });
    assert.equal(await a.onChallenge(SCOPE, challenge('registry.example.test')), 'Bearer tok-1');
    assert.equal(seen[0].authorization, BASIC);
  });

  test("sent to a realm on the upstream's own site (Docker Hub: registry-1.docker.io / auth.docker.io)", async () => {
    const a = authorizer({ upstreamUrl: 'https://registry-1.docker.test', credentials: CREDS });
    await a.onChallenge(SCOPE, challenge('auth.docker.test'));
    assert.equal(seen[0].authorization, BASIC);
  });

  test('NOT sent to a realm on another host; the token is asked for anonymously and a warning logged', async () => {
    const logs: string[] = [];
    const a = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS }, logs);
    assert.equal(await a.onChallenge(SCOPE, challenge('tokens.elsewhere.test')), 'Bearer tok-1');
    assert.equal(seen.length, 1);
    assert.equal(seen[0].authorization, undefined);

    const ip = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS }, logs);
    await ip.onChallenge(SCOPE, challenge('127.0.0.1'));
    assert.equal(seen[1].authorization, undefined);

    const warnings = logs.map((l) => JSON.parse(l) as { level: string; realm?: string }).filter((l) => l.level === 'warn');
    assert.deepEqual(
      warnings.map((w) => w.realm),
      [`tokens.elsewhere.test:${port}`, `127.0.0.1:${port}`],
    );
    assert.ok(!logs.join('\n').includes(CREDS.password));
  });

  test('sent to another host when tokenRealms lists it (by host name or host:port)', async () => {
    const byName = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS, tokenRealms: ['tokens.elsewhere.test'] });
    await byName.onChallenge(SCOPE, challenge('tokens.elsewhere.test'));
    assert.equal(seen[0].authorization, BASIC);

    const byHostPort = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS, tokenRealms: [`127.0.0.1:${port}`] });
    await byHostPort.onChallenge(SCOPE, challenge('127.0.0.1'));
    assert.equal(seen[1].authorization, BASIC);

    // Listing one host trusts only that host.
    const other = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS, tokenRealms: ['tokens.elsewhere.test'] });
    await other.onChallenge(SCOPE, challenge('tokens.third.test'));
    assert.equal(seen[2].authorization, undefined);
  });

  /** Whether `upstreamUrl`'s credentials are offered to a realm on `realmHost` (which need not resolve). */
  async function offered(upstreamUrl: string, realmHost: string): Promise<boolean> {
    // The dispatcher resolves only *.test names, so the request to any other realm fails
    // either way; whether the credentials were withheld shows in the warning.
    const logs: string[] = [];
    const a = authorizer({ upstreamUrl, credentials: CREDS }, logs);
    await a.onChallenge(SCOPE, parseChallenges(`Bearer realm="http://${realmHost}/token"`)).catch(() => {});
    return !logs.some((l) => (JSON.parse(l) as { level: string }).level === 'warn');
  }

  test('trusted: realms under the upstream host\'s parent domain', async () => {
    assert.equal(await offered('https://registry-1.docker.io', 'auth.docker.io'), true);
    assert.equal(await offered('https://registry.example.co.uk', 'tokens.example.co.uk'), true);
  });

  test('NOT sent to another owner under a shared public suffix', async () => {
    assert.equal(await offered('https://registry.example.co.uk', 'tokens.attacker.co.uk'), false);
    assert.equal(await offered('https://ghcr.io', 'evil.io'), false);
    assert.equal(await offered('https://ghcr.io', 'auth.evil.io'), false);
    assert.equal(await offered('https://registry-1.docker.io', 'docker.io.evil.example'), false);
    assert.equal(await offered('https://registry-1.docker.io', 'evildocker.io'), false);
  });

  test(
    'NOT sent to a sibling when the upstream is itself a registrable domain under a two-label suffix',
    
    async () => {
      assert.equal(await offered('https://example.co.uk', 'tokens.attacker.co.uk'), false);
      assert.equal(await offered('https://alice.github.io', 'mallory.github.io'), false);
    },
  );
});

describe('RegistryAuthorizer (Basic)', () => {
  test('a Basic challenge answers with the configured credentials, for every scope, without a token request', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS });
    assert.equal(await a.onChallenge(SCOPE, parseChallenges('Basic realm="Registry Realm"')), BASIC);
    assert.equal(await a.header(SCOPE), BASIC);
    assert.equal(await a.header(OTHER_SCOPE), BASIC);
    assert.equal(seen.length, 0);
  });

  test('a Basic challenge without credentials gives no header', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry.example.test' });
    assert.equal(await a.onChallenge(SCOPE, parseChallenges('Basic realm="Registry Realm"')), undefined);
    assert.equal(await a.header(SCOPE), undefined);
    assert.equal(seen.length, 0);
  });

  test('Bearer is preferred when both are offered', async () => {
    const a = authorizer({ upstreamUrl: 'https://registry.example.test', credentials: CREDS });
    const both = parseChallenges(`Basic realm="r", Bearer realm="http://registry.example.test:${port}/token",service="s"`);
    assert.equal(await a.onChallenge(SCOPE, both), 'Bearer tok-1');
    assert.equal(seen[0].authorization, BASIC);
  });
});
