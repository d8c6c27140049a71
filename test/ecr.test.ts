// Amazon ECR upstreams: GetAuthorizationToken through the real AWS SDK against a fake ECR
// API on loopback that checks the SigV4 signature, the token used as Basic auth against a
// FakeUpstream that accepts only the latest password, refresh before expiry, on a 401 and on
// ECR's "expired" 403, one refresh at a time, nothing secret in the logs, and the config keys.
import assert from 'node:assert/strict';
import { createHash, createHmac, randomBytes } from 'node:crypto';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { after, before, beforeEach, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { ConfigError, DEFAULTS, parseConfig, type UpstreamConfig } from '../src/config.js';
import { UpstreamInvalid, UpstreamUnauthorized, UpstreamUnavailable } from '../src/errors.js';
import { createLogger } from '../src/log.js';
import { UpstreamClient } from '../src/upstream/client.js';
import { EcrAuthorizer, REFRESH_COOLDOWN_MS, type EcrAuthorizationData } from '../src/upstream/ecr.js';
import { errorCode, get, startMirror, type Mirror } from './helpers.js';

// ---- AWS credentials from the environment only: the provider chain must never reach the network.

const ACCESS_KEY_ID = 'AKIDREGMIRRORTEST01';
const SECRET_ACCESS_KEY = 'regmirror-test-secret-key/' + randomBytes(8).toString('hex');
const REGION = 'us-east-1';
const awsDir = mkdtempSync(join(tmpdir(), 'regmirror-aws-'));
writeFileSync(join(awsDir, 'config'), '');
writeFileSync(join(awsDir, 'credentials'), '');
for (const name of Object.keys(process.env)) {
  if (name.startsWith('AWS_')) delete process.env[name];
}
Object.assign(process.env, {
  AWS_ACCESS_KEY_ID: ACCESS_KEY_ID,
  AWS_SECRET_ACCESS_KEY: SECRET_ACCESS_KEY,
  AWS_EC2_METADATA_DISABLED: 'true',
  AWS_CONFIG_FILE: join(awsDir, 'config'),
  AWS_SHARED_CREDENTIALS_FILE: join(awsDir, 'credentials'),
  // The SDK warns once per process on Node < 22; that is not what these tests are about.
  AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED: 'true',
});
after(() => rmSync(awsDir, { recursive: true, force: true }));

const sha256hex = (b: string | Buffer) => createHash('sha256').update(b).digest('hex');
const hmac = (key: string | Buffer, data: string) => createHmac('sha256', key).update(data).digest();

/**
 * Checks an AWS Signature Version 4 the way the service does: rebuilds the canonical request
 * from what arrived and compares signatures. Returns the problem, or undefined.
 */
function sigV4Problem(req: IncomingMessage, body: Buffer): string | undefined {
  const auth = req.headers.authorization ?? '';
  const m = /^AWS4-HMAC-SHA256 Credential=([^/]+)\/(\d{8})\/([^/]+)\/([^/]+)\/aws4_request, SignedHeaders=([a-z0-9;-]+), Signature=([0-9a-f]{64})$/.exec(auth);
  if (!m) return `not a SigV4 Authorization header: ${auth.slice(0, 40)}`;
  const [, akid, date, region, service, signedHeaders, signature] = m;
  if (akid !== ACCESS_KEY_ID) return `signed with access key ${akid}`;
  if (region !== REGION || service !== 'ecr') return `credential scope ${region}/${service}`;
  const amzDate = String(req.headers['x-amz-date'] ?? '');
  if (!amzDate.startsWith(date)) return 'x-amz-date does not match the credential date';
  const names = signedHeaders.split(';');
  for (const required of ['host', 'x-amz-date', 'x-amz-target', 'content-type']) {
    if (!names.includes(required)) return `${required} is not signed`;
  }
  const canonicalHeaders = names.map((n) => `${n}:${String(req.headers[n] ?? '').trim().replace(/\s+/g, ' ')}\n`).join('');
  const canonicalRequest = [req.method, new URL(req.url ?? '/', 'http://x').pathname, '', canonicalHeaders, signedHeaders, sha256hex(body)].join('\n');
  const scope = `${date}/${region}/${service}/aws4_request`;
  const stringToSign = ['AWS4-HMAC-SHA256', amzDate, scope, sha256hex(canonicalRequest)].join('\n');
  const key = ['aws4_request'].reduce((k, part) => hmac(k, part), hmac(hmac(hmac('AWS4' + SECRET_ACCESS_KEY, date), region), service));
  if (createHmac('sha256', key).update(stringToSign).digest('hex') !== signature) return 'signature does not match';
  return undefined;
}

/** The ECR API's GetAuthorizationToken on 127.0.0.1, on the test's clock. */
class FakeEcr {
  url = '';
  calls = 0;
  readonly problems: string[] = [];
  readonly passwords: string[] = [];
  readonly bodies: unknown[] = [];
  ttlMs = 15 * 60_000;
  delayMs = 0;
  /** When set, answered instead of a token: [status, __type]. */
  fail?: [number, string];
  onIssue: (password: string) => void = () => {};
  #server?: Server;

  constructor(private readonly clock: () => number) {}

  async start(): Promise<this> {
    this.#server = createServer((req, res) => void this.#handle(req, res));
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server?.close(() => resolve());
      this.#server?.closeAllConnections();
    });
  }

  async #handle(req: IncomingMessage, res: ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    this.calls++;
    const answer = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/x-amz-json-1.1', 'x-amzn-requestid': randomBytes(8).toString('hex') });
      res.end(JSON.stringify(value));
    };
    const problem =
      req.method !== 'POST'
        ? `method ${req.method}`
        : req.headers['x-amz-target'] !== 'AmazonEC2ContainerRegistry_V20150921.GetAuthorizationToken'
          ? `X-Amz-Target ${req.headers['x-amz-target']}`
          : req.headers['content-type'] !== 'application/x-amz-json-1.1'
            ? `content-type ${req.headers['content-type']}`
            : sigV4Problem(req, body);
    if (problem) {
      this.problems.push(problem);
      return answer(400, { __type: 'InvalidSignatureException', message: problem });
    }
    this.bodies.push(JSON.parse(body.toString() || '{}'));
    await delay(this.delayMs);
    if (this.fail) return answer(this.fail[0], { __type: this.fail[1], message: 'User: arn:aws:iam::123456789012:user/ci is not authorized to perform: ecr:GetAuthorizationToken' });
    const password = `ecr-password-${this.passwords.length + 1}-${randomBytes(12).toString('hex')}`;
    this.passwords.push(password);
    this.onIssue(password);
    answer(200, {
      authorizationData: [
        {
          authorizationToken: Buffer.from(`AWS:${password}`).toString('base64'),
          expiresAt: (this.clock() + this.ttlMs) / 1000,
          proxyEndpoint: 'https://123456789012.dkr.ecr.us-east-1.amazonaws.com',
        },
      ],
    });
  }
}

