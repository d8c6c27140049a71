// How a temp blob's bytes are hashed: inline on the calling thread (small blobs, where a
// round trip to a worker costs more than the hashing) or by the hash worker reading the
// file back. Both see the same calls, so the writer does not care which it has.
import { DigestMismatch, SizeMismatch } from '../errors.js';
import { DigestVerifier, type Digest } from '../oci/digest.js';
import { FileHashJob } from './hash-worker.js';

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

export class OffThreadHash implements ContentHash {
  readonly #job: FileHashJob;
  #fileEnd = 0;
  #result?: Promise<void>;

  constructor(
    path: string,
    readonly expected: Digest,
    readonly expectedSize?: number,
  ) {
    this.#job = new FileHashJob(path);
  }

  written(_chunks: readonly Buffer[], _bytes: number, fileEnd: number): void {
    this.#fileEnd = fileEnd;
    // One message per MiB or so, not per batch: the worker reads in large steps.
    if (fileEnd - this.#job.posted >= POST_STEP) this.#job.fileUpTo(fileEnd);
  }

  tail(chunk: Buffer): void {
    this.#job.fileUpTo(this.#fileEnd);
    this.#job.bytes(chunk);
  }

  verify(): Promise<void> {
    this.#result ??= this.#check();
    return this.#result;
  }

  async #check(): Promise<void> {
    this.#job.fileUpTo(this.#fileEnd);
    const { digest, size } = await this.#job.result();
    if (this.expectedSize !== undefined && size !== this.expectedSize) throw new SizeMismatch(this.expectedSize, size);
    if (digest !== this.expected) throw new DigestMismatch(this.expected, digest);
  }

  close(): void {
    if (!this.#result) this.#job.drop();
  }
}

const POST_STEP = 1024 * 1024;
