// What the mirror tells its operators happened: a tag that changed upstream, an image a
// policy refused, a signature that failed, a tag served stale through an outage, an
// upstream that sent bytes not matching their digest, an eviction of pinned content
// refused. Events are kept in the metadata store, listed by `regmirror events`, counted
// in /metrics and sent to a webhook; whoever notices one records it through an EventSink.

export const EVENT_KINDS = ['tag_changed', 'image_refused', 'signature_failed', 'stale_served', 'digest_mismatch', 'pinned_eviction_refused'] as const;
export type EventKind = (typeof EVENT_KINDS)[number];

export interface MirrorEvent {
  kind: EventKind;
  /** ms since the epoch. */
  at: number;
  upstream?: string;
  repository?: string;
  tag?: string;
  digest?: string;
  /** One line for people: what happened and what it means. */
  message: string;
  /** What a machine needs besides: the policy's name, the other digest, the reason. */
  details?: Record<string, string | number | boolean>;
}

/** An event as its source reports it: the time is the sink's. */
export type NewEvent = Omit<MirrorEvent, 'at'> & { at?: number };

/** Records events without waiting: the serving path never blocks on one. */
export interface EventSink {
  record(event: NewEvent): void;
}

/** Where events go when nothing listens (a one-shot command, a unit test). */
export const NO_EVENTS: EventSink = { record: () => undefined };
