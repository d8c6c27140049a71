// TagGuard over a real SQLite metadata store: which clients share a guard (every Accept
// class that takes an index; each class that takes none on its own), what is recorded
// and reported, and a tag cached before its policy existed.
import assert from 'node:assert/strict';
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test, type TestContext } from 'node:test';
import { guardClass, TagGuard } from '../src/cache/tag-guard.js';
import { TagChangeRefused, toOciError } from '../src/errors.js';
import type { NewEvent } from '../src/events/event.js';
import { createLogger } from '../src/log.js';
import { acceptClass, DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST, DOCKER_LIST } from '../src/oci/manifest.js';
import { PolicySet } from '../src/policy/policies.js';
import type { TagChange } from '../src/config-policies.js';
import { openMetadataStore } from '../src/store/open-metadata.js';
import type { MetadataStore } from '../src/store/metadata-store.js';

const A = `sha256:${'a'.repeat(64)}`;
const B = `sha256:${'b'.repeat(64)}`;
const M = `sha256:${'d'.repeat(64)}`;
const CONTAINERD = acceptClass([OCI_INDEX, DOCKER_LIST, OCI_MANIFEST, DOCKER_MANIFEST].join(', '));
const OCI_ONLY = acceptClass(`${OCI_INDEX}, ${OCI_MANIFEST}`);
const OLD_DOCKER = acceptClass(DOCKER_MANIFEST);
const key = (accept: number, tag = 'v1.0') => ({ upstream: 'docker.io', repository: 'library/app', tag, accept });

async function guardOver(t: TestContext, onChange: TagChange): Promise<{ guard: TagGuard; store: MetadataStore; events: NewEvent[] }> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-guard-'));
  const store = await openMetadataStore({ kind: 'sqlite', path: join(dir, 'mirror.db') });
  t.after(async () => {
    await store.close();
    await rm(dir, { recursive: true, force: true });
  });
  const events: NewEvent[] = [];
  const policies = new PolicySet([{ match: { repositories: ['library/*'] }, tags: { immutable: ['v*'], onChange } }]);
  const guard = new TagGuard({ store: store.guardedTags, policies, events: { record: (e) => events.push(e) }, log: createLogger('error', () => {}) });
  return { guard, store, events };
}

test('every class that takes an index shares one guard; a class that takes none has its own', () => {
  assert.equal(guardClass(CONTAINERD), 'index');
  assert.equal(guardClass(OCI_ONLY), 'index');
  assert.equal(guardClass(OLD_DOCKER), String(OLD_DOCKER));
});

test('an old client answered a single manifest where others get the index is no change of the tag', async (t) => {
  const { guard, store, events } = await guardOver(t, 'refuse');
  assert.equal(await guard.resolve(key(CONTAINERD), A), A);
  assert.equal(await guard.resolve(key(OLD_DOCKER), M), M, 'the platform manifest for a client that takes no index');
  assert.equal(await guard.resolve(key(OCI_ONLY), A), A);
  assert.deepEqual(await store.guardedTags.changes(), []);
  assert.deepEqual(events, []);
});

test('a class first seen after the change is held like the others (keep)', async (t) => {
  const { guard, store, events } = await guardOver(t, 'keep');
  assert.equal(await guard.resolve(key(CONTAINERD), A), A);
  assert.equal(await guard.resolve(key(CONTAINERD), B), A, 'kept');
  assert.equal(await guard.resolve(key(OCI_ONLY), B), A, 'a new Accept list gets the guarded digest too');
  assert.equal(await guard.resolve(key(CONTAINERD), B), A);
  assert.equal(events.length, 1, 'reported once');
  assert.deepEqual({ ...events[0], message: undefined }, {
    kind: 'tag_changed',
    upstream: 'docker.io',
    repository: 'library/app',
    tag: 'v1.0',
    digest: B,
    message: undefined,
    details: { policy: 'policies[0]', action: 'keep', guarded: A, upstream: B, class: 'index' },
  });
  assert.match(events[0].message, /docker\.io\/library\/app:v1\.0 .*from sha256:a+ to sha256:b+; still serving sha256:a+ until regmirror tags accept/);
  assert.equal((await store.guardedTags.changes()).length, 1);
});

test('refuse throws DENIED naming the policy, the tag and both digests; the upstream going back clears the change', async (t) => {
  const { guard, store } = await guardOver(t, 'refuse');
  await guard.resolve(key(CONTAINERD), A);
  await assert.rejects(guard.resolve(key(CONTAINERD), B), (err: unknown) => {
    assert.ok(err instanceof TagChangeRefused);
    const oci = toOciError(err);
    assert.equal(oci.code, 'DENIED');
    assert.equal(oci.status, 403);
    for (const part of ['policies[0]', 'docker.io/library/app:v1.0', A, B, 'regmirror tags accept docker.io/library/app:v1.0']) assert.ok(oci.message.includes(part), part);
    return true;
  });
  assert.equal(await guard.resolve(key(CONTAINERD), A), A);
  assert.deepEqual(await store.guardedTags.changes(), [], 'nothing left to accept');
});

test('a tag cached before its policy is guarded at what was served, not at what the upstream says now', async (t) => {
  const { guard } = await guardOver(t, 'keep');
  assert.equal(await guard.resolve(key(CONTAINERD), B, A), A);
});

test('tags outside the globs and repositories outside the match are not guarded', async (t) => {
  const { guard, store } = await guardOver(t, 'refuse');
  assert.equal(await guard.resolve(key(CONTAINERD, 'latest'), A), A);
  assert.equal(await guard.resolve(key(CONTAINERD, 'latest'), B), B);
  assert.equal(await guard.resolve({ ...key(CONTAINERD), repository: 'team/app' }, B), B);
  assert.equal(await store.guardedTags.get({ upstream: 'docker.io', repository: 'library/app', tag: 'latest', class: 'index' }), undefined);
});
