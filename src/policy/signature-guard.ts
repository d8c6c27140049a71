// The signature policy on the manifest path: before a manifest governed by a policy is
// answered, a valid signature by one of the policy's keys must cover its digest (its own,
// or one on an index that lists it). `enforce` refuses with DENIED otherwise, before the
// client learns a single blob digest; `warn` serves and says so. Verdicts are remembered
// (verdicts.ts), so only the first pull of a digest looks signatures up and verifies.
import type { Target } from '../cache/blobs.js';
import type { ManifestCache } from '../cache/manifests.js';
import { SingleFlight } from '../cache/single-flight.js';
import type { SignaturePolicy } from '../config-policies.js';
import { SignatureRefused } from '../errors.js';
import type { EventSink } from '../events/event.js';
import type { Logger } from '../log.js';
import type { Metrics } from '../metrics.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { isIndexType, parseManifest } from '../oci/manifest.js';
import { checkLegacy, SIMPLE_SIGNING } from './cosign-legacy.js';
import { decisive, reasonOf, type Outcome } from './outcome.js';
import type { Governing, PolicySet } from './policies.js';
import type { Artifact, SignatureFinder } from './signature-finder.js';
import { referenceMatcher } from './signed-reference.js';
import { BUNDLE_TYPE } from './bundle-media.js';
import { checkBundle } from './sigstore-bundle.js';
import { TrustedKeys } from './trusted-keys.js';
import { Verdicts, type Verdict } from './verdicts.js';

export interface GuardDeps {
  policies: PolicySet;
  finder: SignatureFinder;
  manifests: ManifestCache;
  events: EventSink;
  log: Logger;
  metrics?: Metrics;
}

/** The manifest about to be answered. */
export interface Answer {
  digest: string;
  mediaType: string;
  bytes?: Buffer;
}

export class SignatureGuard {
  readonly #deps: GuardDeps;
  readonly #verdicts = new Verdicts();
  readonly #deciding = new SingleFlight<string, Verdict>();
  readonly #keys = new Map<SignaturePolicy, TrustedKeys>();

  constructor(deps: GuardDeps) {
    this.#deps = deps;
  }

  /**
   * Throws SignatureRefused when an `enforce` policy governs the pull and no valid
   * signature covers the manifest; otherwise the value of the signature header, if any.
   */
  check(t: Target, m: Answer): string | undefined | Promise<string | undefined> {
    const gov = this.#deps.policies.signaturesFor(t.upstream.name, t.repository);
    if (!gov) return undefined;
    // A warm pull answers from the remembered verdict without a promise in between.
    const keys = this.#keysOf(gov.policy);
    const known = this.#verdicts.get(Verdicts.key(keys.id, t.upstream.name, t.repository, m.digest));
    if (known) return this.#answer(t, m, gov, known);
    return this.verdict(t, parseDigest(m.digest), gov, m).then((v) => this.#answer(t, m, gov, v));
  }

  #answer(t: Target, m: Answer, gov: Governing<SignaturePolicy>, verdict: Verdict): string | undefined {
    const mode = gov.policy.mode;
    if (verdict.ok) {
      this.#deps.metrics?.signatureChecks.inc({ mode, result: 'verified' });
      return 'verified';
    }
    const why = `${verdict.reason}${verdict.detail ? ` (${verdict.detail})` : ''}`;
    if (mode === 'enforce') {
      this.#deps.metrics?.signatureChecks.inc({ mode, result: 'refused' });
      throw new SignatureRefused(`${t.repository}@${m.digest} refused by signature policy ${gov.name}: ${why}`, gov.name, verdict.reason);
    }
    this.#deps.metrics?.signatureChecks.inc({ mode, result: 'unverified' });
    // The reason may quote what the upstream sent (a payload's reference): printable ASCII only in a header.
    return `unverified; ${why.replace(/[^\x20-\x7e]/g, '?').slice(0, 300)}; policy ${gov.name}`;
  }

  /**
   * The verdict for a manifest under the policy governing its repository, or undefined when
   * none does. Looking it up fetches the signatures through the caches: prewarm and import
   * call it so that the artifacts are cached (and exported) beside the image.
   */
  async verdictFor(t: Target, digest: Digest): Promise<Verdict | undefined> {
    const gov = this.#deps.policies.signaturesFor(t.upstream.name, t.repository);
    return gov ? this.verdict(t, digest, gov) : undefined;
  }

  /** The verdict for a digest under a policy: remembered, or decided once for all concurrent asks. */
  async verdict(t: Target, digest: Digest, gov: Governing<SignaturePolicy>, m?: Answer): Promise<Verdict> {
    const keys = this.#keysOf(gov.policy);
    const key = Verdicts.key(keys.id, t.upstream.name, t.repository, digest);
    return this.#verdicts.get(key) ?? this.#deciding.run(key, () => this.#decide(t, digest, gov, keys, key, m));
  }

