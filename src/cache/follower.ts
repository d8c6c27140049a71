// One client's view of a running download: it reads the temp file from its own offset at
// its own pace, waits for bytes not written yet, never gets a response's final byte before
// the digest is verified, and in pass-through reads the in-memory window instead.
import { open, type FileHandle } from 'node:fs/promises';
import { Readable } from 'node:stream';
import { READ_CHUNK, type ByteRange } from '../store/blob-store.js';
import type { Download } from './download.js';

/** Reads a download's temp file from its own offset, waiting for bytes that are not written yet. */
export class FollowerStream extends Readable {
  readonly #dl: Download;
  readonly #tempPath?: string;
  readonly #finalPath: string;
  #fh?: FileHandle;
  #pos: number;
  readonly #range?: ByteRange;
  #pumping = false;

  constructor(dl: Download, tempPath: string | undefined, finalPath: string, range?: ByteRange) {
    super({ highWaterMark: READ_CHUNK });
    this.#dl = dl;
    this.#tempPath = tempPath;
    this.#finalPath = finalPath;
    this.#range = range;
    this.#pos = range?.start ?? 0;
  }

  /** The next byte this follower will read. */
  get position(): number {
    return this.#pos;
  }

  override _construct(callback: (err?: Error | null) => void): void {
    // Pass-through from the first byte: there is no file, everything comes from the window.
    if (this.#tempPath === undefined) return callback();
    // The temp file is renamed on publish; an open descriptor survives that, a late open does not.
    open(this.#tempPath, 'r')
      .catch((err: NodeJS.ErrnoException) => {
        if (err.code === 'ENOENT' && (this.#dl.state === 'done' || this.#dl.verified)) return open(this.#finalPath, 'r');
        throw this.#dl.failed ?? err;
      })
      .then((fh) => {
        this.#fh = fh;
        callback();
      }, callback);
  }

  override _read(): void {
    if (!this.#pumping) void this.#pump();
  }

  async #pump(): Promise<void> {
    this.#pumping = true;
    try {
      for (;;) {
        if (this.destroyed) return;
        const end = this.#range?.end ?? (this.#dl.size === undefined ? Infinity : this.#dl.size - 1);
        if (this.#pos > end) {
          this.push(null);
          return;
        }
        // Once verified, the bytes are good even if publishing failed: finish from the open file.
        const failed = this.#dl.verified ? undefined : this.#dl.failed;
        if (failed) {
          this.destroy(failed);
          return;
        }
        const until = this.#dl.readableUntil(end);
        if (this.#pos < until) {
          const chunk = await this.#next(until);
          if (!chunk) {
            // Only reachable for a body of unknown size that is complete.
            this.push(null);
            return;
          }
          this.#pos += chunk.length;
          this.#dl.consumed();
          if (!this.push(chunk)) return;
          continue;
        }
        await this.#dl.changed();
      }
    } catch (err) {
      this.destroy(err as Error);
    } finally {
      this.#pumping = false;
    }
  }

  /** Up to READ_CHUNK bytes at #pos: from the file while it holds them, then from the pass-through window. */
  async #next(until: number): Promise<Buffer | undefined> {
    const dl = this.#dl;
    if (!dl.passthrough || this.#pos < dl.onDisk) {
      const limit = dl.passthrough ? Math.min(until, dl.onDisk) : until;
      const want = Math.min(limit - this.#pos, READ_CHUNK);
      const buf = Buffer.allocUnsafe(Number.isFinite(want) ? want : READ_CHUNK);
      const { bytesRead } = await this.#fh!.read(buf, 0, buf.length, this.#pos);
      if (bytesRead === 0) return undefined;
      return bytesRead === buf.length ? buf : buf.subarray(0, bytesRead);
    }
    return dl.fromWindow(this.#pos, Math.min(until - this.#pos, READ_CHUNK));
  }

  override _destroy(err: Error | null, callback: (err?: Error | null) => void): void {
    const fh = this.#fh;
    this.#fh = undefined;
    if (fh) fh.close().then(() => callback(err), () => callback(err));
    else callback(err);
  }
}
