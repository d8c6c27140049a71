// The distribution-spec grammar: /v2/ path routing, repository names, tags and digests,
// and the streaming digest verifier that guards every publish.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { describe, test } from 'node:test';
import { DigestMismatch, InvalidDigest, InvalidName, InvalidReference, SizeMismatch, UnsupportedDigest } from '../src/errors.js';
import { DigestVerifier, digestHex, digestOf, isDigest, parseDigest } from '../src/oci/digest.js';
import { dockerHubName, MAX_NAME_LENGTH, parseManifestRef, parseV2Path, refString, validateName } from '../src/oci/reference.js';

const HEX = 'a3ed95caeb02ffe68cdd9fd84406680ae93d633cb16422d00e8a7c22955b46d4';
const DIGEST = `sha256:${HEX}`;

describe('parseV2Path', () => {
  test('the base endpoint, with and without the trailing slash', () => {
    assert.deepEqual(parseV2Path('/v2/'), { kind: 'base' });
    assert.deepEqual(parseV2Path('/v2'), { kind: 'base' });
  });

  test('manifests, blobs and referrers of a one-component name', () => {
    assert.deepEqual(parseV2Path('/v2/nginx/manifests/latest'), { kind: 'manifest', name: 'nginx', reference: 'latest' });
    assert.deepEqual(parseV2Path(`/v2/nginx/blobs/${DIGEST}`), { kind: 'blob', name: 'nginx', reference: DIGEST });
    assert.deepEqual(parseV2Path(`/v2/nginx/referrers/${DIGEST}`), { kind: 'referrers', name: 'nginx', reference: DIGEST });
  });

  test('names with slashes keep every component', () => {
    assert.deepEqual(parseV2Path('/v2/library/nginx/manifests/1.27'), { kind: 'manifest', name: 'library/nginx', reference: '1.27' });
    assert.deepEqual(parseV2Path(`/v2/ghcr.io/org/team/app/blobs/${DIGEST}`), {
      kind: 'blob',
      name: 'ghcr.io/org/team/app',
      reference: DIGEST,
    });
  });

  test('a repository whose name contains a route keyword is read from the end', () => {
    assert.deepEqual(parseV2Path('/v2/a/manifests/b/manifests/latest'), { kind: 'manifest', name: 'a/manifests/b', reference: 'latest' });
    assert.deepEqual(parseV2Path(`/v2/a/manifests/b/blobs/${DIGEST}`), { kind: 'blob', name: 'a/manifests/b', reference: DIGEST });
    assert.deepEqual(parseV2Path(`/v2/x/blobs/y/blobs/${DIGEST}`), { kind: 'blob', name: 'x/blobs/y', reference: DIGEST });
    assert.deepEqual(parseV2Path('/v2/x/blobs/y/manifests/v1'), { kind: 'manifest', name: 'x/blobs/y', reference: 'v1' });
    assert.deepEqual(parseV2Path('/v2/x/tags/list/tags/list'), { kind: 'tags', name: 'x/tags/list' });
  });

  test('tags/list', () => {
    assert.deepEqual(parseV2Path('/v2/library/nginx/tags/list'), { kind: 'tags', name: 'library/nginx' });
    assert.deepEqual(parseV2Path('/v2/nginx/tags/list'), { kind: 'tags', name: 'nginx' });
  });

  test('paths that are no pull-API resource', () => {
    for (const path of [
      '/',
      '',
      '/v1/nginx/manifests/latest',
      '/v2x',
      '/v22/nginx/manifests/latest',
      '/v2/nginx',
      '/v2/nginx/manifests',
      '/v2/tags/list', // no name at all
      '/v2/nginx/tags/other',
      '/v2/nginx/tags/list/extra',
      '/v2/nginx/uploads/abc',
      '/v2/nginx/manifests/latest/',
      '/v2/_catalog',
      '/manifests/latest',
    ]) {
      assert.equal(parseV2Path(path), undefined, path);
    }
  });
});

