// The floor for `npm run bench:cold`: the least a verifying pull-through cache can do for
// a cold blob, in plain Node and in a process of its own. It reads the upstream body,
// hashes it, writes it to a spool file and to the client as it arrives, and sends the
// last byte only once the digest matches and the file is synced. It caches nothing and
// has no routing, metadata or followers: what the kernel and sha256 cost on this
// machine, so that regmirror's CPU per GiB can be read as a ratio to it.
//   child:  node --import tsx bench/tee-floor.ts <spool dir>   → IPC { ready: url }
//   client: GET /?from=<blob URL>&digest=sha256:…
import { fork } from 'node:child_process';
import { createHash } from 'node:crypto';
import { open, rm } from 'node:fs/promises';
import { createServer, get, type IncomingMessage, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { stopChild } from './peers.js';

/** Upstream bytes written to the file but not yet acknowledged before the body is paused. */
const MAX_PENDING = 4 * 1024 * 1024;

export interface TeeFloor {
  url: string;
  pid: number;
  stop(): Promise<void>;
}

export async function startTeeFloor(spoolDir: string): Promise<TeeFloor> {
  const child = fork(fileURLToPath(import.meta.url), [spoolDir], { execArgv: ['--import', 'tsx'], stdio: ['ignore', 'inherit', 'inherit', 'ipc'] });
  const url = await new Promise<string>((resolve, reject) => {
    child.once('exit', (code) => reject(new Error(`tee floor exited with ${code}`)));
    child.once('message', (msg: { ready: string }) => resolve(msg.ready));
  });
  return { url, pid: child.pid!, stop: () => stopChild(child) };
}

async function tee(up: IncomingMessage, res: ServerResponse, path: string, digest: string): Promise<void> {
  const fh = await open(path, 'wx');
  const hash = createHash('sha256');
  let position = 0;
  let pending = 0;
  let failed: Error | undefined;
  /** The latest chunk, sent only once the next one comes or the digest matches: the last byte waits, as regmirror's does. */
  let held: Buffer | undefined;
  const writes: Array<Promise<void>> = [];
  res.writeHead(200, { 'content-length': up.headers['content-length'] });
  up.on('data', (chunk: Buffer) => {
    hash.update(chunk);
    pending += chunk.length;
    writes.push(
      fh.write(chunk, 0, chunk.length, position).then(
        () => {
          pending -= chunk.length;
          if (pending < MAX_PENDING && !res.writableNeedDrain) up.resume();
        },
        (err: Error) => void (failed = err),
      ),
    );
    position += chunk.length;
    const sent = held ? res.write(held) : true;
    held = chunk;
    if (!sent || pending >= MAX_PENDING) up.pause();
  });
  res.on('drain', () => pending < MAX_PENDING && up.resume());
  await new Promise<void>((resolve, reject) => {
    up.once('end', resolve);
    up.once('error', reject);
  });
  await Promise.all(writes);
  if (failed) throw failed;
  if (`sha256:${hash.digest('hex')}` !== digest) throw new Error('digest mismatch');
  await fh.sync();
  await fh.close();
  res.end(held);
}

function serve(spoolDir: string): void {
  let files = 0;
  const server = createServer((req, res) => {
    const q = new URL(req.url ?? '/', 'http://floor').searchParams;
    const path = join(spoolDir, `spool-${files++}`);
    get(q.get('from') ?? '', (up) => {
      tee(up, res, path, q.get('digest') ?? '')
        .catch(() => res.destroy())
        .finally(() => void rm(path, { force: true }));
    }).on('error', () => res.destroy());
  });
  server.listen(0, '127.0.0.1', () => process.send!({ ready: `http://127.0.0.1:${(server.address() as AddressInfo).port}` }));
  process.on('SIGTERM', () => server.close(() => process.exit(0)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) serve(process.argv[2]);
