// `cache`, `gc` and `verify` with --server: the operations of cache-admin.ts run on a
// running server's own cache, for an operator who cannot reach its data dir (a container,
// a replica set on shared storage). The server answers the very report objects the
// commands build from a data dir, so both print through the same formatting code.
import { request } from '../upstream/undici-core.js';
import { MetadataUnavailable } from '../errors.js';
import type { CacheAdmin, CacheAnswer } from '../http/admin.js';
import { UsageError } from './args.js';
import { gc, listImages, removeImages, setPinned, verify, type Selector } from './cache-admin.js';
import type { CacheContext } from './context.js';

/** verify's progress, as the server streams it: every PROGRESS_EVERY blobs and the last. */
export interface VerifyProgress {
  type: 'progress';
  done: number;
  total: number;
  bytes: number;
}

/** A multiple of the thousand a non-terminal prints at, so both print the same lines. */
const PROGRESS_EVERY = 100;

/** The operations on the server's context, for the admin endpoints. */
export function serverCacheAdmin(ctx: CacheContext): CacheAdmin {
  return {
    run: async (op, body) => {
      if (op === 'ls') return { report: await listImages(ctx) };
      return refusable(async () => (op === 'rm' ? removeImages(ctx, selectorOf(body), flagOf(body, 'force')) : setPinned(ctx, imageOf(body), op === 'pin')));
    },
    job: (op, body) => {
      if (op === 'gc') {
        const dryRun = flagOf(body, 'dryRun');
        return { run: () => gc(ctx, dryRun) };
      }
      const repair = flagOf(body, 'repair');
      return {
        run: async (emit) => {
          const r = await verify(ctx, {
            repair,
            onProgress: (done, total, bytes) => {
              if (done === total || done % PROGRESS_EVERY === 0) emit({ type: 'progress', done, total, bytes } satisfies VerifyProgress);
            },
          });
          ctx.metrics.verifyFailures.inc(r.bad.length);
          ctx.metadata.bump('(store)', 'verify_failed', r.bad.length);
          return r;
        },
      };
    },
  };
}

/** A request the command would refuse (no such image, a bad name) is a 400 with its reason; a database outage stays a 503. */
async function refusable(fn: () => Promise<unknown>): Promise<CacheAnswer> {
  try {
    return { report: await fn() };
  } catch (err) {
    if (err instanceof MetadataUnavailable) throw err;
    return { refused: (err as Error).message };
  }
}

function imageOf(body: unknown): string {
  const image = (body as { image?: unknown } | null)?.image;
  if (typeof image !== 'string' || image === '') throw new Error('image: an image reference is required');
  return image;
}

function selectorOf(body: unknown): Selector {
  const b = (body ?? {}) as { image?: unknown; repository?: unknown; olderThanMs?: unknown };
  const given = [b.image, b.repository, b.olderThanMs].filter((x) => x !== undefined).length;
  if (given !== 1) throw new Error('name one of image, repository or olderThanMs');
  if (b.image !== undefined) return { image: imageOf(b) };
  if (typeof b.repository === 'string' && b.repository !== '') return { repository: b.repository };
  if (typeof b.olderThanMs === 'number' && Number.isFinite(b.olderThanMs) && b.olderThanMs > 0) return { olderThanMs: b.olderThanMs };
  throw new Error('repository: a repository name; olderThanMs: a positive number of milliseconds');
}

function flagOf(body: unknown, key: string): boolean {
  const v = (body as Record<string, unknown> | null)?.[key];
  if (v !== undefined && typeof v !== 'boolean') throw new Error(`${key}: must be true or false`);
  return v === true;
}

/**
 * Asks the server at `server` for one report: GET without a body, else POST it. Every
 * failure is one line for `command`; a refusal of the request itself reads as it would
 * against the data dir.
 */
export async function askServer<T>(server: string, command: string, path: string, body?: object, onProgress?: (p: VerifyProgress) => void): Promise<T> {
  const token = process.env.REGMIRROR_ADMIN_TOKEN;
  const headers: Record<string, string> = { ...(token ? { authorization: `Bearer ${token}` } : {}), ...(body ? { 'content-type': 'application/json' } : {}) };
  let res;
  try {
    // No body deadline: gc and verify say nothing until done, or between progress lines, for as long as the store takes.
    res = await request(new URL(path, server), { method: body ? 'POST' : 'GET', headers, body: body ? JSON.stringify(body) : undefined, headersTimeout: 30_000, bodyTimeout: 0 });
  } catch (err) {
    throw new UsageError(`regmirror ${command}: cannot reach ${server}: ${(err as Error).message}`);
  }
  if (res.statusCode !== 200) {
    const reason = errorOf(await res.body.text().catch(() => ''));
    if (res.statusCode === 400) throw new UsageError(`regmirror ${command}: ${reason}`);
    const hint = res.statusCode === 401 && !token ? ' (set REGMIRROR_ADMIN_TOKEN)' : '';
    throw new UsageError(`regmirror ${command}: ${server} refused (${res.statusCode}): ${reason}${hint}`);
  }
  if (!String(res.headers['content-type']).startsWith('application/x-ndjson')) return (await res.body.json()) as T;
  return readStream<T>(res.body, server, command, onProgress);
}

/** The progress lines of a long run, then its summary: the report, or the error it ended with. */
async function readStream<T>(body: AsyncIterable<Buffer | string>, server: string, command: string, onProgress?: (p: VerifyProgress) => void): Promise<T> {
  let buffered = '';
  for await (const chunk of body) {
    buffered += chunk.toString();
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const event = JSON.parse(buffered.slice(0, nl)) as VerifyProgress | { type: 'summary'; results: T | { error: string } };
      buffered = buffered.slice(nl + 1);
      if (event.type === 'progress') onProgress?.(event);
      else {
        const r = event.results as { error?: unknown };
        if (typeof r.error === 'string') throw new UsageError(`regmirror ${command}: ${server}: ${r.error}`);
        return event.results as T;
      }
    }
  }
  throw new UsageError(`regmirror ${command}: ${server} ended its answer without a summary`);
}

function errorOf(text: string): string {
  try {
    return (JSON.parse(text) as { error?: string }).error ?? text.slice(0, 200);
  } catch {
    return text.slice(0, 200);
  }
}
