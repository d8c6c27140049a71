// Concurrency slots of an upstream's requests: a slot is held from the request until its
// caller releases it (a blob body holds one while it streams), and a request that must
// not wait long gives up after a deadline.
import type { LimitFunction } from 'p-limit';
import { UpstreamUnavailable } from '../errors.js';

/** A slot of `limit`, released by calling the function it resolves to; rejects after `deadlineMs` in the queue. */
export function acquireSlot(limit: LimitFunction, upstream: string, deadlineMs?: number): Promise<() => void> {
  return new Promise((resolveAcquire, rejectAcquire) => {
    let gaveUp = false;
    const timer =
      deadlineMs === undefined
        ? undefined
        : setTimeout(() => {
            gaveUp = true;
            rejectAcquire(new UpstreamUnavailable(`${upstream}: no upstream slot came free within ${deadlineMs} ms (${limit.activeCount} requests in flight)`));
          }, deadlineMs).unref();
    void limit(
      () =>
        new Promise<void>((release) => {
          // The slot came after the caller left: hand it straight on.
          if (gaveUp) return release();
          clearTimeout(timer);
          let released = false;
          resolveAcquire(() => {
            if (!released) {
              released = true;
              release();
            }
          });
        }),
    );
  });
}
