// The parts of undici regmirror uses, loaded from undici's own lib files. The package index
// also loads fetch, WebSocket, EventSource, the HTTP cache and the mock agents (about 9 MiB
// of resident heap in a serve process that never uses them). Every src file that needs an
// undici value imports it from here; types still come from 'undici' (type-only, free).
import { createRequire } from 'node:module';
import type * as Undici from 'undici';

const load = createRequire(import.meta.url);

/** What `undici/lib/api` adds to every Dispatcher when the index loads. */
type Api = Pick<Undici.Dispatcher, 'request' | 'stream' | 'pipeline' | 'upgrade' | 'connect'>;
const DispatcherClass = load('undici/lib/dispatcher/dispatcher.js') as typeof Undici.Dispatcher;
const api = load('undici/lib/api/index.js') as Api;
// The index does exactly this; without it agent.request() would not exist.
Object.assign(DispatcherClass.prototype, api);

export const Agent = load('undici/lib/dispatcher/agent.js') as typeof Undici.Agent;
export type Agent = Undici.Agent;
export const buildConnector = load('undici/lib/core/connect.js') as typeof Undici.buildConnector;
const redirect = load('undici/lib/interceptor/redirect.js') as typeof Undici.interceptors.redirect;
export const interceptors: Pick<typeof Undici.interceptors, 'redirect'> = { redirect };
const { getGlobalDispatcher } = load('undici/lib/global.js') as { getGlobalDispatcher: typeof Undici.getGlobalDispatcher };

type RequestOptions = Parameters<typeof Undici.request>[1];

/**
 * undici's top-level request(url, options): the index builds it around the same api.request;
 * this is that wrapper for the URL shapes regmirror passes (a string or a URL, no opts.path).
 */
export function request(url: string | URL, opts: RequestOptions = {}): Promise<Undici.Dispatcher.ResponseData> {
  const u = typeof url === 'string' ? new URL(url) : url;
  const { dispatcher = getGlobalDispatcher(), ...rest } = opts ?? {};
  return dispatcher.request({
    ...rest,
    origin: u.origin,
    path: u.search ? `${u.pathname}${u.search}` : u.pathname,
    method: rest.method ?? (rest.body ? 'PUT' : 'GET'),
  } as Undici.Dispatcher.RequestOptions) as Promise<Undici.Dispatcher.ResponseData>;
}
