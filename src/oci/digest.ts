// Digests: the one type a store path may be built from, and the streaming verifier that
// decides whether bytes may be published.
import { createHash, type Hash } from 'node:crypto';
import { DigestMismatch, InvalidDigest, SizeMismatch, UnsupportedDigest } from '../errors.js';

/** A validated `sha256:<64 lowercase hex>` string. Only parseDigest() makes one. */
export type Digest = string & { readonly __digest: unique symbol };

const SHA256 = /^sha256:[a-f0-9]{64}$/;
// The other algorithm the OCI specs register; content named by it can exist, but is not stored here.
const SHA512 = /^sha512:[a-f0-9]{128}$/;

/** Validates a digest string; sha256 is the only algorithm stored. */
export function parseDigest(text: string): Digest {
  if (SHA256.test(text)) return text as Digest;
  if (SHA512.test(text)) throw new UnsupportedDigest(text, ['sha256']);
  throw new InvalidDigest(`invalid digest ${JSON.stringify(text.slice(0, 80))}`);
}

export function isDigest(text: string): boolean {
  return SHA256.test(text);
}

/** The hex part, for building store paths. */
export function digestHex(d: Digest): string {
  return d.slice(7);
}

export function digestOf(bytes: Uint8Array): Digest {
  return ('sha256:' + createHash('sha256').update(bytes).digest('hex')) as Digest;
}

/** Hashes bytes as they stream past and checks them against the expected digest and size. */
export class DigestVerifier {
  #hash: Hash = createHash('sha256');
  #size = 0;
  #actual?: Digest;

  constructor(
    readonly expected: Digest,
    readonly expectedSize?: number,
  ) {}

  update(chunk: Uint8Array): void {
    this.#size += chunk.byteLength;
    this.#hash.update(chunk);
  }

  get size(): number {
    return this.#size;
  }

  /** Throws SizeMismatch or DigestMismatch; may be called once the last byte was passed to update(). */
  verify(): void {
    if (this.expectedSize !== undefined && this.#size !== this.expectedSize) {
      throw new SizeMismatch(this.expectedSize, this.#size);
    }
    this.#actual ??= ('sha256:' + this.#hash.digest('hex')) as Digest;
    if (this.#actual !== this.expected) throw new DigestMismatch(this.expected, this.#actual);
  }
}
