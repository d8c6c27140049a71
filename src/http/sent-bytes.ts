// Counts the body bytes a response really handed to its connection, whoever writes them
// (the blob serving loop, or @hono/node-server for every other body), so the access log
// says how much of a cut transfer went out, not what was meant to.
import type { Outgoing } from './body-writer.js';

export interface SentBytes {
  readonly bytes: number;
  /** Resolves when the response is over: all sent (`complete`), or cut first. */
  readonly done: Promise<{ complete: boolean }>;
}

type Write = (chunk: unknown, ...rest: unknown[]) => unknown;

/** Wraps this one response's write and end; nothing else about it changes. */
export function countSentBytes(out: Outgoing): SentBytes {
  let bytes = 0;
  const count = (chunk: unknown, encoding: unknown) => {
    if (typeof chunk === 'string') bytes += Buffer.byteLength(chunk, typeof encoding === 'string' ? (encoding as BufferEncoding) : 'utf8');
    else if (chunk instanceof Uint8Array) bytes += chunk.byteLength;
  };
  const target = out as unknown as { write: Write; end: Write };
  const write = target.write;
  const end = target.end;
  // An HTTP/2 response's end() writes its chunk through write(): counted once, in end().
  let ending = false;
  target.write = function (this: unknown, chunk, ...rest) {
    if (!ending) count(chunk, rest[0]);
    return write.call(this, chunk, ...rest);
  };
  target.end = function (this: unknown, chunk, ...rest) {
    if (typeof chunk !== 'function') count(chunk, rest[0]);
    ending = true;
    try {
      return end.call(this, chunk, ...rest);
    } finally {
      ending = false;
    }
  };
  // 'finish' (all handed to the connection) comes before the client can have read it all,
  // so the line is there once the client has its answer; 'close' without it is a cut.
  const done = new Promise<{ complete: boolean }>((resolve) => {
    if (out.destroyed || out.writableFinished) return resolve({ complete: out.writableFinished });
    out.once('finish', () => resolve({ complete: true }));
    out.once('close', () => resolve({ complete: out.writableFinished }));
  });
  return {
    get bytes() {
      return bytes;
    },
    done,
  };
}
