// `matchReference: true`: the repository a legacy signature's payload names
// (`critical.identity.docker-reference`) must be the one pulled. cosign writes Docker
// Hub's names as `index.docker.io/<repo>`; both sides are normalised as Docker does.
import type { Target } from '../cache/blobs.js';
import { parseImageReference } from '../oci/reference.js';

export function referenceMatcher(t: Target): (ref: string | undefined) => boolean {
  const names = new Set([t.upstream.name, ...t.upstream.config.aliases].map((n) => n.toLowerCase()));
  try {
    names.add(new URL(t.upstream.config.url).host.toLowerCase());
  } catch {
    // An upstream URL the config accepted always parses; the names above still hold.
  }
  return (ref) => {
    if (ref === undefined) return false;
    try {
      const parsed = parseImageReference(ref);
      return names.has(parsed.registry) && parsed.repository === t.repository;
    } catch {
      return false;
    }
  };
}
