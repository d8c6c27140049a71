// Operational endpoints, outside /v2/: Prometheus metrics, liveness, readiness and the
// status summary that `regmirror status --server` reads.
import { timingSafeEqual } from 'node:crypto';
import { Hono } from 'hono';
import type { Metrics } from '../metrics.js';
import { ndjsonStream } from './ndjson-stream.js';

export interface Readiness {
  ok: boolean;
  checks: Record<string, string>;
}

export interface AdminDeps {
  metrics: Metrics;
  /** Database and store writable. */
  readiness: () => Promise<Readiness>;
  /** The status summary as JSON. */
  status: () => unknown;
  /** Runs a prewarm described by a JSON body, emitting progress events; throws on a bad body before emitting. */
  prewarm?: (body: unknown) => { run: (emit: (event: object) => void) => Promise<unknown> };
  /** Bearer token that POST endpoints require, when set. */
  adminToken?: string;
}

/** The admin routes, mounted at the root beside /v2/. */
export function adminRoutes(deps: AdminDeps): Hono {
  const app = new Hono();
  app.get('/metrics', async (c) => c.body(await deps.metrics.registry.metrics(), 200, { 'content-type': deps.metrics.registry.contentType }));
  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/readyz', async (c) => {
    const r = await deps.readiness();
    return c.json(r, r.ok ? 200 : 503);
  });
  app.get('/_regmirror/status', (c) => c.json(deps.status() as object));
  app.post('/_regmirror/prewarm', async (c) => {
    if (!deps.prewarm) return c.json({ error: 'prewarm is not available' }, 404);
    if (deps.adminToken !== undefined && !tokenMatches(c.req.header('authorization'), deps.adminToken)) {
      return c.json({ error: 'admin token required' }, 401, { 'www-authenticate': 'Bearer realm="regmirror-admin"' });
    }
    let job;
    try {
      job = deps.prewarm(await c.req.json());
    } catch (err) {
      return c.json({ error: (err as Error).message }, 400);
    }
    // Progress is streamed as JSON lines, so a CI job sees it while the server works. A
    // client that leaves does not stop the job: what it fetched is cached all the same.
    const body = ndjsonStream((emit) => job.run(emit));
    return new Response(body, { status: 200, headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' } });
  });
  return app;
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (token.trim() === '') return false;
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}
