// TagGuard: holds the tags a tag policy calls immutable to the digest they were first
// served with. The ManifestCache asks it whenever it learns what the upstream names for a
// tag (at the first fetch, and at each revalidation after the tag's TTL); it answers the
// digest to serve, or refuses. A change is recorded once per new digest, in the guarded
// tags of the metadata (where `regmirror tags ls` lists it and `tags accept` moves the
// guard) and as a `tag_changed` event. Nothing here runs on a warm hit.
import { MetadataUnavailable, TagChangeRefused } from '../errors.js';
import type { EventSink } from '../events/event.js';
import type { Logger } from '../log.js';
import { accepts, DOCKER_LIST, OCI_INDEX } from '../oci/manifest.js';
import type { TagPolicy } from '../config-policies.js';
import type { GuardedTag, GuardedTagStore, GuardKey } from '../store/guarded-tags.js';
import type { TagKey } from '../store/metadata.js';

/** Which tag policy, if any, holds a tag to its digest (the policies' PolicySet answers it). */
export interface TagPolicies {
  immutableTag(upstream: string, repository: string, tag: string): { name: string; policy: TagPolicy } | undefined;
}

export interface TagGuardDeps {
  store: GuardedTagStore;
  policies: TagPolicies;
  events: EventSink;
  log: Logger;
}

export class TagGuard {
  readonly #deps: TagGuardDeps;

  constructor(deps: TagGuardDeps) {
    this.#deps = deps;
  }

  /**
   * The digest to serve for `key` now that the upstream names `upstreamDigest`. `served`
   * is what the cache answered for the tag so far (a tag cached before its policy
   * existed is guarded at that, not at what the upstream says today). Throws
   * TagChangeRefused under `onChange: refuse`.
   */
  async resolve(key: TagKey, upstreamDigest: string, served?: string): Promise<string> {
    const governing = this.#deps.policies.immutableTag(key.upstream, key.repository, key.tag);
    if (!governing) return upstreamDigest;
    const { store } = this.#deps;
    const k = guardKey(key);
    let row: GuardedTag;
    try {
      // Read afresh every time (no memo): an accept by a command beside the server shows at once.
      row = (await store.get(k)) ?? (await store.guard(k, served ?? upstreamDigest));
      if (row.digest === upstreamDigest) {
        if (row.change) await store.clearChange(k);
        return upstreamDigest;
      }
      const action = governing.policy.onChange;
      // Known already (the usual case at each later revalidation): no write at all.
      const news = row.change?.digest !== upstreamDigest && (await store.recordChange(k, upstreamDigest, action));
      if (news) this.#report(key, governing.name, action, row.digest, upstreamDigest);
      if (action === 'follow') return upstreamDigest;
      if (action === 'keep') return row.digest;
    } catch (err) {
      // Out of reach, the guard cannot tell: what was served before is what it would hold
      // the tag to; a tag never served starts at what the upstream says.
      if (!(err instanceof MetadataUnavailable)) throw err;
      this.#deps.log.warn('tag guard: metadata unavailable; serving the tag as it was', { repo: key.repository, tag: key.tag });
      return served ?? upstreamDigest;
    }
    throw new TagChangeRefused(imageName(key), governing.name, row.digest, upstreamDigest);
  }

  #report(key: TagKey, policy: string, action: string, guarded: string, now: string): void {
    const image = imageName(key);
    const what = action === 'follow' ? 'serving the new digest' : action === 'keep' ? `still serving ${guarded}` : 'refusing pulls';
    this.#deps.log.warn('immutable tag changed upstream', { image, policy, action, guarded, upstream: now });
    this.#deps.events.record({
      kind: 'tag_changed',
      upstream: key.upstream,
      repository: key.repository,
      tag: key.tag,
      digest: now,
      message: `${image} (immutable under ${policy}) changed upstream from ${guarded} to ${now}; ${what} until regmirror tags accept ${image}`,
      details: { policy, action, guarded, upstream: now, class: guardClass(key.accept) },
    });
  }
}

/** `docker.io/library/nginx:v1.0`: how messages and `regmirror tags` name a tag. */
export function imageName(k: Pick<TagKey, 'upstream' | 'repository' | 'tag'>): string {
  return `${k.upstream}/${k.repository}:${k.tag}`;
}

/**
 * Every Accept class that takes an index shares one guard: the upstream answers them all
 * the same index (or the same single manifest, for a tag that has none), so a change for
 * one is a change for all, and a class first seen after the change is held like the
 * others. A class that takes no index is guarded on its own: the upstream may answer it a
 * platform's manifest where the others get the index, which is no change of the tag.
 */
export function guardClass(accept: number): string {
  return accepts(accept, OCI_INDEX) || accepts(accept, DOCKER_LIST) ? 'index' : String(accept);
}

function guardKey(k: TagKey): GuardKey {
  return { upstream: k.upstream, repository: k.repository, tag: k.tag, class: guardClass(k.accept) };
}
