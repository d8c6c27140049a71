// Which PostgreSQL failures mean "the database cannot be reached right now" (the caller
// may serve from memory, retry or answer 503) rather than "this operation is wrong". Only
// the first kind becomes MetadataUnavailable; everything else propagates as it is.
import { MetadataUnavailable } from '../../errors.js';

/** Socket-level failures of connecting to or talking with the server. */
const NETWORK_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'ETIMEDOUT', 'EPIPE', 'EHOSTUNREACH', 'ENETUNREACH', 'ENOTFOUND', 'EAI_AGAIN']);

/**
 * SQLSTATEs of a server that is going away, starting, cancelled our statement (our
 * statement_timeout) or is out of connections. Class 08 (connection exceptions) is
 * matched as a whole.
 */
const SERVER_CODES = new Set(['57P01', '57P02', '57P03', '57014', '53300']);

/** pg's own messages for a lost connection, a pool that found no connection in time, and its query timeout. */
const PG_MESSAGES = [/^Connection terminated/, /^timeout exceeded when trying to connect/, /^Query read timeout/, /^Client has encountered a connection error/];

/** The short reason when `err` is a connection-class failure, else undefined. */
export function unavailableReason(err: unknown): string | undefined {
  if (!(err instanceof Error)) return undefined;
  if (err instanceof MetadataUnavailable) return err.reason;
  const code = (err as { code?: unknown }).code;
  if (typeof code === 'string' && (NETWORK_CODES.has(code) || SERVER_CODES.has(code) || /^08[0-9A-Z]{3}$/.test(code))) return code;
  const message = PG_MESSAGES.find((m) => m.test(err.message));
  if (message) return err.message.split('\n')[0];
  // Node wraps a connect to every address of a name in an AggregateError.
  if (err instanceof AggregateError) return err.errors.map(unavailableReason).find((r) => r !== undefined);
  return undefined;
}

/** `err` as a backend caller should see it: MetadataUnavailable for a connection-class failure. */
export function storeError(err: unknown): unknown {
  const reason = unavailableReason(err);
  return reason === undefined || err instanceof MetadataUnavailable ? err : new MetadataUnavailable(reason);
}
