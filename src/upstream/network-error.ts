// Connection failures in words an operator can act on: which upstream, at which URL, and
// what happened (`docker.io (https://registry-1.docker.io) unreachable: connection
// refused`, `...: no response headers within 30s`), instead of a bare errno.

export interface NetworkTimeouts {
  connectMs?: number;
  headersMs?: number;
}

/** Failures before a connection existed: the upstream could not be reached at all. */
const UNREACHABLE: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ENOTFOUND: 'no such host (DNS)',
  EAI_AGAIN: 'DNS lookup failed (temporary)',
  EAI_FAIL: 'DNS lookup failed',
  EHOSTUNREACH: 'no route to host',
  ENETUNREACH: 'network unreachable',
  ECONNABORTED: 'connection aborted',
};

/** Failures on a connection that was made: it answered badly, not never. */
const BROKEN: Record<string, string> = {
  ECONNRESET: 'connection reset before the response',
  EPIPE: 'connection closed before the response',
  UND_ERR_SOCKET: 'connection closed before the response',
  UND_ERR_CLOSED: 'connection closed before the response',
};

/** The message for a request to `label` at `origin` that failed with `err`. */
export function describeNetworkFailure(label: string, origin: string, err: unknown, t: NetworkTimeouts = {}): string {
  const who = `${label} (${origin})`;
  const code = codeOf(err);
  if (code === 'UND_ERR_CONNECT_TIMEOUT' || code === 'ETIMEDOUT') return `${who} unreachable: no connection within ${inWords(t.connectMs)}`;
  if (code === 'UND_ERR_HEADERS_TIMEOUT') return `${who}: no response headers within ${inWords(t.headersMs)}`;
  if (code !== undefined && UNREACHABLE[code]) return `${who} unreachable: ${UNREACHABLE[code]}`;
  if (code !== undefined && BROKEN[code]) return `${who}: ${BROKEN[code]}`;
  const message = (err as { message?: unknown } | undefined)?.message;
  return `${who} unreachable: ${code ?? (typeof message === 'string' && message ? message : 'network error')}`;
}

/** undici puts the errno on the error, or on its cause; a happy-eyeballs failure on each attempt. */
function codeOf(err: unknown): string | undefined {
  const e = err as { code?: unknown; cause?: { code?: unknown }; errors?: Array<{ code?: unknown }> } | undefined;
  const code = e?.code ?? e?.cause?.code ?? e?.errors?.[0]?.code;
  return typeof code === 'string' ? code : undefined;
}

/** 30000 → `30s`, 1500 → `1.5s`, 250 → `250ms`; unknown → `the timeout`. */
export function inWords(ms: number | undefined): string {
  if (ms === undefined) return 'the timeout';
  return ms < 1000 ? `${ms}ms` : `${Math.round(ms / 100) / 10}s`;
}
