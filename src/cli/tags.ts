// `regmirror tags ls` and `regmirror tags accept IMAGE:TAG`: the immutable tags (tag
// policies) whose upstream moved on. ls lists every change nobody has accepted yet;
// accept makes the upstream's new digest the one the tag is held to and expires the tag's
// cached rows, so the next pull asks the upstream and gets it. Against the data dir of
// --config (a running server sees the accept at its next revalidation: the guard is read
// afresh each time), or with --server through the admin endpoints.
import { loadConfig, type Config } from '../config.js';
import { imageName } from '../cache/tag-guard.js';
import { MetadataUnavailable } from '../errors.js';
import type { TagsAdmin, CacheAnswer } from '../http/admin.js';
import { parseImageReference } from '../oci/reference.js';
import type { GuardedTag } from '../store/guarded-tags.js';
import type { Metadata } from '../store/metadata.js';
import { ArgumentError, configPath, serverOrigin, UsageError, type Values } from './args.js';
import { askServer } from './cache-remote.js';
import { noCacheYet, openMetadata } from './context.js';
import { noCacheLine } from './status.js';

/** One pending change, as `tags ls --json` prints it and the server answers it. */
export interface TagChange {
  image: string;
  upstream: string;
  repository: string;
  tag: string;
  /** `index` (every client that takes an index) or an Accept class's bitmask. */
  class: string;
  guarded: string;
  upstreamDigest: string;
  since: string;
  action: string;
}

export interface Accepted {
  image: string;
  accepted: TagChange[];
}

export async function listChanges(metadata: Metadata): Promise<TagChange[]> {
  return (await metadata.guardedTags.changes()).map(toChange);
}

/** Accepts the pending change of `image` (every client class); refuses (throws) a tag with none. */
export async function acceptTag(metadata: Metadata, config: Pick<Config, 'upstreams'>, image: string): Promise<Accepted> {
  const ref = parseImageReference(image);
  if (ref.digest !== undefined) throw new Error(`${image}: name a tag, not a digest`);
  const tag = ref.tag ?? 'latest';
  const upstream = upstreamName(config, ref.registry);
  const name = imageName({ upstream, repository: ref.repository, tag });
  const rows = await metadata.guardedTags.accept(upstream, ref.repository, tag);
  if (rows.length === 0) throw new Error(`${name} has no pending change to accept`);
  // Expired, so the next pull revalidates and meets the new guard rather than a cached row.
  for (const r of await metadata.tagRows(upstream, ref.repository, tag)) if (!r.pinned) await metadata.refreshTag(r, 0);
  return { image: name, accepted: rows.map(toChange) };
}

/** The upstream a registry name means: its name or one of its aliases; else the name as given. */
function upstreamName(config: Pick<Config, 'upstreams'>, registry: string): string {
  const r = registry.toLowerCase();
  return config.upstreams.find((u) => u.name.toLowerCase() === r || u.aliases.some((a) => a.toLowerCase() === r))?.name ?? registry;
}

function toChange(r: GuardedTag): TagChange {
  return {
    image: imageName(r),
    upstream: r.upstream,
    repository: r.repository,
    tag: r.tag,
    class: r.class,
    guarded: r.digest,
    upstreamDigest: r.change!.digest,
    since: new Date(r.change!.since).toISOString(),
    action: r.change!.action,
  };
}

/** The operations on a running server's metadata, for the admin endpoints. */
export function serverTagsAdmin(metadata: Metadata, config: Pick<Config, 'upstreams'>): TagsAdmin {
  return {
    ls: async () => ({ report: await listChanges(metadata) }),
    accept: async (body) => {
      const image = (body as { image?: unknown } | null)?.image;
      if (typeof image !== 'string' || image === '') return { refused: 'image: an image reference with a tag is required' };
      try {
        return { report: await acceptTag(metadata, config, image) };
      } catch (err) {
        if (err instanceof MetadataUnavailable) throw err;
        return { refused: (err as Error).message } satisfies CacheAnswer;
      }
    },
  };
}

/** `tags ls [--json]`, `tags accept IMAGE:TAG`. */
export async function tagsCommand(values: Values, args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  if (verb === 'ls') {
    if (rest.length > 0) throw new ArgumentError(`regmirror tags ls: unexpected argument ${JSON.stringify(rest[0])}`);
    const changes = values.server !== undefined ? await askServer<TagChange[]>(serverOrigin(values.server, 'tags ls'), 'tags ls', '/_regmirror/tags') : await local(values, listChanges, () => []);
    console.log(values.json ? JSON.stringify(changes, null, 2) : changes.length ? table(changes) : 'no immutable tag has a pending change');
    return 0;
  }
  if (verb === 'accept') {
    if (rest.length !== 1) throw new ArgumentError('regmirror tags accept: name one image:tag');
    const image = rest[0];
    const done =
      values.server !== undefined
        ? await askServer<Accepted>(serverOrigin(values.server, 'tags accept'), 'tags accept', '/_regmirror/tags/accept', { image })
        : await local(values, (m, config) => acceptTag(m, config, image), (line) => {
            throw new Error(line);
          }).catch((err: Error) => {
            if (err instanceof UsageError || err instanceof MetadataUnavailable) throw err;
            throw new UsageError(`regmirror tags accept: ${err.message}`);
          });
    const lines = done.accepted.map((c) => `accepted ${done.image}${c.class === 'index' ? '' : ` (Accept class ${c.class})`}: ${c.guarded} -> ${c.upstreamDigest}`);
    console.log(values.json ? JSON.stringify(done, null, 2) : lines.join('\n'));
    return 0;
  }
  throw new ArgumentError('regmirror tags: ls or accept (see regmirror tags --help)');
}

/** Runs `op` on the metadata of --config; a data dir no mirror has used answers `fresh`. */
async function local<T>(values: Values, op: (m: Metadata, config: Config) => Promise<T>, fresh: (line: string) => T): Promise<T> {
  const config = loadConfig(configPath(values), process.env, { secrets: 'storage' });
  if (noCacheYet(config)) return fresh(noCacheLine(config));
  const metadata = await openMetadata(config);
  try {
    return await op(metadata, config);
  } finally {
    await metadata.close();
  }
}

function table(changes: TagChange[]): string {
  const rows = [['IMAGE', 'CLASS', 'GUARDED', 'UPSTREAM', 'SINCE', 'ACTION']];
  for (const c of changes) rows.push([c.image, c.class, c.guarded.slice(0, 19), c.upstreamDigest.slice(0, 19), c.since.replace(/\.\d+Z$/, 'Z'), c.action]);
  const widths = rows[0].map((_, i) => Math.max(...rows.map((r) => r[i].length)));
  return rows.map((r) => r.map((cell, i) => cell.padEnd(widths[i])).join('  ').trimEnd()).join('\n');
}
