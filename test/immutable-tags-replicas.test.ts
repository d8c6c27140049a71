// Immutable tags on replicas: two regmirror processes sharing one PostgreSQL database and
// one bucket share the guard. A change one replica meets is refused by both, recorded
// once between them, and one `tags accept` through either lets both serve the new digest.
import assert from 'node:assert/strict';
import { after, before, describe, test } from 'node:test';
import { setTimeout as sleep } from 'node:timers/promises';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli, errorCode, get } from './helpers.js';
import { cephMissing, startRgw, type RgwServer } from './support/ceph.js';
import { startPostgres, type PgServer } from './support/postgres.js';
import { startReplicaSet, type ReplicaSet } from './support/replicas.js';

const TTL_MS = 1000;
const POLICY = `policies:
  - match: { repositories: [library/*] }
    tags: { immutable: ["v*"], onChange: refuse }
`;

describe('immutable tags on replicas sharing one PostgreSQL', { skip: cephMissing() }, () => {
  let rgw: RgwServer;
  let pg: PgServer;
  let up: FakeUpstream;
  let set: ReplicaSet;
  let first: FixtureImage;
  let second: FixtureImage;

  before(async () => {
    [rgw, pg, up] = await Promise.all([startRgw(), startPostgres(), FakeUpstream.start()]);
    first = await singleImage({ name: 'library/pinned', tag: 'v1.0', seed: 'replica-guard-1' });
    second = await singleImage({ name: 'library/pinned', tag: 'next', seed: 'replica-guard-2' });
    up.addImage(first);
    up.addImage(second);
    set = await startReplicaSet({ count: 2, rgw, pg, upstreamUrl: up.url, name: 'immutable-tags', upstream: `tagTtl: ${TTL_MS / 1000}s`, extra: POLICY });
  });
  after(async () => {
    await set?.destroy();
    await up?.close();
    await Promise.all([rgw?.destroy(), pg?.destroy()]);
  });

  test('a change is refused by every replica, recorded once, and accepted for all through one', async () => {
    const [a, b] = set.replicas;
    const pullFrom = (r: { url: string }) => get(`${r.url}/v2/library/pinned/manifests/v1.0`);
    const served = await pullFrom(a);
    assert.equal(served.status, 200, set.logs());
    assert.equal(served.headers['docker-content-digest'], first.root.digest);

    up.setTag('library/pinned', 'v1.0', second.root.digest);
    await sleep(TTL_MS + 200);
    for (const r of [b, a]) {
      const refused = await pullFrom(r);
      assert.equal(refused.status, 403, `replica ${r.name}: ${refused.body.toString()}`);
      assert.equal(errorCode(refused), 'DENIED');
      assert.match(refused.body.toString(), new RegExp(`${first.root.digest}.*${second.root.digest}`));
    }
    const reports = set.replicas.flatMap((r) => r.child!.stderr().split('\n')).filter((l) => l.includes('immutable tag changed upstream'));
    assert.equal(reports.length, 1, 'one replica recorded the change');

    const ls = await cli(['tags', 'ls', '--json', '--config', a.config]);
    assert.equal(ls.code, 0, ls.stderr);
    const listed = JSON.parse(ls.stdout) as Array<{ image: string; guarded: string; upstreamDigest: string }>;
    assert.deepEqual(listed.map((c) => [c.image, c.guarded, c.upstreamDigest]), [['docker.io/library/pinned:v1.0', first.root.digest, second.root.digest]]);

    const accepted = await cli(['tags', 'accept', 'library/pinned:v1.0', '--server', `127.0.0.1:${b.port}`]);
    assert.equal(accepted.code, 0, accepted.stderr);
    await sleep(1200); // each replica's memo of the expired tag row lasts a second
    for (const r of [a, b]) {
      const now = await pullFrom(r);
      assert.equal(now.status, 200, `replica ${r.name}: ${now.body.toString()}`);
      assert.equal(now.headers['docker-content-digest'], second.root.digest, `replica ${r.name}`);
    }
  });
});