describe('validateName', () => {
  test('accepts names of the spec grammar and returns them', () => {
    for (const name of ['library/nginx', 'a.b_c__d-e/f--g', 'nginx', 'a', '0', 'org/team/app', 'a---b', 'x/y/z/w/v']) {
      assert.equal(validateName(name), name, name);
    }
  });

  test(`accepts exactly ${MAX_NAME_LENGTH} characters and refuses one more`, () => {
    assert.equal(MAX_NAME_LENGTH, 255);
    const longest = `${'a'.repeat(127)}/${'b'.repeat(127)}`;
    assert.equal(longest.length, 255);
    assert.equal(validateName(longest), longest);
    assert.equal(validateName('c'.repeat(255)), 'c'.repeat(255));
    assert.throws(() => validateName('c'.repeat(256)), InvalidName);
    assert.throws(() => validateName(`${longest}b`), InvalidName);
    assert.throws(() => validateName('d'.repeat(10_000)), InvalidName);
  });

  test('refuses names outside the grammar', () => {
    for (const name of [
      '',
      'Library/nginx',
      'library/Nginx',
      'NGINX',
      '..',
      'a/../b',
      'a/./b',
      '.a',
      'a.',
      'a//b',
      '/a',
      'a/',
      '-a',
      'a-',
      '_a',
      'a_',
      'a___b',
      'a..b',
      '%2e%2e',
      'a/%2e%2e/b',
      'a b',
      'a:b',
      'a@b',
      'a\\b',
      'ümlaut',
    ]) {
      assert.throws(() => validateName(name), InvalidName, JSON.stringify(name));
    }
  });

  test('the error says what was wrong, and carries the domain code', () => {
    assert.throws(() => validateName(''), (err: unknown) => err instanceof InvalidName && err.code === 'INVALID_NAME' && /empty/.test(err.message));
    assert.throws(() => validateName('x'.repeat(300)), (err: unknown) => err instanceof InvalidName && /255/.test(err.message));
    assert.throws(() => validateName('Bad/Name'), (err: unknown) => err instanceof InvalidName && err.message.includes('Bad/Name'));
  });
});

describe('dockerHubName', () => {
  test('an official image gets library/, a namespaced one is kept', () => {
    assert.equal(dockerHubName('nginx'), 'library/nginx');
    assert.equal(dockerHubName('bitnami/redis'), 'bitnami/redis');
    assert.equal(dockerHubName('library/nginx'), 'library/nginx');
  });
});

describe('parseManifestRef', () => {
  test('tags of 1 to 128 characters are tags', () => {
    for (const tag of ['latest', '1.27.3-alpine', 'v1', '_private', '0', 'A_b.c-D', 'x'.repeat(128), `a${'.-_'.repeat(42)}b`]) {
      assert.deepEqual(parseManifestRef(tag), { tag }, tag);
    }
    assert.equal(`a${'.-_'.repeat(42)}b`.length, 128);
  });

  test('a tag of 129 characters is refused', () => {
    assert.throws(() => parseManifestRef('x'.repeat(129)), InvalidReference);
  });

  test('tags starting with . or - and other malformed tags are refused', () => {
    for (const text of ['.hidden', '-rc1', '', 'a/b', 'a b', 'tag!', 'a+b', '%2e%2e', 'ümlaut']) {
      assert.throws(() => parseManifestRef(text), InvalidReference, JSON.stringify(text));
    }
  });

  test('a digest reference is parsed as a digest', () => {
    assert.deepEqual(parseManifestRef(DIGEST), { digest: DIGEST });
    assert.equal(refString(parseManifestRef(DIGEST)), DIGEST);
    assert.equal(refString(parseManifestRef('latest')), 'latest');
  });

  test('anything with a colon that is no valid sha256 digest is an InvalidDigest', () => {
    assert.throws(() => parseManifestRef(`sha256:${HEX.toUpperCase()}`), InvalidDigest);
    assert.throws(() => parseManifestRef(`sha256:${HEX.slice(1)}`), InvalidDigest);
    assert.throws(() => parseManifestRef('latest:1'), InvalidDigest);
    assert.throws(() => parseManifestRef(':'), InvalidDigest);
  });
});