const ECR_NAME = '123456789012.dkr.ecr.us-east-1.amazonaws.com';

describe('an ECR upstream through the mirror', () => {
  let clock = Date.UTC(2026, 0, 1);
  let ecr: FakeEcr;
  let up: FakeUpstream;
  let m: Mirror;
  let img: FixtureImage;

  /** Registry requests since `from`, with the password each carried. */
  const passwordsSeen = (from = 0) =>
    up.requests
      .slice(from)
      .filter((r) => r.origin === 'registry')
      .map((r) => Buffer.from(String(r.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().replace(/^AWS:/, ''));
  const pull = (tag: string) => get(`${m.url}/v2/${img.name}/manifests/${tag}`);

  before(async () => {
    img = await singleImage({ name: 'team/app', tag: 'v1', seed: 'ecr' });
    ecr = await new FakeEcr(() => clock).start();
    // The registry accepts only the password ECR issued last.
    up = await FakeUpstream.start({ auth: 'basic', credentials: { username: 'AWS', password: 'nothing-issued-yet' }, now: () => clock });
    ecr.onIssue = (password) => up.setCredentials({ username: 'AWS', password });
    up.addImage(img);
    for (let i = 0; i < 50; i++) up.setTag(img.name, `t${i}`, img.root.digest);
    m = await startMirror({
      upstreams: [{ name: ECR_NAME, url: up.url, type: 'ecr', region: REGION, endpoint: ecr.url, tagTtlMs: 0 }],
      defaultUpstream: ECR_NAME,
      now: () => clock,
    });
  });
  after(async () => {
    await m?.stop();
    await up?.close();
    await ecr?.close();
  });
  beforeEach(() => {
    ecr.delayMs = 0;
  });

  test('the first pull obtains a token with one signed GetAuthorizationToken call and sends it as Basic auth', async () => {
    const r = await pull('v1');
    assert.equal(r.status, 200, r.body.toString());
    assert.deepEqual(r.body, img.root.bytes);
    assert.equal(ecr.calls, 1);
    assert.deepEqual(ecr.problems, []);
    assert.deepEqual(ecr.bodies, [{}], 'no registryId configured: no registryIds sent');
    // The token was fetched before the first registry request: no 401 round trip.
    assert.deepEqual(passwordsSeen(), [ecr.passwords[0]]);
  });

  test('a token nearing its expiry is replaced before it is used again', async () => {
    // 15 min lifetime: refreshed in its last quarter (3 min 45 s), here with 3 min left.
    clock += 12 * 60_000;
    const mark = up.requests.length;
    const r = await pull('v1');
    assert.equal(r.status, 200);
    assert.equal(ecr.calls, 2, 'a second GetAuthorizationToken');
    assert.deepEqual(passwordsSeen(mark), [ecr.passwords[1]], 'the registry never saw the old password');
    assert.equal(up.counters.total, passwordsSeen().length);
  });

  test('a token already past its expiry is replaced before use', async () => {
    clock += 60 * 60_000;
    const mark = up.requests.length;
    assert.equal((await pull('v1')).status, 200);
    assert.equal(ecr.calls, 3);
    assert.deepEqual(passwordsSeen(mark), [ecr.passwords[2]]);
  });

  test('50 concurrent pulls that need a new token cause exactly one GetAuthorizationToken', async () => {
    clock += 14 * 60_000;
    ecr.delayMs = 200; // all of them wait on the same call
    const before = ecr.calls;
    const mark = up.requests.length;
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => pull(`t${i}`)));
    assert.deepEqual(results.map((r) => r.status), Array(50).fill(200));
    assert.equal(ecr.calls - before, 1);
    const latest = ecr.passwords.at(-1)!;
    assert.ok(passwordsSeen(mark).length >= 50);
    assert.ok(passwordsSeen(mark).every((p) => p === latest), 'every registry request carried the new password');
  });

  test('a 401 from the registry forces a new token, and the pull succeeds with it', async () => {
    clock += 60_000; // past the cooldown that protects a just-fetched token
    const before = ecr.calls;
    const stale = ecr.passwords.at(-1)!;
    up.setCredentials({ username: 'AWS', password: 'rotated-elsewhere' }); // the registry no longer takes ours
    const mark = up.requests.length;
    const r = await pull('v1');
    assert.equal(r.status, 200);
    assert.equal(ecr.calls - before, 1);
    assert.deepEqual(passwordsSeen(mark), [stale, ecr.passwords.at(-1)!], 'refused once, then retried with the new token');
  });

  test('50 concurrent pulls refused with 401 share one new token', async () => {
    clock += 60_000;
    ecr.delayMs = 200;
    const before = ecr.calls;
    up.setCredentials({ username: 'AWS', password: 'rotated-again' });
    const results = await Promise.all(Array.from({ length: 50 }, (_, i) => pull(`t${i}`)));
    assert.deepEqual(results.map((r) => r.status), Array(50).fill(200));
    assert.equal(ecr.calls - before, 1);
  });

  test('an ECR API that refuses the AWS identity gives the client DENIED, without the details', async () => {
    clock += 24 * 3_600_000;
    ecr.fail = [400, 'AccessDeniedException'];
    try {
      const r = await pull('v1');
      assert.equal(r.status, 403);
      assert.equal(errorCode(r), 'DENIED');
      assert.doesNotMatch(r.body.toString(), /arn:aws/);
    } finally {
      ecr.fail = undefined;
    }
    assert.equal((await pull('v1')).status, 200, 'and recovers once the API answers');
  });

  test('the logs never hold a password or token, and do record the refreshes', () => {
    assert.ok(ecr.passwords.length >= 6);
    const logs = m.logs.join('\n');
    for (const password of ecr.passwords) {
      assert.ok(!logs.includes(password), 'a password reached the log');
      assert.ok(!logs.includes(Buffer.from(`AWS:${password}`).toString('base64')), 'a token reached the log');
    }
    assert.ok(!logs.includes(SECRET_ACCESS_KEY));
    assert.match(logs, /obtained an ECR authorization/);
    assert.deepEqual(ecr.problems, [], 'every call was correctly signed');
  });
});

