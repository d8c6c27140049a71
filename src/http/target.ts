// Resolves what a request means: which upstream (containerd's ?ns=, a path prefix, or the
// default upstream) and which repository in it. Pure: it opens no connection, so an
// unknown `ns` can never make regmirror an open proxy.
import type { Target, UpstreamClient } from '../cache/blobs.js';
import { AccessDenied, InvalidName, UnknownUpstream } from '../errors.js';
import { dockerHubName, validateName } from '../oci/reference.js';
import { globMatcher } from './access.js';

/** The configured upstreams by every name that selects them. */
export class UpstreamTable {
  readonly #byName = new Map<string, UpstreamClient>();
  readonly #permits = new Map<UpstreamClient, (repository: string) => boolean>();
  readonly default?: UpstreamClient;
  readonly all: UpstreamClient[];

  constructor(clients: UpstreamClient[], defaultName?: string) {
    this.all = clients;
    for (const c of clients) {
      for (const n of [c.name, ...c.config.aliases]) this.#byName.set(n.toLowerCase(), c);
      const allow = c.config.allow.length ? globMatcher(c.config.allow) : () => true;
      const deny = globMatcher(c.config.deny);
      this.#permits.set(c, (repo) => allow(repo) && !deny(repo));
    }
    this.default = defaultName === undefined ? undefined : this.#byName.get(defaultName);
  }

  lookup(name: string): UpstreamClient | undefined {
    return this.#byName.get(name.toLowerCase());
  }

  /** The upstream's allow and deny globs let clients pull this repository. */
  permits(upstream: UpstreamClient, repository: string): boolean {
    return this.#permits.get(upstream)?.(repository) ?? true;
  }
}

export interface ResolvedTarget extends Target {
  /** The repository name as the client wrote it after any prefix, for rewriting Link headers. */
  clientName: string;
  /** The path prefix the client used (e.g. `ghcr.io/`), or ''. */
  prefix: string;
}

/** Picks the upstream and normalises the repository name; throws UnknownUpstream or InvalidName. */
export function resolveTarget(rawName: string, ns: string | undefined, table: UpstreamTable): ResolvedTarget {
  const slash = rawName.indexOf('/');
  const first = slash > 0 ? rawName.slice(0, slash) : undefined;
  let upstream: UpstreamClient | undefined;
  let name = rawName;
  let prefix = '';
  if (ns !== undefined) {
    upstream = table.lookup(ns);
    if (!upstream) throw new UnknownUpstream(`registry ${JSON.stringify(ns.slice(0, 100))} is not configured on this mirror`);
    // containerd with override_path sends both: /v2/ghcr.io/org/app/...?ns=ghcr.io
    if (first !== undefined && table.lookup(first) === upstream) [name, prefix] = [rawName.slice(slash + 1), first + '/'];
  } else if (first !== undefined && table.lookup(first)) {
    upstream = table.lookup(first)!;
    [name, prefix] = [rawName.slice(slash + 1), first + '/'];
  } else {
    // Docker's reference grammar reads such a component as a registry host; a Docker Hub
    // namespace (a user or organisation) never has a dot, so sending it there would fetch
    // from the wrong registry.
    if (first !== undefined && looksLikeHost(first)) throw new UnknownUpstream(`${first.slice(0, 100)} is not an upstream of this mirror`);
    upstream = table.default;
    if (!upstream) {
      throw new InvalidName('no default upstream is configured: name a registry with ?ns= or a path prefix');
    }
  }
  validateName(name);
  const repository = upstream.name === 'docker.io' ? dockerHubName(name) : name;
  if (!table.permits(upstream, repository)) throw new AccessDenied(`repository ${repository} of ${upstream.name} is not served by this mirror`);
  return { upstream, repository, clientName: name, prefix };
}

function looksLikeHost(component: string): boolean {
  return component.includes('.') || component.includes(':') || component.toLowerCase() === 'localhost';
}
