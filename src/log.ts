// JSON-lines logger. One line per event with a component and structured fields; values
// under keys that name secrets are redacted so a credential can never reach a log line.
import type { LogLevel } from './config.js';

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

/** A logger writing JSON lines to `sink` (stderr by default) at `level` and above. */
export function createLogger(level: LogLevel = 'info', sink: LogSink = (l) => process.stderr.write(l + '\n'), base: LogFields = {}): Logger {
  const min = LEVELS[level];
  const emit = (lvl: LogLevel, msg: string, fields?: LogFields) => {
    if (LEVELS[lvl] < min) return;
    sink(JSON.stringify({ time: new Date().toISOString(), level: lvl, msg, ...base, ...fields }, redact));
  };
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (fields) => createLogger(level, sink, { ...base, ...fields }),
  };
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
