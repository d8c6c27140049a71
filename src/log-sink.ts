// Where log lines go: stderr, one write per turn of the event loop. process.stderr writes
// synchronously to a file or a pipe, so a line per request was a write(2) per request on
// the serving path (a quarter of a warm hit's CPU under 256 connections). Lines wait for
// the end of the turn that logged them, or until 64 KiB wait; warnings and errors go out
// at once with what waits before them, and whatever waits is written before the process
// exits, so the last lines before a crash or an exit are not lost.
import type { LogSink } from './log.js';

const MAX_WAITING = 64 * 1024;

export interface BatchedSink {
  /** Queues a line. */
  line: LogSink;
  /** Writes what waits, then `line` if given, now. */
  flush: (line?: string) => void;
}

/** Lines to `write` (stderr by default), batched per turn of the event loop. */
export function batchedSink(write: (text: string) => void = (t) => void process.stderr.write(t)): BatchedSink {
  let waiting = '';
  let scheduled = false;
  const flush = (line?: string) => {
    const text = line === undefined ? waiting : waiting + line + '\n';
    waiting = '';
    if (text) write(text);
  };
  const turnEnded = () => {
    scheduled = false;
    flush();
  };
  const line = (l: string) => {
    waiting += l + '\n';
    if (waiting.length >= MAX_WAITING) flush();
    else if (!scheduled) {
      scheduled = true;
      setImmediate(turnEnded);
    }
  };
  return { line, flush };
}

let shared: BatchedSink | undefined;

/** The process's one stderr sink, so that lines from every logger keep their order; what waits at exit is written then. */
export function stderrSink(): BatchedSink {
  if (!shared) {
    const sink = batchedSink();
    process.on('exit', () => sink.flush());
    shared = sink;
  }
  return shared;
}
