// Manifest content negotiation (the Accept class a tag's digest is cached under) and the
// parser that reads a manifest's media type and descriptors.
import assert from 'node:assert/strict';
import { describe, test } from 'node:test';
import { UpstreamInvalid } from '../src/errors.js';
import {
  acceptClass,
  acceptHeader,
  accepts,
  ALL_TYPES,
  DOCKER_LIST,
  DOCKER_MANIFEST,
  isIndexType,
  MANIFEST_TYPES,
  OCI_INDEX,
  OCI_MANIFEST,
  parseManifest,
} from '../src/oci/manifest.js';

const bit = (type: string) => 1 << MANIFEST_TYPES.indexOf(type as (typeof MANIFEST_TYPES)[number]);
const D1 = `sha256:${'1'.repeat(64)}`;
const D2 = `sha256:${'2'.repeat(64)}`;
const D3 = `sha256:${'3'.repeat(64)}`;
const json = (doc: unknown) => Buffer.from(JSON.stringify(doc));

// containerd 1.7/2.x sends this on every manifest request.
const CONTAINERD_ACCEPT = [DOCKER_MANIFEST, DOCKER_LIST, OCI_MANIFEST, OCI_INDEX, '*/*'].join(', ');
// The Docker daemon sends one Accept header per type; node joins repeated headers with ", ".
const DOCKER_ACCEPT = [
  DOCKER_MANIFEST,
  DOCKER_LIST,
  OCI_INDEX,
  OCI_MANIFEST,
  'application/vnd.docker.distribution.manifest.v1+prettyjws',
  'application/json',
].join(', ');

describe('acceptClass', () => {
  test('ALL_TYPES has one bit per manifest type', () => {
    assert.equal(MANIFEST_TYPES.length, 4);
    assert.equal(ALL_TYPES, 0b1111);
    assert.equal(new Set(MANIFEST_TYPES.map(bit)).size, 4);
  });

  test('no Accept header accepts everything', () => {
    assert.equal(acceptClass(undefined), ALL_TYPES);
    assert.equal(acceptClass(''), ALL_TYPES);
  });

  test("containerd's list ends in */*, which accepts everything", () => {
    assert.equal(acceptClass(CONTAINERD_ACCEPT), ALL_TYPES);
    assert.equal(acceptClass(`${DOCKER_MANIFEST}, application/*`), ALL_TYPES);
  });

  test("Docker's list names all four types (and some others)", () => {
    assert.equal(acceptClass(DOCKER_ACCEPT), ALL_TYPES);
  });

  test('only the Docker v2 manifest: just that bit, so an index is never the answer', () => {
    const mask = acceptClass(DOCKER_MANIFEST);
    assert.equal(mask, bit(DOCKER_MANIFEST));
    assert.notEqual(mask, ALL_TYPES);
    assert.equal(accepts(mask, DOCKER_MANIFEST), true);
    assert.equal(accepts(mask, DOCKER_LIST), false);
    assert.equal(accepts(mask, OCI_INDEX), false);
  });

  test('the two OCI types only', () => {
    assert.equal(acceptClass(`${OCI_MANIFEST}, ${OCI_INDEX}`), bit(OCI_MANIFEST) | bit(OCI_INDEX));
  });

  test('parameters, q-values, spacing and case do not change the class', () => {
    const plain = acceptClass(`${OCI_INDEX},${OCI_MANIFEST}`);
    assert.equal(acceptClass(` ${OCI_INDEX.toUpperCase()} ; q=0.9 ,\t${OCI_MANIFEST};q=0.5 `), plain);
    assert.equal(acceptClass(`${OCI_MANIFEST}, ${OCI_INDEX}`), plain, 'order does not matter');
  });

  test('naming only unrelated types gets whatever the upstream gives', () => {
    assert.equal(acceptClass('application/json'), ALL_TYPES);
    assert.equal(acceptClass('text/html, application/xml'), ALL_TYPES);
  });
});

describe('acceptHeader', () => {
  test('every non-empty class round-trips through the header it produces', () => {
    for (let mask = 1; mask <= ALL_TYPES; mask++) {
      assert.equal(acceptClass(acceptHeader(mask)), mask, `mask ${mask}: ${acceptHeader(mask)}`);
    }
  });

  test('ALL_TYPES asks for the four types, index types first', () => {
    assert.equal(acceptHeader(ALL_TYPES), `${OCI_INDEX}, ${DOCKER_LIST}, ${OCI_MANIFEST}, ${DOCKER_MANIFEST}`);
    assert.equal(acceptHeader(bit(DOCKER_MANIFEST)), DOCKER_MANIFEST);
  });
});

describe('accepts', () => {
  test('a type is accepted exactly when its bit is set', () => {
    for (let mask = 1; mask <= ALL_TYPES; mask++) {
      for (const type of MANIFEST_TYPES) assert.equal(accepts(mask, type), (mask & bit(type)) !== 0, `${mask} ${type}`);
    }
  });

  test('an unknown media type is accepted only by a client that takes everything', () => {
    const schema1 = 'application/vnd.docker.distribution.manifest.v1+prettyjws';
    assert.equal(accepts(ALL_TYPES, schema1), true);
    assert.equal(accepts(ALL_TYPES & ~bit(DOCKER_LIST), schema1), false);
    assert.equal(accepts(bit(OCI_MANIFEST), 'application/vnd.example+json'), false);
  });
});

