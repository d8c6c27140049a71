// Operational endpoints, outside /v2/: Prometheus metrics, liveness, readiness and the
// status summary that `regmirror status --server` reads, and the server-side prewarm.
//
// Who may call them (README and mirror.example.yaml state the same rule):
//   /metrics, /healthz, /readyz   anyone: they carry no credential, user name or path
//   /_regmirror/status            anyone without client auth; with it, a client credential or the admin token
//   /_regmirror/events            as status
//   /, /_regmirror/ui (and /data)  the status page: as status (/_regmirror/ui/login asks a browser for it)
//   /_regmirror/ui/<file>         anyone: the page's script, style and uPlot, which carry no data
//   /_regmirror/prewarm           the admin token when one is set; else as status
//   /_regmirror/cache, gc, verify  as prewarm (they change the cache as much as it does)
//   /_regmirror/tags, tags/accept  as prewarm (an accept changes what a tag serves)
import { timingSafeEqual } from 'node:crypto';
import { Hono, type Context } from 'hono';
import type { Metrics } from '../metrics.js';
import { ClientAuth, clientAddress } from './access.js';
import { ndjsonStream, type Emit } from './ndjson-stream.js';
import { PAGE_CSP, renderPage, renderRefused, uiAssets, UI_PREFIX, type Dashboard } from './status-page.js';

export interface Readiness {
  ok: boolean;
  checks: Record<string, string>;
}

export interface AdminDeps {
  metrics: Metrics;
  /** Database and store writable. */
  readiness: () => Promise<Readiness>;
  /** The status summary as JSON. */
  status: () => Promise<object>;
  /** The events recorded, newest first, as `regmirror events --server` reads them. */
  events?: (q: EventsQuery) => Promise<object[]>;
  /** What the status page shows; without it there is no page. */
  dashboard?: () => Promise<Dashboard>;
  /** Runs a prewarm described by a JSON body, emitting progress events; throws on a bad body before emitting. */
  prewarm?: (body: unknown) => { run: (emit: (event: object) => void) => Promise<unknown> };
  /** `cache`, `gc` and `verify --server`: the same operations on the server's own cache. */
  cacheAdmin?: CacheAdmin;
  /** `tags ls|accept --server`: the immutable tags' pending changes. */
  tagsAdmin?: TagsAdmin;
  /** Bearer token that prewarm and the cache endpoints require, and that status accepts, when set. */
  adminToken?: string;
  /** Client access control of /v2: when set, status, prewarm and the cache endpoints are closed to anonymous callers too. */
  clientAuth?: ClientAuth;
}

export interface EventsQuery {
  /** ms since the epoch. */
  since?: number;
  kinds: string[];
  limit: number;
}

/** A quick cache operation's answer: the report its command prints, or why the request is refused (400). */
export type CacheAnswer = { report: unknown } | { refused: string };

export interface CacheAdmin {
  /** `cache ls|pin|unpin|rm`, given the JSON body (ls has none). */
  run(op: 'ls' | 'pin' | 'unpin' | 'rm', body: unknown): Promise<CacheAnswer>;
  /** `gc` and `verify`, long runs: throws on a bad body before it starts, emits progress while it runs. */
  job(op: 'gc' | 'verify', body: unknown): { run: (emit: Emit) => Promise<unknown> };
}

export interface TagsAdmin {
  ls(): Promise<CacheAnswer>;
  /** The body names the image: `{ "image": "docker.io/library/nginx:v1.0" }`. */
  accept(body: unknown): Promise<CacheAnswer>;
}

/** A prewarm request names images, platforms and a few options: a megabyte is plenty. */
const MAX_PREWARM_BODY = 1024 * 1024;

/** The admin routes, mounted at the root beside /v2/. */
export function adminRoutes(deps: AdminDeps): Hono {
  const app = new Hono();
  app.get('/metrics', async (c) => c.body(await deps.metrics.registry.metrics(), 200, { 'content-type': deps.metrics.registry.contentType }));
  app.get('/healthz', (c) => c.json({ ok: true }));
  app.get('/readyz', async (c) => {
    const r = await deps.readiness();
    return c.json(r, r.ok ? 200 : 503);
  });
  app.get('/_regmirror/status', async (c) => {
    if (!(await mayRead(deps, c.req.header('authorization'), clientAddress(c.env)))) return refuse(c, 'a client credential or the admin token is required', ClientAuth.challenge);
    return c.json(await deps.status());
  });
  app.get('/_regmirror/events', async (c) => {
    if (!deps.events) return c.json({ error: 'events are not available' }, 404);
    if (!(await mayRead(deps, c.req.header('authorization'), clientAddress(c.env)))) return refuse(c, 'a client credential or the admin token is required', ClientAuth.challenge);
    const q = eventsQuery(c.req.query('since'), c.req.query('kind'), c.req.query('limit'));
    if ('error' in q) return c.json(q, 400);
    return c.json(await deps.events(q), 200, { 'cache-control': 'no-store' });
  });
  if (deps.dashboard) statusPage(app, deps, deps.dashboard);
  app.post('/_regmirror/prewarm', async (c) => {
    if (!deps.prewarm) return c.json({ error: 'prewarm is not available' }, 404);
    const refused = await mayChange(deps, c);
    if (refused) return refused;
    const request = await readJson(c.req.raw);
    if ('status' in request) return c.json({ error: request.error }, request.status);
    let job;
    try {
      job = deps.prewarm(request.value);
    } catch (err) {
      return c.json({ error: (err as Error).message }, 400);
    }
    // Progress is streamed as JSON lines, so a CI job sees it while the server works. A
    // client that leaves does not stop the job: what it fetched is cached all the same.
    return ndjsonResponse(job);
  });
  if (deps.cacheAdmin) cacheRoutes(app, deps, deps.cacheAdmin);
  if (deps.tagsAdmin) tagRoutes(app, deps, deps.tagsAdmin);
  return app;
}

