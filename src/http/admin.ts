// Operational endpoints, outside /v2/: Prometheus metrics, liveness, readiness and the
// status summary that `regmirror status --server` reads.
import { Hono } from 'hono';
import type { Metrics } from '../metrics.js';

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
  return app;
}