describe('parseManifest', () => {
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: [
      { mediaType: OCI_MANIFEST, digest: D1, size: 500, platform: { os: 'linux', architecture: 'amd64' } },
      { mediaType: OCI_MANIFEST, digest: D2, size: 501, platform: { os: 'linux', architecture: 'arm64', variant: 'v8' } },
    ],
  };
  const manifest = {
    schemaVersion: 2,
    mediaType: DOCKER_MANIFEST,
    config: { mediaType: 'application/vnd.docker.container.image.v1+json', digest: D1, size: 1469 },
    layers: [
      { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: D2, size: 3_000_000 },
      { mediaType: 'application/vnd.docker.image.rootfs.diff.tar.gzip', digest: D3, size: 32 },
    ],
  };

  test('an index: its media type and child manifests, no blobs', () => {
    const p = parseManifest(json(index));
    assert.equal(p.mediaType, OCI_INDEX);
    assert.equal(isIndexType(p.mediaType), true);
    assert.deepEqual(p.manifests, index.manifests);
    assert.deepEqual(p.blobs, []);
  });

  test('an image manifest: config then layers as blobs, no children', () => {
    const p = parseManifest(json(manifest));
    assert.equal(p.mediaType, DOCKER_MANIFEST);
    assert.equal(isIndexType(p.mediaType), false);
    assert.deepEqual(p.manifests, []);
    assert.deepEqual(
      p.blobs.map((b) => [b.digest, b.size]),
      [
        [D1, 1469],
        [D2, 3_000_000],
        [D3, 32],
      ],
    );
  });

  test("the body's mediaType wins over the Content-Type", () => {
    assert.equal(parseManifest(json(manifest), OCI_MANIFEST).mediaType, DOCKER_MANIFEST);
  });

  test('no mediaType in the body: the Content-Type, without its parameters', () => {
    const { mediaType: _, ...bare } = index;
    assert.equal(parseManifest(json(bare), `${DOCKER_LIST}; charset=utf-8`).mediaType, DOCKER_LIST);
    const { mediaType: __, ...bareManifest } = manifest;
    assert.equal(parseManifest(json(bareManifest), DOCKER_MANIFEST).mediaType, DOCKER_MANIFEST);
  });

  test('no mediaType and no useful Content-Type: read from the shape', () => {
    const { mediaType: _, ...bareIndex } = index;
    const { mediaType: __, ...bareManifest } = manifest;
    assert.equal(parseManifest(json(bareIndex)).mediaType, OCI_INDEX);
    assert.equal(parseManifest(json(bareIndex), 'application/json').mediaType, OCI_INDEX);
    assert.equal(parseManifest(json(bareIndex), 'application/json; charset=utf-8').mediaType, OCI_INDEX);
    assert.equal(parseManifest(json(bareManifest)).mediaType, OCI_MANIFEST);
    assert.equal(parseManifest(json(bareManifest), 'application/json').mediaType, OCI_MANIFEST);
    assert.equal(parseManifest(json({ ...bareManifest, mediaType: 42 })).mediaType, OCI_MANIFEST, 'a non-string mediaType is ignored');
  });

  test('entries that are not descriptors are skipped', () => {
    const p = parseManifest(
      json({
        mediaType: OCI_MANIFEST,
        config: { digest: D1 }, // no size
        layers: [null, 'x', { digest: D2, size: '7' }, { digest: D3, size: 7, mediaType: 'application/octet-stream' }],
      }),
    );
    assert.deepEqual(p.blobs, [{ digest: D3, size: 7, mediaType: 'application/octet-stream' }]);
    assert.deepEqual(parseManifest(json({ mediaType: OCI_INDEX, manifests: [{ size: 1 }, 3] })).manifests, []);
  });

  test('invalid JSON is UpstreamInvalid', () => {
    for (const body of ['', '{', '{"mediaType":', 'not json', '\u00ff\u00fe']) {
      assert.throws(() => parseManifest(Buffer.from(body)), UpstreamInvalid, JSON.stringify(body));
    }
  });

  test('JSON that is not an object is UpstreamInvalid', () => {
    for (const body of ['null', '42', '"manifest"', 'true']) {
      assert.throws(() => parseManifest(Buffer.from(body)), { name: 'UpstreamInvalid', message: /not a JSON object/ }, body);
    }
  });

  test('a JSON array is not a manifest', () => {
    for (const body of ['[]', '[{"mediaType":"application/vnd.oci.image.manifest.v1+json"}]']) {
      assert.throws(() => parseManifest(Buffer.from(body)), { name: 'UpstreamInvalid', message: /not a JSON object/ }, body);
    }
  });
});