function ndjsonResponse(job: { run: (emit: Emit) => Promise<unknown> }): Response {
  const body = ndjsonStream((emit) => job.run(emit));
  return new Response(body, { status: 200, headers: { 'content-type': 'application/x-ndjson', 'cache-control': 'no-store' } });
}

/** The cache commands' endpoints, under prewarm's rule. */
function cacheRoutes(app: Hono, deps: AdminDeps, admin: CacheAdmin): void {
  const answer = async (c: Context, op: 'ls' | 'pin' | 'unpin' | 'rm', body: unknown) => {
    const a = await admin.run(op, body);
    return 'refused' in a ? c.json({ error: a.refused }, 400) : c.json(a.report as object, 200, { 'cache-control': 'no-store' });
  };
  app.get('/_regmirror/cache', async (c) => (await mayChange(deps, c)) ?? answer(c, 'ls', undefined));
  for (const op of ['pin', 'unpin', 'rm'] as const) {
    app.post(`/_regmirror/cache/${op}`, async (c) => {
      const refused = await mayChange(deps, c);
      if (refused) return refused;
      const request = await readJson(c.req.raw);
      if ('status' in request) return c.json({ error: request.error }, request.status);
      return (op === 'rm' ? removing(deps, c) : undefined) ?? answer(c, op, request.value);
    });
  }
  for (const op of ['gc', 'verify'] as const) {
    app.post(`/_regmirror/${op}`, async (c) => {
      const refused = await mayChange(deps, c);
      if (refused) return refused;
      const request = await readJson(c.req.raw);
      if ('status' in request) return c.json({ error: request.error }, request.status);
      const body = (request.value ?? {}) as { dryRun?: unknown; repair?: unknown };
      const removes = op === 'gc' ? body.dryRun !== true : body.repair === true;
      const refusedRemoval = removes ? removing(deps, c) : undefined;
      if (refusedRemoval) return refusedRemoval;
      let job;
      try {
        job = admin.job(op, request.value);
      } catch (err) {
        return c.json({ error: (err as Error).message }, 400);
      }
      // As prewarm: a client that leaves does not stop the run, whose changes stand either way.
      return ndjsonResponse(job);
    });
  }
}

/** `tags ls` and `tags accept`, under prewarm's rule. */
function tagRoutes(app: Hono, deps: AdminDeps, admin: TagsAdmin): void {
  const answer = (c: Context, a: CacheAnswer) => ('refused' in a ? c.json({ error: a.refused }, 400) : c.json(a.report as object, 200, { 'cache-control': 'no-store' }));
  app.get('/_regmirror/tags', async (c) => (await mayChange(deps, c)) ?? answer(c, await admin.ls()));
  app.post('/_regmirror/tags/accept', async (c) => {
    const refused = await mayChange(deps, c);
    if (refused) return refused;
    const request = await readJson(c.req.raw);
    if ('status' in request) return c.json({ error: request.error }, request.status);
    return answer(c, await admin.accept(request.value));
  });
}