describe('parseDigest', () => {
  test('a sha256 digest of 64 lower-case hex digits is valid', () => {
    assert.equal(parseDigest(DIGEST), DIGEST);
    assert.equal(isDigest(DIGEST), true);
    assert.equal(digestHex(parseDigest(DIGEST)), HEX);
  });

  test('upper-case hex is refused', () => {
    assert.throws(() => parseDigest(`sha256:${HEX.toUpperCase()}`), InvalidDigest);
    assert.throws(() => parseDigest(`SHA256:${HEX}`), InvalidDigest);
    assert.equal(isDigest(`sha256:${HEX.toUpperCase()}`), false);
  });

  test('63 or 65 hex digits are refused', () => {
    assert.throws(() => parseDigest(`sha256:${HEX.slice(1)}`), { name: 'InvalidDigest', message: /invalid digest/ });
    assert.throws(() => parseDigest(`sha256:${HEX}0`), InvalidDigest);
    assert.equal(isDigest(`sha256:${HEX.slice(1)}`), false);
  });

  test('malformed text is refused', () => {
    for (const text of ['', 'sha256:', HEX, `sha256 ${HEX}`, `sha256:${HEX}\n`, `sha256:${'g'.repeat(64)}`, `sha256:../../${HEX.slice(6)}`]) {
      assert.throws(() => parseDigest(text), InvalidDigest, JSON.stringify(text));
    }
  });

  test('a well-formed sha512 is refused as unsupported; other algorithms are no digest', () => {
    const sha512 = 'sha512:' + createHash('sha512').update('x').digest('hex');
    assert.throws(() => parseDigest(sha512), (err: unknown) => err instanceof UnsupportedDigest && err.code === 'INVALID_DIGEST' && /sha512.*not supported/.test(err.message));
    for (const text of ['sha512:abcdef', `sha512:${'A'.repeat(128)}`, 'blake3:abcdef', `md5:${'a'.repeat(32)}`]) {
      assert.throws(() => parseDigest(text), (err: unknown) => err instanceof InvalidDigest && !(err instanceof UnsupportedDigest), text);
    }
  });

  test('digestOf hashes bytes into a parseable digest', () => {
    const d = digestOf(Buffer.from('hello'));
    assert.equal(d, 'sha256:2cf24dba5fb0a30e26e83b2ac5b9e29e1b161e5c1fa7425e73043362938b9824');
    assert.equal(parseDigest(d), d);
  });
});

describe('DigestVerifier', () => {
  const bytes = Buffer.from('the quick brown fox jumps over the lazy dog');
  const digest = digestOf(bytes);

  test('bytes that match in digest and size verify, fed whole or in chunks', () => {
    const whole = new DigestVerifier(digest, bytes.length);
    whole.update(bytes);
    whole.verify();
    assert.equal(whole.size, bytes.length);

    const chunked = new DigestVerifier(digest, bytes.length);
    for (let i = 0; i < bytes.length; i += 7) chunked.update(bytes.subarray(i, i + 7));
    chunked.verify();
    assert.equal(chunked.size, bytes.length);
  });

  test('no expected size: only the digest is checked', () => {
    const v = new DigestVerifier(digest);
    v.update(bytes);
    v.verify();
  });

  test('verify() may be called twice with the same answer', () => {
    const ok = new DigestVerifier(digest, bytes.length);
    ok.update(bytes);
    ok.verify();
    ok.verify();
    const bad = new DigestVerifier(digest);
    bad.update(Buffer.from('other'));
    assert.throws(() => bad.verify(), DigestMismatch);
    assert.throws(() => bad.verify(), DigestMismatch);
  });

  test('too few or too many bytes: SizeMismatch naming both sizes', () => {
    const short = new DigestVerifier(digest, bytes.length);
    short.update(bytes.subarray(0, 10));
    assert.throws(
      () => short.verify(),
      (err: unknown) => err instanceof SizeMismatch && err.code === 'SIZE_MISMATCH' && err.expected === bytes.length && err.actual === 10,
    );
    const long = new DigestVerifier(digest, bytes.length);
    long.update(bytes);
    long.update(Buffer.from('!'));
    assert.throws(() => long.verify(), (err: unknown) => err instanceof SizeMismatch && err.actual === bytes.length + 1);
  });

  test('right size, wrong bytes: DigestMismatch naming the expected and actual digests', () => {
    const other = Buffer.from(bytes);
    other[0] ^= 1;
    const v = new DigestVerifier(digest, bytes.length);
    v.update(other);
    assert.throws(
      () => v.verify(),
      (err: unknown) =>
        err instanceof DigestMismatch &&
        err.code === 'DIGEST_MISMATCH' &&
        err.expected === digest &&
        err.actual === digestOf(other) &&
        err.message.includes(digest),
    );
  });

  test('no bytes at all against a non-empty digest', () => {
    const v = new DigestVerifier(digest);
    assert.throws(() => v.verify(), DigestMismatch);
    const empty = new DigestVerifier(digestOf(new Uint8Array()), 0);
    empty.verify();
  });
});
