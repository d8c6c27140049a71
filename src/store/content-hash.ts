// How a temp blob's bytes are hashed: inline, from the chunks as they are written (a
// worker reading the file back cost more CPU per byte than the sha256 itself), plus, in
// pass-through, the bytes that follow in memory only.
import { DigestVerifier, type Digest } from '../oci/digest.js';

export interface ContentHash {
  /** The first `bytes` bytes of `chunks` were just written; the file now holds `fileEnd` bytes. */
  written(chunks: readonly Buffer[], bytes: number, fileEnd: number): void;
  /** Bytes that follow the file's and live in memory only (a download the store could not take). */
  tail(chunk: Buffer): void;
  /** Resolves once every byte is hashed and matched; rejects with SizeMismatch or DigestMismatch. */
  verify(): Promise<void>;
  /** Abandons the hash (the blob is being discarded). */
  close(): void;
}

export class InlineHash implements ContentHash {
  readonly #v: DigestVerifier;

  constructor(expected: Digest, expectedSize?: number) {
    this.#v = new DigestVerifier(expected, expectedSize);
  }

  written(chunks: readonly Buffer[], bytes: number): void {
    for (const c of chunks) {
      if (bytes <= 0) return;
      this.#v.update(bytes >= c.length ? c : c.subarray(0, bytes));
      bytes -= c.length;
    }
  }

  tail(chunk: Buffer): void {
    this.#v.update(chunk);
  }

  async verify(): Promise<void> {
    this.#v.verify();
  }

  close(): void {}
}
