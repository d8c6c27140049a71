// Servers the tests start as child processes (PostgreSQL, Ceph), each with a temp dir:
// none may outlive the test process, even one ended by a signal that skips exit hooks.
import type { ChildProcess } from 'node:child_process';
import { rmSync } from 'node:fs';
import { createServer } from 'node:net';

/**
 * Remembers running daemons; on exit, or on SIGINT/SIGTERM/SIGHUP (then raised again so
 * the process ends as it would have), each gets `signal` and its dir is removed.
 */
export class DaemonRegistry {
  readonly #running = new Map<ChildProcess, string>();
  #hooked = false;

  constructor(readonly signal: NodeJS.Signals) {}

  add(child: ChildProcess, dir: string): void {
    this.#hook();
    this.#running.set(child, dir);
  }

  delete(child: ChildProcess): void {
    this.#running.delete(child);
  }

  #hook(): void {
    if (this.#hooked) return;
    this.#hooked = true;
    const killAll = () => {
      for (const [child, dir] of this.#running) {
        child.kill(this.signal);
        rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      }
    };
    process.once('exit', killAll);
    for (const sig of ['SIGINT', 'SIGTERM', 'SIGHUP'] as const) {
      process.once(sig, () => {
        killAll();
        process.kill(process.pid, sig);
      });
    }
  }
}

/** A loopback port nothing listens on now: the kernel's pick for :0, released again. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const addr = srv.address();
      srv.close(() => (typeof addr === 'object' && addr ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
}
