// bcrypt compares off the event loop, on one worker thread started on first use. A
// burst of wrong passwords queues there instead of stalling every pull; the thread is
// unreferenced while idle so it never keeps the process alive.
import { Worker } from 'node:worker_threads';

const SCRIPT = new URL('./bcrypt-thread.js', import.meta.url);

export class BcryptWorker {
  #worker?: Worker;
  #nextId = 1;
  readonly #waiting = new Map<number, (ok: boolean) => void>();

  /** Compares waiting or running. */
  get pending(): number {
    return this.#waiting.size;
  }

  /** Whether `password` matches `hash`; false when the thread fails (fails closed). */
  compare(password: string, hash: string): Promise<boolean> {
    const w = this.#thread();
    const id = this.#nextId++;
    const p = new Promise<boolean>((resolve) => this.#waiting.set(id, resolve));
    if (this.#waiting.size === 1) w.ref();
    w.postMessage({ id, password, hash });
    return p;
  }

  #thread(): Worker {
    if (this.#worker) return this.#worker;
    const w = new Worker(SCRIPT);
    w.on('message', (m: { id: number; ok: boolean }) => this.#settle(m.id, m.ok === true));
    const fail = () => {
      if (this.#worker !== w) return;
      this.#worker = undefined;
      for (const id of [...this.#waiting.keys()]) this.#settle(id, false);
    };
    w.on('error', fail);
    w.on('exit', fail);
    w.unref();
    this.#worker = w;
    return w;
  }

  #settle(id: number, ok: boolean): void {
    const resolve = this.#waiting.get(id);
    if (!resolve) return;
    this.#waiting.delete(id);
    if (this.#waiting.size === 0) this.#worker?.unref();
    resolve(ok);
  }

  /** Ends the thread (a server closing). */
  async close(): Promise<void> {
    const w = this.#worker;
    this.#worker = undefined;
    for (const id of [...this.#waiting.keys()]) this.#settle(id, false);
    await w?.terminate();
  }
}
