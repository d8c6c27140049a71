// A JSON-lines response body fed by a job that emits events as it works. The client may
// leave at any moment: once the reader is gone every later emit is dropped, so no timer
// or callback of the job can write to a closed stream.
export type Emit = (event: object) => void;

/** Streams `run`'s events, then `{ type: 'summary', results }` (or `{ error }` if it rejects). */
export function ndjsonStream(run: (emit: Emit) => Promise<unknown>): ReadableStream<Uint8Array> {
  const encoder = new TextEncoder();
  let open = true;
  return new ReadableStream<Uint8Array>({
    start(controller) {
      const emit: Emit = (event) => {
        if (!open) return;
        try {
          controller.enqueue(encoder.encode(JSON.stringify(event) + '\n'));
        } catch {
          // Closed between the check and the write (the reader cancelled): nobody to tell.
          open = false;
        }
      };
      // Not awaited: start() resolving is what lets the first bytes flow.
      void run(emit)
        .catch((err: Error) => ({ error: err.message }))
        .then((results) => {
          emit({ type: 'summary', results });
          if (!open) return;
          open = false;
          controller.close();
        });
    },
    cancel() {
      open = false;
    },
  });
}