/** A registry that behaves like ECR about passwords: expired ones get 403 DENIED "...has expired". */
class EcrLikeRegistry {
  url = '';
  current?: string;
  readonly expired = new Set<string>();
  readonly seen: Array<{ method: string; path: string; status: number }> = [];
  #server?: Server;

  async start(): Promise<this> {
    this.#server = createServer((req, res) => {
      const password = Buffer.from((req.headers.authorization ?? '').replace(/^Basic /, ''), 'base64').toString().replace(/^AWS:/, '');
      const reply = (status: number, body: string, type = 'application/json') => {
        this.seen.push({ method: req.method ?? '', path: req.url ?? '', status });
        res.writeHead(status, { 'content-type': type, 'content-length': Buffer.byteLength(body), ...(status === 200 ? { 'docker-content-digest': 'sha256:' + sha256hex(body) } : {}) });
        res.end(body);
      };
      const denied = (message: string) => reply(403, JSON.stringify({ errors: [{ code: 'DENIED', message }] }));
      if (this.expired.has(password)) return denied('Your authorization token has expired. Reauthenticate and try again.');
      if (password !== this.current) return reply(401, JSON.stringify({ errors: [{ code: 'UNAUTHORIZED', message: 'not authorized' }] }));
      if (req.url?.startsWith('/v2/forbidden/')) return denied('User: arn:aws:sts::123456789012:assumed-role/x is not authorized to perform: ecr:BatchGetImage');
      reply(200, '{"schemaVersion":2}', 'application/vnd.oci.image.manifest.v1+json');
    });
    await new Promise<void>((resolve) => this.#server!.listen(0, '127.0.0.1', resolve));
    this.url = `http://127.0.0.1:${(this.#server.address() as AddressInfo).port}`;
    return this;
  }

  async close(): Promise<void> {
    await new Promise<void>((resolve) => {
      this.#server?.close(() => resolve());
      this.#server?.closeAllConnections();
    });
  }
}

