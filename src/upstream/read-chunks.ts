// Reads a response body chunk by chunk as the socket delivers them. `for await` over a
// Readable calls read(), which concatenates whatever is buffered into a new Buffer: at a
// gigabyte a second that copy, and the allocation and garbage it makes, cost a good part
// of a download's CPU. Listening for 'data' hands over each chunk as received, and
// pausing while the consumer is busy keeps the same backpressure.
import type { Readable } from 'node:stream';

/**
 * Passes every chunk of `body` to `take`, in order; while a promise `take` returned is
 * pending the body is paused. Resolves at the body's end; rejects with the body's error,
 * with what `take` threw, or when the body closes before its end. The caller destroys
 * the body when this rejects.
 */
export function readChunks(body: Readable, take: (chunk: Buffer) => Promise<void> | undefined): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    let settled = false;
    const finish = (err?: Error) => {
      if (settled) return;
      settled = true;
      body.off('data', onData);
      body.off('end', onEnd);
      body.off('error', finish);
      body.off('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    /** What `take` is still busy with: the end counts only once it is done. */
    let busy: Promise<void> | undefined;
    const onData = (chunk: Buffer) => {
      let wait: Promise<void> | undefined;
      try {
        wait = take(chunk);
      } catch (err) {
        return finish(err as Error);
      }
      if (!wait) return;
      body.pause();
      busy = wait.then(
        () => {
          busy = undefined;
          if (!settled) body.resume();
        },
        (err: Error) => finish(err),
      );
    };
    let ended = false;
    const onEnd = () => {
      ended = true;
      void (busy ? busy.then(() => finish()) : finish());
    };
    // After 'end' the body closes itself, maybe before the consumer is done: that is no cut.
    const onClose = () => {
      if (!ended) finish(new Error('body closed before its end'));
    };
    body.on('error', finish);
    body.on('end', onEnd);
    body.on('close', onClose);
    body.on('data', onData);
  });
}
