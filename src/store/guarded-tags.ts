// Guarded tags: the digest each immutable tag (a tag policy's glob) is held to, and the
// change the upstream made to it that nobody has accepted yet. The cache guards a tag
// at what it first resolved to; when the upstream later names another digest, the change
// is recorded here once (the first time that digest is seen), whatever the policy then
// does with it; `regmirror tags accept` makes it the guarded digest. Part of the metadata
// seam, so replicas sharing one database share the guard: SQLite and PostgreSQL
// implement it on a `guarded_tags` table, with the backend's clock.

/** What the policy does with a change: serve the guarded digest, refuse the pull, or serve the new one. */
export type GuardAction = 'keep' | 'refuse' | 'follow';

export interface GuardKey {
  upstream: string;
  repository: string;
  tag: string;
  /**
   * Which clients the digest is for: `index` for every Accept class that takes an index
   * (the upstream answers them all alike), the class's bitmask for the others (an old
   * client may get a single manifest where the others get the index).
   */
  class: string;
}

export interface GuardedTag extends GuardKey {
  /** The digest the tag is held to. */
  digest: string;
  /** When it became the guarded digest (ms since the epoch). */
  guardedAt: number;
  /** The upstream names another digest, first seen at `since`; not yet accepted. */
  change?: { digest: string; since: number; action: GuardAction };
}

export interface GuardedTagStore {
  get(k: GuardKey): Promise<GuardedTag | undefined>;
  /** Starts guarding `k` at `digest`; a tag already guarded keeps its row. The row in force. */
  guard(k: GuardKey, digest: string): Promise<GuardedTag>;
  /**
   * The upstream names `digest`, not the guarded one: it becomes the pending change unless
   * that very digest is pending already. True when recorded now (a change not seen before).
   */
  recordChange(k: GuardKey, digest: string, action: GuardAction): Promise<boolean>;
  /** The upstream names the guarded digest again: the pending change is forgotten. */
  clearChange(k: GuardKey): Promise<void>;
  /**
   * Makes the pending change of each class of the tag its guarded digest. The rows
   * accepted, as they were before (empty when no class had a change).
   */
  accept(upstream: string, repository: string, tag: string): Promise<GuardedTag[]>;
  /** The guarded tags with a pending change, by upstream, repository, tag and class. */
  changes(): Promise<GuardedTag[]>;
}

/** A row as both backends select it. */
export interface RawGuardedTag {
  upstream: string;
  repository: string;
  tag: string;
  class: string;
  digest: string;
  guardedAt: number;
  changeDigest: string | null;
  changeSince: number | null;
  changeAction: string | null;
}

export function toGuardedTag(r: RawGuardedTag): GuardedTag {
  const row: GuardedTag = { upstream: r.upstream, repository: r.repository, tag: r.tag, class: r.class, digest: r.digest, guardedAt: Number(r.guardedAt) };
  if (r.changeDigest !== null) row.change = { digest: r.changeDigest, since: Number(r.changeSince), action: r.changeAction as GuardAction };
  return row;
}