describe("UpstreamClient and ECR's 403 for an expired password", () => {
  let clock = Date.UTC(2026, 1, 1);
  let ecr: FakeEcr;
  let reg: EcrLikeRegistry;
  let client: UpstreamClient;
  const lines: string[] = [];

  before(async () => {
    ecr = await new FakeEcr(() => clock).start();
    reg = await new EcrLikeRegistry().start();
    ecr.onIssue = (password) => (reg.current = password);
    const config: UpstreamConfig = { ...DEFAULTS.upstreams[0], name: ECR_NAME, url: reg.url, aliases: [], type: 'ecr', region: REGION, registryId: '123456789012', endpoint: ecr.url };
    client = new UpstreamClient(config, { log: createLogger('debug', (l) => lines.push(l)), now: () => clock });
  });
  after(async () => {
    await client?.close();
    await reg?.close();
    await ecr?.close();
  });

  /** The registry declares the current password expired; ECR's next one replaces it. */
  const expireCurrent = () => {
    reg.expired.add(reg.current!);
    reg.current = undefined;
    clock += 60_000;
  };

  test('GET: a 403 saying the token expired gets a new token and one retry', async () => {
    assert.equal((await client.getManifest('team/app', 'v1', 0)).bytes.toString(), '{"schemaVersion":2}');
    assert.equal(ecr.calls, 1);
    assert.deepEqual(ecr.bodies, [{ registryIds: ['123456789012'] }]);
    expireCurrent();
    const mark = reg.seen.length;
    await client.getManifest('team/app', 'v1', 0);
    assert.equal(ecr.calls, 2);
    assert.deepEqual(reg.seen.slice(mark).map((s) => s.status), [403, 200]);
  });

  test('HEAD: a 403 (no body to read) is taken as possibly expired and retried with a new token', async () => {
    expireCurrent();
    const mark = reg.seen.length;
    const head = await client.headManifest('team/app', 'v1', 0);
    assert.match(head.digest ?? '', /^sha256:/);
    assert.equal(ecr.calls, 3);
    assert.deepEqual(reg.seen.slice(mark).map((s) => s.status), [403, 200]);
  });

  test('a 403 that is not about expiry is not retried; the token is renewed on the next request', async () => {
    clock += 60_000;
    const mark = reg.seen.length;
    await assert.rejects(client.getManifest('forbidden/app', 'v1', 0), (e: unknown) => e instanceof UpstreamUnauthorized && e.status === 403);
    assert.equal(ecr.calls, 3, 'no GetAuthorizationToken for a plain DENIED');
    assert.deepEqual(reg.seen.slice(mark).map((s) => s.status), [403]);
    await client.getManifest('team/app', 'v1', 0);
    assert.equal(ecr.calls, 4, 'invalidate(): the next request fetched a new token');
  });

  test('a HEAD 403 right after a refresh is not retried with the same token', async () => {
    const mark = reg.seen.length;
    await assert.rejects(client.headManifest('forbidden/app', 'v1', 0), UpstreamUnauthorized);
    assert.deepEqual(reg.seen.slice(mark).map((s) => s.status), [403]);
    assert.equal(ecr.calls, 4, 'the token is younger than the cooldown');
  });

  test('nothing secret was logged', () => {
    const logs = lines.join('\n');
    for (const p of ecr.passwords) assert.ok(!logs.includes(p));
    assert.doesNotMatch(logs, /ecr-password/);
  });
});

