// What checking one signature artifact against a policy's keys found, and the header that
// tells a client. Imported by the http layer, so it loads none of the verifiers.

export const SIGNATURE_HEADER = 'x-regmirror-signature';

/** Why a manifest is not covered by a valid signature, in the words a refusal uses. */
export type FailReason = 'no signature' | 'bad signature' | 'signed by a key not trusted' | 'signature lookup failed';

export type Outcome =
  | { result: 'valid'; key: string; format: SignatureFormat }
  | { result: 'bad'; why: string; format: SignatureFormat }
  | { result: 'untrusted'; format: SignatureFormat };

export type SignatureFormat = 'cosign-legacy' | 'sigstore-bundle';

/** Of several artifacts' outcomes, the one that explains the verdict: a valid one, else a bad one, else untrusted. */
export function decisive(outcomes: readonly Outcome[]): Outcome | undefined {
  return outcomes.find((o) => o.result === 'valid') ?? outcomes.find((o) => o.result === 'bad') ?? outcomes[0];
}

export function reasonOf(o: Outcome | undefined): FailReason | undefined {
  if (!o) return 'no signature';
  if (o.result === 'valid') return undefined;
  return o.result === 'bad' ? 'bad signature' : 'signed by a key not trusted';
}
