// A throwaway Ceph cluster with an S3 gateway for tests, from Debian's packages (ceph-mon,
// ceph-osd, radosgw): one monitor, one OSD on memstore (RAM, nothing on disk to format),
// and radosgw's beast frontend on a free loopback port, with an S3 user of its own. No
// cephx: every daemon and tool reads one ceph.conf in a temp dir, with its run, log and
// admin-socket files beside it, so clusters started by several test files never meet.
// The daemons run in the foreground as this process's children; every one still running
// is killed when it exits. Start-up takes some 15 s, most of it radosgw creating pools.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { mkdir, mkdtemp, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CreateBucketCommand, PutObjectCommand, S3Client } from '@aws-sdk/client-s3';
import { DaemonRegistry, freePort } from './daemons.js';

const READY_TIMEOUT_MS = 90_000;
const BINARIES = ['monmaptool', 'ceph-mon', 'ceph-osd', 'radosgw', 'radosgw-admin', 'ceph'];

export interface RgwServer {
  /** http://127.0.0.1:<port> */
  readonly endpoint: string;
  readonly accessKeyId: string;
  readonly secretAccessKey: string;
  /** RGW takes any region in a signature; this is the one to sign with. */
  readonly region: string;
  /** A new empty bucket, made through S3 as its user; returns the name. */
  createBucket(name: string): Promise<string>;
  /** Kills the daemons and removes the cluster's directory. */
  destroy(): Promise<void>;
}

/** Daemons still running, with their cluster's directory: killed (SIGKILL, memstore would write its store out) should the process end. */
const running = new DaemonRegistry('SIGKILL');

/**
 * Why the tests cannot have a cluster here (`needs …: not installed`), or undefined. Under
 * CI=true always undefined: a missing package then fails the tests instead of skipping them.
 */
export function cephMissing(): string | undefined {
  const missing = BINARIES.filter((b) => !onPath(b));
  if (missing.length === 0 || process.env.CI === 'true') return undefined;
  return `needs ${missing.join(', ')}: not installed (apt-get install ceph-mon ceph-osd radosgw)`;
}

export interface RgwOptions {
  /** What the OSD's memstore may hold (default 1 GiB); it is RAM, taken only as objects are written. */
  memstoreBytes?: number;
}

/** Starts a fresh single-node cluster and gateway; throws with the daemons' logs when it does not come up. */
export async function startRgw(opts: RgwOptions = {}): Promise<RgwServer> {
  const missing = BINARIES.filter((b) => !onPath(b));
  if (missing.length > 0) throw new Error(`Ceph is not installed (no ${missing.join(', ')}): apt-get install ceph-mon ceph-osd radosgw`);
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-ceph-'));
  const cluster = new Cluster(dir, await freePort(), await freePort(), opts.memstoreBytes ?? 2 ** 30);
  try {
    await cluster.boot();
    return cluster;
  } catch (err) {
    const logs = cluster.logs();
    await cluster.destroy();
    throw new Error(`${(err as Error).message}\n--- daemon logs ---\n${logs}`);
  }
}

class Cluster implements RgwServer {
  readonly region = 'us-east-1';
  accessKeyId = '';
  secretAccessKey = '';
  readonly #children: ChildProcess[] = [];
  /** Daemons that exited on their own, with their stderr. */
  readonly #early: string[] = [];
  readonly #conf: string;
  #client?: S3Client;

  constructor(
    readonly dir: string,
    readonly monPort: number,
    readonly rgwPort: number,
    readonly memstoreBytes: number,
  ) {
    this.#conf = join(dir, 'ceph.conf');
  }

  get endpoint(): string {
    return `http://127.0.0.1:${this.rgwPort}`;
  }