describe('EcrAuthorizer', () => {
  const silent = createLogger('error', () => {});
  const token = (n: number) => Buffer.from(`AWS:pw-${n}`).toString('base64');

  /** An authorizer on a manual clock whose token source is a counter. */
  function setup(lifetimeMs: number | undefined, opts: { delayMs?: number } = {}) {
    const t = { now: 1_000_000_000, calls: 0, fail: undefined as Error | undefined };
    const a = new EcrAuthorizer({
      upstream: 'ecr.test',
      region: REGION,
      log: silent,
      now: () => t.now,
      fetchToken: async (): Promise<EcrAuthorizationData> => {
        const n = ++t.calls;
        if (opts.delayMs) await delay(opts.delayMs);
        if (t.fail) throw t.fail;
        return { authorizationToken: token(n), expiresAt: lifetimeMs === undefined ? undefined : t.now + lifetimeMs };
      },
    });
    return { a, t };
  }

  test('a 12-hour token is reused until one hour before it expires', async () => {
    const { a, t } = setup(12 * 3_600_000);
    const start = t.now;
    assert.equal(await a.header('s'), `Basic ${token(1)}`);
    t.now = start + 11 * 3_600_000 - 1;
    assert.equal(await a.header('other-scope'), `Basic ${token(1)}`, 'one token for every scope');
    t.now = start + 11 * 3_600_000;
    assert.equal(await a.header('s'), `Basic ${token(2)}`);
  });

  test('a short-lived token is refreshed in its last quarter', async () => {
    const { a, t } = setup(20 * 60_000);
    const start = t.now;
    await a.header('s');
    t.now = start + 15 * 60_000 - 1;
    await a.header('s');
    assert.equal(t.calls, 1);
    t.now = start + 15 * 60_000;
    await a.header('s');
    assert.equal(t.calls, 2);
  });

  test('an answer without expiresAt is taken as 12 hours', async () => {
    const { a, t } = setup(undefined);
    const start = t.now;
    await a.header('s');
    t.now = start + 11 * 3_600_000 - 1;
    await a.header('s');
    assert.equal(t.calls, 1);
    t.now = start + 11 * 3_600_000;
    await a.header('s');
    assert.equal(t.calls, 2);
  });

  test('an expiry already past (a skewed clock) does not make every request refresh', async () => {
    const { a, t } = setup(-60_000);
    await a.header('s');
    await a.header('s');
    assert.equal(t.calls, 1);
    t.now += REFRESH_COOLDOWN_MS;
    await a.header('s');
    assert.equal(t.calls, 2);
  });

  test('concurrent callers share one refresh', async () => {
    const { a, t } = setup(12 * 3_600_000, { delayMs: 50 });
    const headers = await Promise.all(Array.from({ length: 100 }, () => a.header('s')));
    assert.equal(t.calls, 1);
    assert.ok(headers.every((h) => h === `Basic ${token(1)}`));
    t.now += REFRESH_COOLDOWN_MS;
    const challenged = await Promise.all(Array.from({ length: 100 }, () => a.onChallenge('s', [])));
    assert.equal(t.calls, 2);
    assert.ok(challenged.every((h) => h === `Basic ${token(2)}`));
  });

  test('onChallenge refreshes, except within the cooldown after a refresh', async () => {
    const { a, t } = setup(12 * 3_600_000);
    await a.header('s');
    assert.equal(await a.onChallenge('s', []), `Basic ${token(1)}`, 'a late 401 for the previous token');
    t.now += REFRESH_COOLDOWN_MS;
    assert.equal(await a.onChallenge('s', []), `Basic ${token(2)}`);
  });

  test('invalidate makes the next header() refresh', async () => {
    const { a, t } = setup(12 * 3_600_000);
    await a.header('s');
    t.now += REFRESH_COOLDOWN_MS;
    a.invalidate('s');
    assert.equal(await a.header('s'), `Basic ${token(2)}`);
    assert.equal(await a.header('s'), `Basic ${token(2)}`);
    assert.equal(t.calls, 2);
  });

  test('when a refresh fails, a still-valid token is used and the API is asked again only later', async () => {
    const { a, t } = setup(20 * 60_000);
    const start = t.now;
    await a.header('s');
    t.now = start + 16 * 60_000; // in the last quarter
    t.fail = Object.assign(new Error('boom'), { name: 'ServerException', $fault: 'server', $metadata: { httpStatusCode: 500 } });
    assert.equal(await a.header('s'), `Basic ${token(1)}`);
    assert.equal(await a.header('s'), `Basic ${token(1)}`);
    assert.equal(t.calls, 2, 'not asked again at once');
    t.now = start + 21 * 60_000; // expired now
    await assert.rejects(a.header('s'), UpstreamUnavailable);
    t.fail = undefined;
    assert.equal(await a.header('s'), `Basic ${token(4)}`);
  });

  test('SDK errors become domain errors', async () => {
    const cases: Array<[Error, (e: unknown) => boolean]> = [
      [Object.assign(new Error('Could not load credentials from any providers'), { name: 'CredentialsProviderError' }), (e) => e instanceof UpstreamUnauthorized && e.status === 401],
      [Object.assign(new Error('User: arn:aws:iam::1:user/x'), { name: 'AccessDeniedException', $fault: 'client', $metadata: { httpStatusCode: 400 } }), (e) => e instanceof UpstreamUnauthorized && e.status === 403 && !/arn:/.test(e.message)],
      [Object.assign(new Error('Rate exceeded'), { name: 'ThrottlingException', $fault: 'client', $metadata: { httpStatusCode: 400 } }), (e) => e instanceof UpstreamUnavailable],
      [Object.assign(new Error('connect ECONNREFUSED'), { code: 'ECONNREFUSED' }), (e) => e instanceof UpstreamUnavailable],
    ];
    for (const [err, check] of cases) {
      const { a, t } = setup(12 * 3_600_000);
      t.fail = err;
      await assert.rejects(a.header('s'), check, err.name);
    }
  });

  test('a token that is not base64 user:password is refused', async () => {
    const a = new EcrAuthorizer({ upstream: 'ecr.test', region: REGION, log: silent, fetchToken: async () => ({ authorizationToken: 'not base64!' }) });
    await assert.rejects(a.header('s'), UpstreamInvalid);
  });
});

