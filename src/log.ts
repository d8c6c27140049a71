// The logger. One line per event with a component and structured fields, as JSON for
// machines or as text for people; values under keys that name secrets are redacted (in
// both) so a credential can never reach a log line.
import type { LogFormat, LogLevel } from './config.js';
import { stderrSink } from './log-sink.js';

const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 };
const SECRET_KEY = /authorization|password|token|secret|cookie/i;
/** A signed URL (a store's presigned GET): its query is a credential, whatever key holds it. */
const SIGNED_QUERY = /\?[^\s"]*\b(X-Amz-Signature|X-Amz-Credential|Signature|sig)=[^\s"]*/gi;

export type LogFields = Record<string, unknown>;

export interface Logger {
  debug(msg: string, fields?: LogFields): void;
  info(msg: string, fields?: LogFields): void;
  warn(msg: string, fields?: LogFields): void;
  error(msg: string, fields?: LogFields): void;
  child(fields: LogFields): Logger;
}

export type LogSink = (line: string) => void;

export interface LogOptions {
  /** `json` (the default here) or `text`; `auto` is resolved by resolveLogFormat first. */
  format?: Exclude<LogFormat, 'auto'>;
  base?: LogFields;
}

/** `auto`: text for a person at a terminal, JSON for whatever collects the output. */
export function resolveLogFormat(format: LogFormat, isTTY = process.stderr.isTTY === true): Exclude<LogFormat, 'auto'> {
  return format === 'auto' ? (isTTY ? 'text' : 'json') : format;
}

/** A logger writing lines to `sink` (stderr by default, see log-sink.ts) at `level` and above. */
export function createLogger(level: LogLevel = 'info', sink?: LogSink, opts: LogOptions = {}): Logger {
  const min = LEVELS[level];
  const base = opts.base ?? {};
  const render = opts.format === 'text' ? textLine : jsonLine;
  const stderr = sink ? undefined : stderrSink();
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (LEVELS[lvl] < min) return;
    const line = render({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields });
    if (sink) sink(line);
    else if (LEVELS[lvl] >= LEVELS.warn) stderr!.flush(line);
    else stderr!.line(line);
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(level, sink, { ...opts, base: { ...base, ...fields } }),
  };
}

function jsonLine(event: LogFields): string {
  // The replacer is called for every key; most lines (a request's) have nothing it would change.
  return plain(event) ? JSON.stringify(event) : JSON.stringify(event, redact);
}

/** Flat fields whose strings the replacer would leave as they are: no secret key, no query, no nested object or error. */
function plain(event: LogFields): boolean {
  for (const key in event) {
    const v = event[key];
    if (typeof v === 'string') {
      if (v.includes('?') || secretKey(key)) return false;
    } else if (typeof v === 'object' && v !== null) return false;
  }
  return true;
}

/** SECRET_KEY's answer per key: a line's keys are the same few names again and again. */
const secretKeys = new Map<string, boolean>();

function secretKey(key: string): boolean {
  let secret = secretKeys.get(key);
  if (secret === undefined) {
    secret = SECRET_KEY.test(key);
    if (secretKeys.size < 1024) secretKeys.set(key, secret);
  }
  return secret;
}

/** The request line's own fields, shown first and bare: `GET /v2/... 200 12ms`. */
const REQUEST_HEAD = ['method', 'path', 'status'] as const;

/**
 * `2026-12-02T10:00:00.000Z INFO request GET /v2/x/blobs/... 200 12ms bytes=… key=value`.
 * Redacted exactly as the JSON line is: the fields go through the same replacer first.
 */
function textLine(event: LogFields): string {
  const { time, level, msg, ...fields } = JSON.parse(jsonLine(event)) as LogFields;
  const parts = [String(time), String(level).toUpperCase(), String(msg)];
  if (msg === 'request') {
    for (const k of REQUEST_HEAD) if (fields[k] !== undefined) parts.push(String(fields[k]));
    if (typeof fields.ms === 'number') parts.push(`${fields.ms}ms`);
    for (const k of [...REQUEST_HEAD, 'ms']) delete fields[k];
  }
  for (const [k, v] of Object.entries(fields)) if (v !== undefined) parts.push(`${k}=${textValue(v)}`);
  return parts.join(' ');
}

function textValue(v: unknown): string {
  if (v !== null && typeof v === 'object' && 'message' in v && 'name' in v) return JSON.stringify(`${String(v.name)}: ${String(v.message)}`);
  if (typeof v === 'string') return /^[^\s"=]+$/.test(v) ? v : JSON.stringify(v);
  return JSON.stringify(v);
}

function redact(key: string, value: unknown): unknown {
  if (value instanceof Error) return { name: value.name, message: unsign(value.message), code: (value as { code?: unknown }).code };
  if (typeof value !== 'string') return value;
  return SECRET_KEY.test(key) ? '[redacted]' : unsign(value);
}

function unsign(s: string): string {
  return s.includes('?') ? s.replace(SIGNED_QUERY, '?[redacted]') : s;
}

/** A logger that drops everything, for tests and library use. */
export const silentLogger: Logger = createLogger('error', () => {});