  async boot(): Promise<void> {
    const fsid = randomUUID();
    await Promise.all(['run', 'log', 'mon/ceph-a', 'osd/ceph-0'].map((d) => mkdir(join(this.dir, d), { recursive: true })));
    await writeFile(this.#conf, cephConf(this.dir, fsid, this.monPort, this.rgwPort, this.memstoreBytes));
    await run('monmaptool', ['--create', '--addv', 'a', `[v2:127.0.0.1:${this.monPort}]`, '--fsid', fsid, join(this.dir, 'monmap')]);
    await run('ceph-mon', ['-c', this.#conf, '--mkfs', '-i', 'a', '--monmap', join(this.dir, 'monmap')]);
    this.#daemon('ceph-mon', ['-f', '-i', 'a']);
    // The first command waits for the monitor to form its quorum of one.
    const osdId = (await this.#ceph('osd', 'create')).trim();
    if (osdId !== '0') throw new Error(`ceph osd create gave id ${osdId}, expected 0`);
    await run('ceph-osd', ['-c', this.#conf, '--mkfs', '-i', '0']);
    this.#daemon('ceph-osd', ['-f', '-i', '0']);
    await this.#until('the OSD up', async () => JSON.parse(await this.#ceph('osd', 'stat', '-f', 'json')).num_up_osds === 1);
    this.#daemon('radosgw', ['-f', '-n', 'client.rgw']);
    await this.#until('radosgw answering', () => fetch(this.endpoint).then(() => true, () => false));
    await this.#createUser();
    // The first bucket and object create radosgw's index and data pools (seconds each):
    // done here, so that no test's timing includes them.
    const warm = await this.createBucket('warm-up');
    await this.#s3().send(new PutObjectCommand({ Bucket: warm, Key: 'warm-up', Body: 'ok' }));
  }

  async createBucket(name: string): Promise<string> {
    await this.#s3().send(new CreateBucketCommand({ Bucket: name }));
    return name;
  }

  async destroy(): Promise<void> {
    this.#client?.destroy();
    // SIGKILL: memstore would otherwise write the whole store to disk on the way down.
    await Promise.all(this.#children.map(killAndWait));
    rmSync(this.dir, { recursive: true, force: true });
  }

  /** The tails of the daemons' log files, for a failed start-up. */
  logs(): string {
    const logDir = join(this.dir, 'log');
    if (!existsSync(logDir)) return '(none)';
    return readdirSync(logDir)
      .map((f) => `== ${f}\n${readFileSync(join(logDir, f), 'utf8').split('\n').slice(-25).join('\n')}`)
      .join('\n');
  }

  #s3(): S3Client {
    this.#client ??= new S3Client({ endpoint: this.endpoint, region: this.region, forcePathStyle: true, credentials: { accessKeyId: this.accessKeyId, secretAccessKey: this.secretAccessKey } });
    return this.#client;
  }

  async #createUser(): Promise<void> {
    const out = await run('radosgw-admin', ['-c', this.#conf, '-n', 'client.admin', 'user', 'create', '--uid=regmirror', '--display-name=regmirror']);
    const { keys } = JSON.parse(out) as { keys: { access_key: string; secret_key: string }[] };
    this.accessKeyId = keys[0].access_key;
    this.secretAccessKey = keys[0].secret_key;
  }

  #ceph(...args: string[]): Promise<string> {
    return run('ceph', ['-c', this.#conf, '--connect-timeout', '30', ...args]);
  }

  #daemon(cmd: string, args: string[]): void {
    // -f logs to the files ceph.conf names; stderr only says why a daemon could not start.
    const child = spawn(cmd, ['-c', this.#conf, ...args], { stdio: ['ignore', 'ignore', 'pipe'] });
    let err = '';
    child.stderr?.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-2000)));
    child.once('exit', (code, signal) => {
      running.delete(child);
      if (code !== null && code !== 0) this.#early.push(`${cmd} exited (${code ?? signal}): ${err}`);
    });
    running.add(child, this.dir);
    this.#children.push(child);
  }

  async #until(what: string, check: () => Promise<boolean>): Promise<void> {
    const deadline = Date.now() + READY_TIMEOUT_MS;
    for (;;) {
      if (this.#early.length > 0) throw new Error(`Ceph failed waiting for ${what}: ${this.#early.join('; ')}`);
      if (await check().catch(() => false)) return;
      if (Date.now() > deadline) throw new Error(`Ceph: timed out after ${READY_TIMEOUT_MS} ms waiting for ${what}`);
      await new Promise((r) => setTimeout(r, 200));
    }
  }
}

/**
 * Built to start fast and small: no auth, one replica, few placement groups, no mgr (the
 * cluster works without one; only its statistics are missing), and no background work in
 * radosgw. Connection modes list crc first: without cephx there is no key for "secure",
 * and radosgw otherwise asks the monitor for it alone and is refused.
 */
function cephConf(dir: string, fsid: string, monPort: number, rgwPort: number, memstoreBytes: number): string {
  return `[global]
fsid = ${fsid}
mon host = [v2:127.0.0.1:${monPort}]
public addr = 127.0.0.1
ms bind ipv6 = false
auth cluster required = none
auth service required = none
auth client required = none
ms mon client mode = crc secure
ms mon cluster mode = crc secure
ms mon service mode = crc secure
ms client mode = crc secure
ms cluster mode = crc secure
ms service mode = crc secure
run dir = ${dir}/run
admin socket = ${dir}/run/$name.asok
log file = ${dir}/log/$name.log
pid file = ${dir}/run/$name.pid
mon data = ${dir}/mon/$cluster-$id
osd data = ${dir}/osd/$cluster-$id
osd objectstore = memstore
memstore device bytes = ${memstoreBytes}
osd memory target = 536870912
osd pool default size = 1
osd pool default min size = 1
osd pool default pg num = 8
osd pool default pgp num = 8
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon warn on pool no redundancy = false
mon data avail warn = 1
mon data avail crit = 0
# A one-monitor cluster has nobody to batch proposals with: proposing at once turns each
# pool radosgw creates at start-up from a second's wait into a few milliseconds.
paxos propose interval = 0.05

[client.rgw]
rgw frontends = beast endpoint=127.0.0.1:${rgwPort}
rgw enable gc threads = false
rgw enable lc threads = false
rgw dynamic resharding = false
`;
}

/** Runs a command to its end; its stdout, or an error with its output. */
function run(cmd: string, args: string[]): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (b: Buffer) => (out += b.toString()));
    child.stderr.on('data', (b: Buffer) => (err = (err + b.toString()).slice(-4000)));
    child.once('error', reject);
    child.once('exit', (code) => (code === 0 ? resolve(out) : reject(new Error(`${cmd} ${args.join(' ')} failed (${code}):\n${err}${out.slice(-2000)}`))));
  });
}

function killAndWait(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGKILL');
  });
}

function onPath(cmd: string): boolean {
  return (process.env.PATH ?? '').split(':').some((d) => d !== '' && existsSync(join(d, cmd)));
}