  async #decide(t: Target, digest: Digest, gov: Governing<SignaturePolicy>, keys: TrustedKeys, key: string, m?: Answer): Promise<Verdict> {
    const { manifests, finder } = this.#deps;
    let verdict: Verdict;
    try {
      const body = m?.bytes ? { bytes: m.bytes, mediaType: m.mediaType } : await manifests.artifact(t, { digest });
      if (isSignatureArtifact(body.bytes!)) {
        verdict = { ok: true, key: '', format: 'artifact' };
      } else {
        const found = await finder.find(t, digest);
        const o = decisive(found.artifacts.map((a) => this.#check(a, t, digest, body.bytes!, keys, gov.policy)));
        verdict = verdictOf(o, found.failed);
        if (verdict.ok && isIndexType(body.mediaType)) this.#cover(t, keys, digest, body.bytes!, verdict.key);
      }
    } catch (err) {
      verdict = { ok: false, reason: 'signature lookup failed', detail: (err as Error).message };
    }
    if (verdict.ok) this.#verdicts.set(key, verdict);
    else if (!this.#verdicts.get(key)?.ok) {
      // Not when an index verified meanwhile covers it: that verdict stands.
      this.#verdicts.set(key, verdict);
      this.#report(t, digest, gov, verdict);
    }
    return this.#verdicts.get(key) ?? verdict;
  }

  #check(a: Artifact, t: Target, digest: Digest, manifest: Buffer, keys: TrustedKeys, policy: SignaturePolicy): Outcome {
    if (a.format === 'sigstore-bundle') return checkBundle(a.json, digest, manifest, keys);
    return checkLegacy(a.payload, a.signature, digest, keys, policy.matchReference ? referenceMatcher(t) : () => true);
  }

  /** A valid signature on an index covers the platform manifests it lists, in the same repository. */
  #cover(t: Target, keys: TrustedKeys, index: Digest, bytes: Buffer, signer: string): void {
    for (const child of parseManifest(bytes).manifests) {
      this.#verdicts.set(Verdicts.key(keys.id, t.upstream.name, t.repository, child.digest), { ok: true, key: signer, format: 'index', via: index });
    }
  }

  #report(t: Target, digest: Digest, gov: Governing<SignaturePolicy>, v: Verdict & { ok: false }): void {
    const refused = gov.policy.mode === 'enforce';
    const message = `${t.upstream.name}/${t.repository}@${digest}: ${v.reason}${v.detail ? ` (${v.detail})` : ''}; ${refused ? 'refused' : 'served'} under ${gov.name}`;
    this.#deps.log.warn(refused ? 'image refused by signature policy' : 'image served without a valid signature', { upstream: t.upstream.name, repo: t.repository, digest, policy: gov.name, reason: v.reason, detail: v.detail });
    this.#deps.events.record({
      kind: refused ? 'image_refused' : 'signature_failed',
      upstream: t.upstream.name,
      repository: t.repository,
      digest,
      message,
      details: { policy: gov.name, reason: v.reason, mode: gov.policy.mode },
    });
  }

  #keysOf(policy: SignaturePolicy): TrustedKeys {
    let keys = this.#keys.get(policy);
    if (!keys) {
      const metrics = this.#deps.metrics;
      keys = new TrustedKeys(policy.keys, () => metrics?.signatureVerifications.inc());
      this.#keys.set(policy, keys);
    }
    return keys;
  }
}

function verdictOf(o: Outcome | undefined, failed: string | undefined): Verdict {
  if (o?.result === 'valid') return { ok: true, key: o.key, format: o.format };
  // Nothing found because a lookup failed proves nothing: say so rather than "no signature".
  if (!o && failed) return { ok: false, reason: 'signature lookup failed', detail: failed };
  const detail = o?.result === 'bad' ? o.why : undefined;
  return { ok: false, reason: reasonOf(o)!, ...(detail ? { detail } : {}) };
}

/**
 * A signature artifact itself, judged by its content rather than its tag (anyone can tag
 * an image `sha256-….sig`): a bundle artifact, a manifest whose every layer is a
 * simple-signing payload, or an index listing only artifacts (the referrers tag schema's).
 * None of them is an image a client could run, and what verifies others is not signed.
 */
function isSignatureArtifact(bytes: Buffer): boolean {
  let doc: { artifactType?: unknown; layers?: unknown; manifests?: unknown } | null;
  try {
    doc = JSON.parse(bytes.toString('utf8')) as typeof doc;
  } catch {
    return false;
  }
  if (doc?.artifactType === BUNDLE_TYPE) return true;
  if (Array.isArray(doc?.manifests)) return (doc.manifests as Array<{ artifactType?: unknown } | null>).every((d) => typeof d?.artifactType === 'string');
  const layers = Array.isArray(doc?.layers) ? (doc.layers as Array<{ mediaType?: unknown } | null>) : [];
  return layers.length > 0 && layers.every((l) => l?.mediaType === SIMPLE_SIGNING);
}
