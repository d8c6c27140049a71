// One client's view of a running download: it reads the temp file from its own offset at
// its own pace, waits for bytes not written yet, never gets a response's final byte before
// the digest is verified, and in pass-through reads the in-memory window instead.
import { open, type FileHandle } from 'node:fs/promises';
import type { ByteRange } from '../store/blob-store.js';
import type { BodySource } from '../store/body-source.js';
import type { Download } from './download.js';

/** Reads a download's temp file from its own offset, waiting for bytes that are not written yet. */
export class Follower implements BodySource {
  readonly #dl: Download;
  readonly #finalPath: string;
  /** Opened at once: the temp file is renamed on publish, and an open descriptor survives that. */
  #fh?: Promise<FileHandle>;
  #pos: number;
  readonly #range?: ByteRange;
  readonly #onClose: () => void;
  #closed = false;

  constructor(dl: Download, tempPath: string | undefined, finalPath: string, range: ByteRange | undefined, onClose: () => void) {
    this.#dl = dl;
    this.#finalPath = finalPath;
    this.#range = range;
    this.#pos = range?.start ?? 0;
    this.#onClose = onClose;
    if (tempPath !== undefined) {
      this.#fh = this.#open(tempPath);
      this.#fh.catch(() => undefined); // reported by the first read
    }
  }

  /** The next byte this follower will read. */
  get position(): number {
    return this.#pos;
  }

  async readInto(buf: Buffer): Promise<number> {
    const dl = this.#dl;
    for (;;) {
      if (this.#closed) throw new Error('read after close');
      const end = this.#range?.end ?? (dl.size === undefined ? Infinity : dl.size - 1);
      if (this.#pos > end) return 0;
      // Once verified, the bytes are good even if publishing failed: finish from the open file.
      const failed = dl.verified ? undefined : dl.failed;
      if (failed) throw failed;
      const until = dl.readableUntil(end);
      if (this.#pos < until) {
        const n = await this.#next(buf, until);
        // Only reachable for a body of unknown size that is complete.
        if (n === 0) return 0;
        this.#pos += n;
        dl.consumed();
        return n;
      }
      await dl.changed();
    }
  }

  /** Up to buf.length bytes at #pos: from the file while it holds them, then from the pass-through window. */
  async #next(buf: Buffer, until: number): Promise<number> {
    const dl = this.#dl;
    if (!dl.passthrough || this.#pos < dl.onDisk) {
      const limit = dl.passthrough ? Math.min(until, dl.onDisk) : until;
      const want = Math.min(limit - this.#pos, buf.length);
      if (!this.#fh) throw new Error('no temp file to read');
      return (await (await this.#fh).read(buf, 0, want, this.#pos)).bytesRead;
    }
    const chunk = dl.fromWindow(this.#pos, Math.min(until - this.#pos, buf.length));
    if (!chunk) return 0;
    buf.set(chunk);
    return chunk.length;
  }

  async #open(tempPath: string): Promise<FileHandle> {
    try {
      return await open(tempPath, 'r');
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT' && (this.#dl.state === 'done' || this.#dl.verified)) return open(this.#finalPath, 'r');
      throw this.#dl.failed ?? err;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const fh = this.#fh;
    this.#fh = undefined;
    this.#onClose();
    await fh?.then((f) => f.close()).catch(() => undefined);
  }
}
