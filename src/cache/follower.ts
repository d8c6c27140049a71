// One client's view of a running download: it reads from its own offset at its own pace
// (the download's recent chunks in memory while it keeps up, the spool file once it falls
// behind them), waits for bytes not received yet, never gets a response's final byte
// before the digest is verified, and in pass-through reads the in-memory window instead.
import type { BodySource } from '../store/body-source.js';
import type { ByteRange } from '../store/content-store.js';
import type { SpoolReader } from '../store/spool.js';
import { FOLLOW_STEP, type Download } from './download.js';

/** Reads a download from its own offset, waiting for bytes that are not received yet. */
export class Follower implements BodySource {
  readonly #dl: Download;
  /** Opened when the follower is: it keeps reading after the download is committed. */
  #reader?: SpoolReader;
  #pos: number;
  readonly #range?: ByteRange;
  readonly #onClose: () => void;
  #closed = false;

  constructor(dl: Download, reader: SpoolReader | undefined, range: ByteRange | undefined, onClose: () => void) {
    this.#dl = dl;
    this.#reader = reader;
    this.#range = range;
    this.#pos = range?.start ?? 0;
    this.#onClose = onClose;
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
      // Once verified, the bytes are good even if committing failed: finish from the open file.
      const failed = dl.verified ? undefined : dl.failed;
      if (failed) throw failed;
      const until = dl.readableUntil(end);
      // While the download runs, read in steps of FOLLOW_STEP (or what is left): one socket
      // write per step rather than one per upstream chunk.
      const enough = dl.state !== 'running' || dl.verified || until - this.#pos >= Math.min(FOLLOW_STEP, buf.length, end + 1 - this.#pos);
      if (this.#pos < until && enough) {
        const n = await this.#next(buf, until);
        if (n === 0) {
          // The end of a body of unknown size; while running, nothing to read after all.
          if (dl.state !== 'running') return 0;
          await dl.changed();
          continue;
        }
        this.#pos += n;
        dl.consumed();
        return n;
      }
      await dl.changed();
    }
  }

  /**
   * Up to buf.length bytes at #pos: from memory while the follower is within the
   * download's recent chunks (those written lately, being written and pending; in
   * pass-through, the window), from the spool once it has fallen further behind. A
   * follower keeping up with the upstream never reads the spool back.
   */
  async #next(buf: Buffer, until: number): Promise<number> {
    const dl = this.#dl;
    const inMemory = dl.passthrough ? dl.onDisk : dl.memoryStart;
    if (this.#pos >= inMemory) return dl.passthrough ? dl.copyFromWindow(buf, this.#pos, until) : dl.copyFromMemory(buf, this.#pos, until);
    const want = Math.min(Math.min(until, inMemory) - this.#pos, buf.length);
    if (!this.#reader) throw new Error('no spool file to read');
    try {
      return await this.#reader.read(buf, want, this.#pos);
    } catch (err) {
      throw dl.failed ?? err;
    }
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const reader = this.#reader;
    this.#reader = undefined;
    this.#onClose();
    await reader?.close();
  }
}