/** The status page and its data, under the rule of status; its static files, open. */
function statusPage(app: Hono, deps: AdminDeps, dashboard: () => Promise<Dashboard>): void {
  const assets = uiAssets();
  const headers = { 'content-security-policy': PAGE_CSP, 'x-content-type-options': 'nosniff', 'cache-control': 'no-store' };
  const allowed = (c: Context) => mayRead(deps, c.req.header('authorization'), clientAddress(c.env));
  // The refusal carries no challenge: a browser would hold it back behind a login dialog
  // (a headless one shows nothing at all). Its sign-in link asks for Basic credentials
  // under /_regmirror/ui/, which the browser then sends to the page and its data.
  const page = async (c: Context) => {
    if (!(await allowed(c))) return c.html(renderRefused('A client credential or the admin token is required.', `${UI_PREFIX}/login`), 401, headers);
    return c.html(renderPage(await dashboard()), 200, headers);
  };
  app.get('/', page);
  app.get(UI_PREFIX, page);
  app.get(`${UI_PREFIX}/`, page);
  app.get(`${UI_PREFIX}/login`, async (c) => {
    if (await allowed(c)) return c.redirect(`${UI_PREFIX}/`, 303);
    return c.html(renderRefused('A client credential or the admin token is required.'), 401, { ...headers, 'www-authenticate': ClientAuth.challenge });
  });
  app.get(`${UI_PREFIX}/data`, async (c) => {
    if (!(await allowed(c))) return refuse(c, 'a client credential or the admin token is required', ClientAuth.challenge);
    return c.json(await dashboard(), 200, headers);
  });
  // One static route per asset: a `:file` parameter beside the static /login and /data
  // makes hono fall back from its single-regex router to the trie for every request.
  for (const [file, asset] of assets) {
    app.get(`${UI_PREFIX}/${file}`, (c) => c.body(asset.body, 200, { ...headers, 'content-type': asset.type, 'cache-control': 'public, max-age=300' }));
  }
}

/** `since` (ms since the epoch, or an ISO 8601 time), `kind` (comma-separated), `limit` (1 to 1000, default 100). */
function eventsQuery(since: string | undefined, kind: string | undefined, limit: string | undefined): EventsQuery | { error: string } {
  const at = since === undefined ? undefined : /^\d+$/.test(since) ? Number(since) : Date.parse(since);
  if (at !== undefined && !Number.isFinite(at)) return { error: 'since: ms since the epoch, or an ISO 8601 time' };
  const n = limit === undefined ? 100 : Number(limit);
  if (!Number.isInteger(n) || n < 1 || n > 1000) return { error: 'limit: a whole number from 1 to 1000' };
  const kinds = (kind ?? '').split(',').map((k) => k.trim()).filter((k) => k !== '');
  return { ...(at === undefined ? {} : { since: at }), kinds, limit: n };
}

/** The JSON body, at most MAX_PREWARM_BODY bytes; a body cut by its sender is a 400, never a throw. */
async function readJson(req: Request): Promise<{ value: unknown } | { status: 400 | 413; error: string }> {
  const tooLarge = { status: 413 as const, error: `the request body is over ${MAX_PREWARM_BODY} bytes` };
  if (Number(req.headers.get('content-length') ?? 0) > MAX_PREWARM_BODY) return tooLarge;
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    const reader = req.body?.getReader();
    for (;;) {
      const chunk = await reader?.read();
      if (!chunk || chunk.done) break;
      size += chunk.value.length;
      if (size > MAX_PREWARM_BODY) {
        await reader!.cancel().catch(() => undefined);
        return tooLarge;
      }
      chunks.push(chunk.value);
    }
  } catch {
    return { status: 400, error: 'the request body ended early' };
  }
  try {
    return { value: JSON.parse(Buffer.concat(chunks).toString('utf8')) };
  } catch {
    return { status: 400, error: 'the request body is not JSON' };
  }
}

/** Prewarm and the cache commands: the admin token when one is set, else as status; a refusal, or undefined to go on. */
async function mayChange(deps: AdminDeps, c: Context): Promise<Response | undefined> {
  const header = c.req.header('authorization');
  if (deps.adminToken !== undefined) {
    if (!tokenMatches(header, deps.adminToken)) return refuse(c, 'admin token required', 'Bearer realm="regmirror-admin"');
  } else if (!(await mayRead(deps, header, clientAddress(c.env)))) return refuse(c, 'a client credential is required', ClientAuth.challenge);
  return undefined;
}

/**
 * What removes content (cache rm, gc, verify --repair) from a running server needs an
 * admin token configured: open by default, as prewarm is, it would let anyone who can
 * pull empty the cache.
 */
function removing(deps: AdminDeps, c: Context): Response | undefined {
  if (deps.adminToken !== undefined) return undefined;
  return c.json({ error: 'removing content through a running server needs adminToken in its config' }, 403);
}

/** Status: open when pulls are; with client auth, a client credential or the admin token. */
async function mayRead(deps: AdminDeps, header: string | undefined, client: string): Promise<boolean> {
  if (!deps.clientAuth) return true;
  if (deps.adminToken !== undefined && tokenMatches(header, deps.adminToken)) return true;
  return deps.clientAuth.allows(header, client);
}

function refuse(c: Context, error: string, challenge: string): Response {
  return c.json({ error }, 401, { 'www-authenticate': challenge });
}

function tokenMatches(header: string | undefined, token: string): boolean {
  if (token.trim() === '') return false;
  const given = Buffer.from(header?.replace(/^Bearer\s+/i, '') ?? '');
  const want = Buffer.from(token);
  return given.length === want.length && timingSafeEqual(given, want);
}
