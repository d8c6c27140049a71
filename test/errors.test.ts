// The OCI error table, and the mapping from domain errors onto the code and status a client sees.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import {
  BlobNotFound,
  CredentialsUnavailable,
  DigestMismatch,
  InvalidDigest,
  InvalidName,
  InvalidReference,
  ManifestNotFound,
  OCI_ERROR_STATUS,
  OciError,
  RangeNotSatisfiable,
  RegmirrorError,
  RepositoryNotFound,
  SizeMismatch,
  toOciError,
  UnknownUpstream,
  Unsupported,
  UpstreamInvalid,
  UpstreamRateLimited,
  UpstreamUnauthorized,
  UpstreamUnavailable,
} from '../src/errors.js';

const DIGEST = `sha256:${'ab'.repeat(32)}`;

// The statuses of the distribution spec's error codes (and distribution's own extras).
const SPEC_STATUS: Record<string, number> = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 404,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  RANGE_INVALID: 416,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
};

describe('OciError', () => {
  test('every code in the table answers with its spec status', () => {
    assert.deepEqual(Object.keys(OCI_ERROR_STATUS).sort(), Object.keys(SPEC_STATUS).sort());
    for (const [code, status] of Object.entries(OCI_ERROR_STATUS)) {
      const err = new OciError(code as keyof typeof OCI_ERROR_STATUS, 'm');
      assert.equal(err.status, status, code);
      assert.equal(err.status, SPEC_STATUS[code], code);
      assert.equal(err.code, code);
    }
  });

  test('a status given explicitly wins over the table', () => {
    assert.equal(new OciError('UNAVAILABLE', 'm', { status: 502 }).status, 502);
  });

  test('the body is the spec shape; detail only when given', () => {
    assert.deepEqual(new OciError('BLOB_UNKNOWN', 'no such blob').toBody(), { errors: [{ code: 'BLOB_UNKNOWN', message: 'no such blob' }] });
    assert.deepEqual(new OciError('NAME_INVALID', 'bad', { detail: { name: 'X' } }).toBody(), {
      errors: [{ code: 'NAME_INVALID', message: 'bad', detail: { name: 'X' } }],
    });
    assert.deepEqual(new OciError('UNKNOWN', 'm').headers, {});
  });
});

describe('toOciError', () => {
  const cases: Array<[string, Error, string, number]> = [
    ['InvalidName', new InvalidName('invalid repository name "A"'), 'NAME_INVALID', 400],
    ['InvalidReference', new InvalidReference('invalid tag ".x"'), 'MANIFEST_INVALID', 400],
    ['InvalidDigest', new InvalidDigest('invalid digest "sha256:zz"'), 'DIGEST_INVALID', 400],
    ['UnknownUpstream', new UnknownUpstream('registry "evil.example" is not configured'), 'DENIED', 403],
    ['BlobNotFound', new BlobNotFound(DIGEST), 'BLOB_UNKNOWN', 404],
    ['ManifestNotFound', new ManifestNotFound('latest'), 'MANIFEST_UNKNOWN', 404],
    ['RepositoryNotFound', new RepositoryNotFound('library/nope'), 'NAME_UNKNOWN', 404],
    ['Unsupported', new Unsupported('uploads are not supported by a mirror'), 'UNSUPPORTED', 405],
    ['UpstreamUnauthorized 401', new UpstreamUnauthorized('refused', 401), 'UNAUTHORIZED', 401],
    ['UpstreamUnauthorized 403', new UpstreamUnauthorized('refused', 403), 'DENIED', 403],
    ['UpstreamRateLimited', new UpstreamRateLimited('slow down'), 'TOOMANYREQUESTS', 429],
    // Bad upstream bytes or no upstream: the gateway's fault, not the client's.
    ['DigestMismatch', new DigestMismatch(DIGEST, `sha256:${'cd'.repeat(32)}`), 'UNAVAILABLE', 502],
    ['SizeMismatch', new SizeMismatch(10, 9), 'UNAVAILABLE', 502],
    ['UpstreamInvalid', new UpstreamInvalid('manifest is not valid JSON'), 'UNAVAILABLE', 502],
    ['UpstreamUnavailable', new UpstreamUnavailable('connect ECONNREFUSED'), 'UNAVAILABLE', 502],
    ['CredentialsUnavailable', new CredentialsUnavailable('credential helper docker-credential-x is not on PATH'), 'UNAVAILABLE', 502],
    ['RangeNotSatisfiable', new RangeNotSatisfiable(100), 'RANGE_INVALID', 416],
  ];

  for (const [name, err, code, status] of cases) {
    test(`${name} → ${code} ${status}, keeping the message`, () => {
      const oci = toOciError(err);
      assert.ok(oci instanceof OciError);
      assert.equal(oci.code, code);
      assert.equal(oci.status, status);
      assert.equal(oci.message, err.message);
      assert.deepEqual(oci.toBody().errors[0], { code, message: err.message });
    });
  }

  test('UpstreamRateLimited with a retry time → Retry-After', () => {
    const oci = toOciError(new UpstreamRateLimited('Docker Hub pull rate limit', 30));
    assert.equal(oci.code, 'TOOMANYREQUESTS');
    assert.equal(oci.status, 429);
    assert.deepEqual(oci.headers, { 'retry-after': '30' });
    assert.deepEqual(toOciError(new UpstreamRateLimited('x')).headers, {}, 'no retry time, no header');
    assert.deepEqual(toOciError(new UpstreamRateLimited('x', 0)).headers, { 'retry-after': '0' });
  });

  test('RangeNotSatisfiable → Content-Range naming the size', () => {
    assert.deepEqual(toOciError(new RangeNotSatisfiable(12345)).headers, { 'content-range': 'bytes */12345' });
  });

  test('an OciError passes through unchanged', () => {
    const oci = new OciError('SIZE_INVALID', 'm', { headers: { a: 'b' } });
    assert.equal(toOciError(oci), oci);
  });

  test('an unknown error becomes 500 UNKNOWN and says nothing of its internals', () => {
    const secret = 'postgres://admin:hunter2-SECRET@db.internal/regmirror';
    for (const thrown of [
      new Error(`connect failed: ${secret}`),
      new TypeError(`Cannot read properties of undefined (${secret})`),
      new RegmirrorError('SOMETHING_NEW', `unmapped domain error ${secret}`),
      Object.assign(new Error('x'), { code: 'EACCES', path: secret }),
      secret,
      { message: secret },
      undefined,
    ]) {
      const oci = toOciError(thrown);
      assert.equal(oci.code, 'UNKNOWN');
      assert.equal(oci.status, 500);
      const rendered = JSON.stringify(oci.toBody()) + JSON.stringify(oci.headers);
      assert.ok(!rendered.includes('hunter2'), rendered);
      assert.ok(!oci.message.includes('hunter2'));
    }
  });

  test('domain errors carry a stable code and their class name', () => {
    const err = new BlobNotFound(DIGEST);
    assert.equal(err.code, 'BLOB_NOT_FOUND');
    assert.equal(err.name, 'BlobNotFound');
    assert.ok(err.message.includes(DIGEST));
    assert.ok(err instanceof RegmirrorError);
  });
});
