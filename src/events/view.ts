// Events as the commands, the admin endpoint and the status page show them: the stored
// row with its time in ISO 8601, the image it is about in one reference, one line of text.
import type { StoredEvent } from '../store/events.js';
import { EVENT_KINDS, type EventKind } from './event.js';

export interface EventView extends StoredEvent {
  time: string;
}

export function eventView(e: StoredEvent): EventView {
  return { ...e, time: new Date(e.at).toISOString() };
}

/** `docker.io/library/nginx:1.27@sha256:abcdef012345`, as much of it as the event names; `-` for none. */
export function imageOf(e: Pick<StoredEvent, 'upstream' | 'repository' | 'tag' | 'digest'>): string {
  if (e.repository === undefined) return e.digest ? shortDigest(e.digest) : '-';
  const name = e.upstream ? `${e.upstream}/${e.repository}` : e.repository;
  return `${name}${e.tag ? `:${e.tag}` : ''}${e.digest ? `@${shortDigest(e.digest)}` : ''}`;
}

function shortDigest(d: string): string {
  const [alg, hex] = d.split(':');
  return hex ? `${alg}:${hex.slice(0, 12)}` : d;
}

/** The message, with how many occurrences a folded row stands for. */
export function messageOf(e: Pick<StoredEvent, 'message' | 'count'>): string {
  return e.count > 1 ? `${e.message} (${e.count} times)` : e.message;
}

/** One line per event: time, kind, image, message. */
export function formatEvents(events: readonly EventView[]): string {
  const rows = events.map((e) => [e.time, e.kind, imageOf(e), messageOf(e)]);
  const widths = [0, 1, 2].map((i) => Math.max(0, ...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => (i < 3 ? cell.padEnd(widths[i]) : cell)).join('  ')).join('\n');
}

/** A comma-separated list of kinds, each one known; throws naming the first that is not. */
export function parseKinds(list: string): EventKind[] {
  const kinds = list.split(',').map((k) => k.trim()).filter((k) => k !== '');
  for (const k of kinds) if (!(EVENT_KINDS as readonly string[]).includes(k)) throw new Error(`unknown event kind ${JSON.stringify(k)} (one of ${EVENT_KINDS.join(', ')})`);
  return kinds as EventKind[];
}

/** `30m`, `1h`, `7d` (also `45s`, `2w`) in ms. */
export function parseAge(value: string): number | undefined {
  const m = /^(\d+(?:\.\d+)?)(s|m|h|d|w)$/.exec(value.trim());
  if (!m) return undefined;
  const unit = { s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000, w: 604_800_000 }[m[2] as 's' | 'm' | 'h' | 'd' | 'w'];
  return Math.round(Number(m[1]) * unit);
}
