// Events in the metadata seam: what the mirror told its operators (see src/events/), kept
// so that `regmirror events`, status and the status page can list them after the fact.
// The store knows nothing of the kinds: a kind is a short name, details a small JSON
// object. SQLite and PostgreSQL implement it on an `events` table; the times are the
// recorder's, given in each row.

export interface EventRow {
  /** ms since the epoch. */
  at: number;
  kind: string;
  upstream?: string;
  repository?: string;
  tag?: string;
  digest?: string;
  message: string;
  details?: Record<string, string | number | boolean>;
  /** How many occurrences the row stands for (a flood is stored once a minute); 1 if absent. */
  count?: number;
}

export interface StoredEvent extends EventRow {
  /** Increasing in the order rows were appended. */
  id: number;
  count: number;
}

export interface EventQuery {
  /** Rows at or after this time. */
  since?: number;
  /** Rows before this time. */
  until?: number;
  /** Only these kinds (empty or absent: every kind). */
  kinds?: readonly string[];
  /** At most this many rows (default 100). */
  limit?: number;
}

export interface EventStore {
  /** Adds the rows, all of them or none. */
  append(rows: readonly EventRow[]): Promise<void>;
  /** The rows matching, newest first (ties: the later appended first). */
  list(q?: EventQuery): Promise<StoredEvent[]>;
  /** Occurrences per kind (the rows' counts added up) at or after `since`. */
  countByKind(since: number): Promise<Record<string, number>>;
  /** Deletes rows older than `before`; the number removed. */
  prune(before: number): Promise<number>;
}

export const DEFAULT_EVENT_LIMIT = 100;

/** A row as both backends read it, column by column. */
export interface RawEvent {
  id: number;
  at: number;
  kind: string;
  upstream: string | null;
  repository: string | null;
  tag: string | null;
  digest: string | null;
  message: string;
  details: string | null;
  count: number;
}

/** A row as read back: absent columns left out, details parsed (details that are not a JSON object are left out). */
export function toEvent(r: RawEvent): StoredEvent {
  return {
    id: Number(r.id),
    at: Number(r.at),
    kind: r.kind,
    ...(r.upstream === null ? {} : { upstream: r.upstream }),
    ...(r.repository === null ? {} : { repository: r.repository }),
    ...(r.tag === null ? {} : { tag: r.tag }),
    ...(r.digest === null ? {} : { digest: r.digest }),
    message: r.message,
    ...(r.details === null ? {} : detailsOf(r.details)),
    count: Number(r.count),
  };
}

function detailsOf(text: string): Pick<EventRow, 'details'> {
  try {
    const v: unknown = JSON.parse(text);
    return v !== null && typeof v === 'object' && !Array.isArray(v) ? { details: v as EventRow['details'] } : {};
  } catch {
    return {};
  }
}
