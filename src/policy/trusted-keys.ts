// The public keys a signature policy trusts, as node:crypto keys with a stable id, and
// the one place a signature over bytes is checked against them. Every check is counted,
// so a test (and an operator) can see that a warm pull does no cryptography.
import { createHash, createPublicKey, verify, type KeyObject } from 'node:crypto';
import type { TrustedKey } from '../config-policies.js';

export interface Key {
  /** What the config named it (`file:/etc/regmirror/cosign.pub`). */
  ref: string;
  /** sha256 of its SubjectPublicKeyInfo DER, hex. */
  id: string;
  object: KeyObject;
}

export class TrustedKeys {
  readonly keys: Key[];
  /** Names the set, for the verdict cache: a changed key list is a different set. */
  readonly id: string;

  constructor(
    trusted: readonly TrustedKey[],
    private readonly counted: () => void = () => undefined,
  ) {
    this.keys = trusted.map((k) => {
      const object = createPublicKey(k.pem);
      const der = object.export({ type: 'spki', format: 'der' });
      return { ref: k.ref, id: createHash('sha256').update(der).digest('hex'), object };
    });
    this.id = createHash('sha256').update(this.keys.map((k) => k.id).sort().join('\n')).digest('hex').slice(0, 16);
  }

  /** The first key `signature` over `data` verifies under, as cosign signs: ECDSA and RSA over SHA-256 (DER, PKCS#1 v1.5), Ed25519 pure. */
  signerOf(data: Buffer, signature: Buffer): Key | undefined {
    return this.keys.find((k) => this.verifies(k, data, signature));
  }

  verifies(k: Key, data: Buffer, signature: Buffer): boolean {
    this.counted();
    try {
      return verify(k.object.asymmetricKeyType === 'ed25519' ? null : 'sha256', data, k.object, signature);
    } catch {
      // A signature of the wrong shape for this key type is simply not this key's.
      return false;
    }
  }

  /** Counts a verification done elsewhere (by @sigstore/verify). */
  count(): void {
    this.counted();
  }
}
