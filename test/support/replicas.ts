// A replica set for tests: regmirror processes (children, stopped by PID) sharing one RGW
// bucket and one PostgreSQL database, each with a `cluster:` section advertising its own
// loopback port. Replicas can be killed (-9) and started again on the same port and config.
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { serveChild, type ChildServer } from '../helpers.js';
import { freePort } from './daemons.js';
import type { PgServer } from './postgres.js';
import type { RgwServer } from './ceph.js';

export const CLUSTER_SECRET = 'replica-test-secret-0123456789';

export interface Replica {
  readonly name: string;
  readonly port: number;
  readonly url: string;
  readonly config: string;
  /** The running child, or undefined while killed. */
  child?: ChildServer;
}

export interface ReplicaSet {
  readonly replicas: Replica[];
  readonly bucket: string;
  /** Replicas running now. */
  up(): Replica[];
  kill(r: Replica): Promise<void>;
  start(r: Replica): Promise<void>;
  /** Every replica's log so far (for failure messages). */
  logs(): string;
  destroy(): Promise<void>;
}

export interface ReplicaSetOptions {
  count: number;
  rgw: RgwServer;
  pg: PgServer;
  upstreamUrl: string;
  /** Unique per test file: the bucket and the database are named after it. */
  name: string;
  /** More YAML at the top level of every replica's config. */
  extra?: string;
  /** More YAML under `storage:`. */
  storage?: string;
  /** More keys of the upstream (docker.io), e.g. `tagTtl: 2s`. */
  upstream?: string;
}

export async function startReplicaSet(o: ReplicaSetOptions): Promise<ReplicaSet> {
  const dir = await mkdtemp(join(tmpdir(), `regmirror-${o.name}-`));
  const bucket = await o.rgw.createBucket(o.name);
  const db = await o.pg.createDatabase(o.name.replace(/-/g, '_'));
  const replicas: Replica[] = [];
  for (let i = 0; i < o.count; i++) {
    const port = await freePort();
    const name = String.fromCharCode(65 + i);
    const config = join(dir, `${name}.yaml`);
    await writeFile(config, replicaConfig(o, { port, dataDir: join(dir, `data-${name}`), bucket, dbUrl: db.url }));
    replicas.push({ name, port, url: `http://127.0.0.1:${port}`, config });
  }
  const env = { AWS_ACCESS_KEY_ID: o.rgw.accessKeyId, AWS_SECRET_ACCESS_KEY: o.rgw.secretAccessKey };
  const start = async (r: Replica) => {
    const child = serveChild(r.config, env);
    await child.url;
    r.child = child;
  };
  const kill = async (r: Replica) => {
    const child = r.child;
    r.child = undefined;
    if (!child) return;
    child.kill('SIGKILL');
    await child.exited;
  };
  await Promise.all(replicas.map(start));
  return {
    replicas,
    bucket,
    up: () => replicas.filter((r) => r.child),
    kill,
    start,
    logs: () => replicas.map((r) => `--- ${r.name}\n${r.child?.stderr().split('\n').slice(-30).join('\n') ?? '(down)'}`).join('\n'),
    destroy: async () => {
      await Promise.all(replicas.map(kill));
      await rm(dir, { recursive: true, force: true });
    },
  };
}

function replicaConfig(o: ReplicaSetOptions, r: { port: number; dataDir: string; bucket: string; dbUrl: string }): string {
  return `listen: "127.0.0.1:${r.port}"
dataDir: ${JSON.stringify(r.dataDir)}
defaultUpstream: docker.io
upstreams:
  docker.io:
    url: ${o.upstreamUrl}
${(o.upstream ?? '').split('\n').filter(Boolean).map((l) => `    ${l}`).join('\n')}
metadata:
  postgres:
    url: ${r.dbUrl}
    password: ${JSON.stringify(o.pg.password)}
storage:
  backend: s3
  s3:
    bucket: ${r.bucket}
    prefix: rm
    endpoint: ${o.rgw.endpoint}
    region: ${o.rgw.region}
    forcePathStyle: true
${o.storage ?? ''}
cluster:
  advertise: http://127.0.0.1:${r.port}
  secret: ${CLUSTER_SECRET}
${o.extra ?? ''}
`;
}
