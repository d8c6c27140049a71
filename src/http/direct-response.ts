// Answers written straight into the Node response under @hono/node-server: blob bodies
// through the serving loop, and the small bodies of a manifest GET or of a blob held in
// memory in one end(). A hono Response would be turned back into Node headers per request (a
// Headers object built, sorted and copied), which was a tenth of a warm manifest's
// allocations. The access log learns how the answer ended from `streamed`.
import { Readable } from 'node:stream';
import { RESPONSE_ALREADY_SENT } from '@hono/node-server/utils/response';
import type { Context } from 'hono';
import { READ_CHUNK, sourceToReadable, type BodySource } from '../cache/blobs.js';
import { writeBody, type Outgoing, type Written } from './body-writer.js';

/** How an answer written here ended: the status sent, whether every byte went, and how many were handed to the connection. */
export type Streamed = Promise<{ status: number } & Written>;

/** The Node response under @hono/node-server; undefined elsewhere (app.request() in a test). */
export function outgoingOf(c: Context): Outgoing | undefined {
  return (c.env as { outgoing?: Outgoing } | undefined)?.outgoing;
}

function writeHead(c: Context, out: Outgoing, status: number, headers: Record<string, string>): void {
  const id = c.get('requestId') as string | undefined;
  headers['docker-distribution-api-version'] = 'registry/2.0';
  if (id) headers['x-request-id'] = id;
  out.writeHead(status, headers);
}

/** Streams `body` (its headers in `headers`, which this takes over) through the serving loop. */
export function sendBody(c: Context, status: number, headers: Record<string, string>, body: BodySource, length: number | undefined): Response {
  const out = outgoingOf(c);
  if (!out) return new Response(Readable.toWeb(sourceToReadable(body, READ_CHUNK)) as ReadableStream, { status, headers });
  // A small blob held in memory goes in one write, without the loop's buffers and promises.
  if (body.whole) return endWith(c, out, status, headers, body.whole, body);
  writeHead(c, out, status, headers);
  // The access log waits for this: the status hono sees is the shared placeholder's.
  c.set('streamed', writeBody(out, body, length).then((w) => ({ status, ...w })));
  return RESPONSE_ALREADY_SENT;
}

/** Answers with `bytes` (null for a HEAD or an empty body) in one write; `headers` is taken over. */
export function sendBytes(c: Context, status: number, headers: Record<string, string>, bytes: Uint8Array | null): Response {
  // hono answers a HEAD by wrapping what the GET route returned in a new Response, which
  // @hono/node-server would then write a second time: a HEAD goes the ordinary way.
  const out = c.req.method === 'HEAD' ? undefined : outgoingOf(c);
  if (!out) return bytes ? c.body(bytes as Uint8Array<ArrayBuffer>, status as 200, headers) : c.body(null, status as 200, headers);
  return endWith(c, out, status, headers, bytes);
}

/** Writes the head and `bytes` in one end(); `source`, if any, is closed once the response finished or closed. */
function endWith(c: Context, out: Outgoing, status: number, headers: Record<string, string>, bytes: Uint8Array | null, source?: BodySource): Response {
  // A client gone while the answer was being prepared: its 'close' has fired already.
  if (out.destroyed) {
    void source?.close().catch(() => undefined);
    c.set('streamed', Promise.resolve({ status, complete: false, bytes: 0 }));
    return RESPONSE_ALREADY_SENT;
  }
  writeHead(c, out, status, headers);
  const sent = bytes?.byteLength ?? 0;
  const streamed: Streamed = new Promise((resolve) => {
    const ended = (complete: boolean) => {
      out.off('finish', onFinish);
      out.off('close', onClose);
      void source?.close().catch(() => undefined);
      resolve({ status, complete, bytes: sent });
    };
    const onFinish = () => ended(true);
    // 'close' without 'finish': the connection went before the answer was handed over.
    const onClose = () => ended(out.writableFinished);
    out.once('finish', onFinish);
    out.once('close', onClose);
  });
  c.set('streamed', streamed);
  if (bytes) out.end(bytes);
  else out.end();
  return RESPONSE_ALREADY_SENT;
}
