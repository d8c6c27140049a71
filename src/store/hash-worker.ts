// sha256 of large downloads, off the main thread. Hashing is about a third of the main
// thread's work on a cold pull (sha256 runs near 1.7 GB/s a core here); a worker thread
// reads each spool file back from the page cache and hashes it there, so the event loop
// only moves bytes. What is verified is what is in the file, which is what gets published.
import { Worker } from 'node:worker_threads';

export type HashRequest =
  | { op: 'open'; id: number; path: string }
  | { op: 'file'; id: number; upTo: number }
  | { op: 'bytes'; id: number; bytes: Uint8Array }
  | { op: 'end'; id: number }
  | { op: 'drop'; id: number };

export type HashReply = { id: number; digest: string; size: number } | { id: number; error: string };

/** The worker script beside this module (JavaScript in src/ too, so it loads without a TypeScript loader). */
const SCRIPT = new URL('./hash-thread.js', import.meta.url);

let worker: Worker | undefined;
/** Settles when `worker` has exited. */
let workerExited: Promise<void> = Promise.resolve();
let nextId = 1;
const waiting = new Map<number, { resolve: (r: { digest: string; size: number }) => void; reject: (e: Error) => void }>();

function thread(): Worker {
  if (worker) return worker;
  const w = new Worker(SCRIPT);
  w.on('message', (r: HashReply) => {
    const p = waiting.get(r.id);
    waiting.delete(r.id);
    if (!p) return;
    if ('error' in r) p.reject(new Error(`hashing failed: ${r.error}`));
    else p.resolve(r);
  });
  const fail = (err: Error) => {
    // A thread retired after lingering is no longer `worker`; its exit concerns no job.
    if (worker !== w) return;
    worker = undefined;
    for (const p of waiting.values()) p.reject(err);
    waiting.clear();
  };
  w.on('error', fail);
  w.on('exit', (code) => fail(new Error(`hash worker exited with code ${code}`)));
  workerExited = new Promise((resolve) => w.once('exit', () => resolve()));
  // Held only while a job is open (attaching a listener refs it, so this comes after):
  // an idle thread must not keep the process alive, a job waiting on it must.
  if (active === 0) w.unref();
  worker = w;
  return w;
}

/** The hash thread now running, if any, and a promise of its exit: a lingering thread's end can be awaited. */
export function hashThread(): { threadId: number; exited: Promise<void> } | undefined {
  return worker && { threadId: worker.threadId, exited: workerExited };
}

/** Jobs opened and not yet ended or dropped. */
let active = 0;
/** An idle thread lingers this long for the next large download, then exits: it holds ~10 MiB. */
const LINGER_MS = 2000;
let lingering: NodeJS.Timeout | undefined;

function jobOpened(): void {
  clearTimeout(lingering);
  if (active++ === 0) worker?.ref();
}

function jobClosed(): void {
  if (--active > 0) return;
  worker?.unref();
  lingering = setTimeout(() => {
    const w = worker;
    if (active > 0 || !w) return;
    worker = undefined;
    void w.terminate();
  }, LINGER_MS).unref();
}

/** One file's hash, computed by the worker as the file grows. */
export class FileHashJob {
  readonly #id = nextId++;
  readonly #w = thread();
  #posted = 0;
  #ended = false;

  constructor(path: string) {
    jobOpened();
    this.#w.postMessage({ op: 'open', id: this.#id, path } satisfies HashRequest);
  }

  /** How far the worker has been told it may hash the file. */
  get posted(): number {
    return this.#posted;
  }

  /** The file holds `upTo` bytes: the worker may hash up to there. */
  fileUpTo(upTo: number): void {
    if (upTo <= this.#posted) return;
    this.#posted = upTo;
    this.#w.postMessage({ op: 'file', id: this.#id, upTo } satisfies HashRequest);
  }

  /** Bytes that follow the file's, held in memory only (they are copied to the worker). */
  bytes(chunk: Uint8Array): void {
    this.#w.postMessage({ op: 'bytes', id: this.#id, bytes: chunk } satisfies HashRequest);
  }

  /** The digest and size of everything posted. */
  result(): Promise<{ digest: string; size: number }> {
    if (this.#ended) return Promise.reject(new Error('hash job already ended'));
    this.#ended = true;
    if (worker !== this.#w) {
      jobClosed();
      return Promise.reject(new Error('hashing failed: the hash worker exited'));
    }
    const p = new Promise<{ digest: string; size: number }>((resolve, reject) => waiting.set(this.#id, { resolve, reject }));
    this.#w.postMessage({ op: 'end', id: this.#id } satisfies HashRequest);
    return p.finally(jobClosed);
  }

  /** Forgets the job (its file is being discarded). */
  drop(): void {
    if (this.#ended) return;
    this.#ended = true;
    jobClosed();
    this.#w.postMessage({ op: 'drop', id: this.#id } satisfies HashRequest);
  }
}
