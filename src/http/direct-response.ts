// Answers written straight into the Node response under @hono/node-server: blob bodies
// through the serving loop, and the small bodies of a manifest GET in one end(). A hono Response would be turned back into Node headers per request (a
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
  writeHead(c, out, status, headers);
  const streamed: Streamed = new Promise((resolve) => {
    const sent = bytes?.byteLength ?? 0;
    out.once('finish', () => resolve({ status, complete: true, bytes: sent }));
    // 'close' without 'finish': the connection went before the answer was handed over.
    out.once('close', () => resolve({ status, complete: out.writableFinished, bytes: sent }));
  });
  c.set('streamed', streamed);
  if (bytes) out.end(bytes);
  else out.end();
  return RESPONSE_ALREADY_SENT;
}