describe('ECR upstream config', () => {
  const yaml = (lines: string[]) => ['upstreams:', `  ${ECR_NAME}:`, `    url: https://${ECR_NAME}`, ...lines.map((l) => `    ${l}`)].join('\n');
  function refuses(lines: string[], key: string, problem: RegExp): void {
    assert.throws(
      () => parseConfig(yaml(lines), {}),
      (err: unknown) => err instanceof ConfigError && err.message.includes(`config: upstreams.${ECR_NAME}.${key}:`) && problem.test(err.message),
    );
  }

  test('type: ecr with region, registryId and endpoint', () => {
    const cfg = parseConfig(yaml(['type: ecr', 'region: ${REGION}', 'registryId: "012345678901"', 'endpoint: https://api.ecr.us-east-1.amazonaws.com/']), { REGION: 'eu-west-1' });
    const u = cfg.upstreams[0];
    assert.equal(u.type, 'ecr');
    assert.equal(u.region, 'eu-west-1');
    assert.equal(u.registryId, '012345678901');
    assert.equal(u.endpoint, 'https://api.ecr.us-east-1.amazonaws.com');
  });

  test('only the region is required', () => {
    const u = parseConfig(yaml(['type: ecr', 'region: us-gov-west-1']), {}).upstreams[0];
    assert.deepEqual([u.type, u.region, u.registryId, u.endpoint], ['ecr', 'us-gov-west-1', undefined, undefined]);
  });

  test('a plain registry carries no ECR keys, explicit or not', () => {
    for (const lines of [[], ['type: registry']]) {
      const u = parseConfig(yaml(lines), {}).upstreams[0];
      for (const key of ['type', 'region', 'registryId', 'endpoint']) assert.ok(!(key in u), key);
    }
  });

  test('mistakes name their key', () => {
    refuses(['type: gcr'], 'type', /must be one of registry, ecr/);
    refuses(['type: ecr'], 'region', /required for type: ecr/);
    refuses(['type: ecr', 'region: US-EAST-1'], 'region', /AWS region/);
    refuses(['type: ecr', 'region: useast1'], 'region', /AWS region/);
    refuses(['type: ecr', 'region: us-east-1', 'registryId: 12345'], 'registryId', /12-digit/);
    refuses(['type: ecr', 'region: us-east-1', 'registryId: 012345678901'], 'registryId', /12-digit.*quote/); // YAML drops the 0
    refuses(['type: ecr', 'region: us-east-1', 'endpoint: api.ecr.example'], 'endpoint', /not a URL/);
    refuses(['type: ecr', 'region: us-east-1', 'endpoint: ftp://api.ecr.example'], 'endpoint', /http or https/);
    refuses(['type: ecr', 'region: us-east-1', 'endpoint: https://api.ecr.example/?x=1'], 'endpoint', /no query/);
    refuses(['type: ecr', 'region: us-east-1', 'credentials: {username: AWS, password: x}'], 'credentials', /not used with type: ecr/);
    refuses(['region: us-east-1'], 'region', /only applies to type: ecr/);
    refuses(['type: registry', 'endpoint: https://x.example'], 'endpoint', /only applies to type: ecr/);
  });
});
