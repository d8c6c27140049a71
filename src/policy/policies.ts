// Which policy governs a pull: the first policy whose match takes the upstream and the
// repository and that says something about the aspect asked (signatures, or tags), so a
// narrow policy listed first can override a broad one listed after it.
import type { Policy, SignaturePolicy, TagPolicy } from '../config-policies.js';
import { globMatcher } from '../oci/repository-glob.js';

export type { Policy, SignaturePolicy, TagPolicy } from '../config-policies.js';

interface Compiled {
  index: number;
  policy: Policy;
  takes: (upstream: string, repository: string) => boolean;
}

/** The signature policy, with its place in the list (`policies[2]`) for messages. */
export interface Governing<T> {
  name: string;
  policy: T;
}

export class PolicySet {
  readonly #compiled: Compiled[];

  constructor(policies: readonly Policy[]) {
    this.#compiled = policies.map((policy, index) => {
      const repos = policy.match.repositories.length === 0 ? () => true : globMatcher(policy.match.repositories);
      const upstream = policy.match.upstream;
      return { index, policy, takes: (u, r) => (upstream === undefined || upstream === u) && repos(r) };
    });
  }

  get empty(): boolean {
    return this.#compiled.length === 0;
  }

  /** The signature policy for a pull, or undefined when none applies (or it is `off`). */
  signaturesFor(upstream: string, repository: string): Governing<SignaturePolicy> | undefined {
    const c = this.#compiled.find((x) => x.policy.signatures !== undefined && x.takes(upstream, repository));
    if (!c || c.policy.signatures!.mode === 'off') return undefined;
    return { name: `policies[${c.index}]`, policy: c.policy.signatures! };
  }

  /** The tag policy under which `tag` may not change, or undefined when it may. */
  immutableTag(upstream: string, repository: string, tag: string): Governing<TagPolicy> | undefined {
    const c = this.#compiled.find((x) => x.policy.tags !== undefined && x.takes(upstream, repository));
    if (!c || !c.policy.tags!.immutable.some((g) => tagGlob(g).test(tag))) return undefined;
    return { name: `policies[${c.index}]`, policy: c.policy.tags! };
  }
}

const tagGlobs = new Map<string, RegExp>();

/** `v*`, `[0-9]*.*`, `1.?`: shell-style, over a whole tag (tags have no `/`). */
export function tagGlob(glob: string): RegExp {
  let re = tagGlobs.get(glob);
  if (!re) {
    let src = '';
    for (let i = 0; i < glob.length; i++) {
      const ch = glob[i];
      if (ch === '*') src += '.*';
      else if (ch === '?') src += '.';
      else if (ch === '[') {
        const end = glob.indexOf(']', i + 1);
        if (end < 0) src += '\\[';
        else {
          src += `[${glob.slice(i + 1, end).replace(/\\/g, '\\\\')}]`;
          i = end;
        }
      } else src += ch.replace(/[.+^${}()|\\]/g, '\\$&');
    }
    re = new RegExp(`^${src}$`);
    tagGlobs.set(glob, re);
  }
  return re;
}
