// Small blobs (image configs, tiny layers) kept in memory beside any content store. Every
// pull asks for its config, and under many connections opening, reading and closing a
// file of a few KiB costs more than sending it: four thread-pool round trips per request.
// The store's stat is still asked, at most a second after the last one for a blob held in
// memory (under 256 connections a stat per hit was a tenth of the CPU), so a blob that
// went or changed is served from here for that second at most, as HotRows lets another
// process's row writes show within the second: bytes are kept under the version the last
// stat gave and dropped when a stat gives another one (or none), and whenever this
// process writes or removes the blob. What memory serves is always the bytes that were
// read at a version the metadata recorded as verified.
import { LRUCache } from 'lru-cache';
import { RangeNotSatisfiable } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { BodySource } from './body-source.js';
import type { ByteRange, Capacity, ContentStat, ContentStore, HeldBlob } from './content-store.js';
import type { SpoolFile } from './spool.js';

/** Blobs up to this size are kept. */
export const SMALL_BLOB_BYTES = 64 * 1024;
/** All kept bytes together: a node-local mirror's memory is tight. */
export const SMALL_BLOB_MEMO_BYTES = 4 * 1024 * 1024;
/** What an entry costs beyond its bytes (key, object, LRU links). */
const ENTRY_OVERHEAD = 200;
/** How long a stat of a blob held in memory answers for the next hits. */
export const SMALL_BLOB_STAT_MS = 1000;
/**
 * Once the memo is full, a blob read from the store displaces another only at every this
 * many reads. When more small blobs are asked for than fit, admitting each one read
 * allocates a buffer per request and frees another later, at the next full GC: under 256
 * connections over 2,000 images that garbage held some 40 MiB of glibc's heap resident,
 * while the hit rate, bounded by how many fit, stayed the same. A blob asked for often
 * still gets in after a few reads, and a blob asked for once never pushes one out.
 */
export const ADMIT_AFTER_READS = 4;

interface Entry {
  size: number;
  version: string;
  bytes?: Buffer;
  /** When the store's stat last gave this version (performance.now()). */
  statAt: number;
  /** Reads from the store not admitted since the memo was last full (see ADMIT_AFTER_READS). */
  reads?: number;
}

export class SmallBlobMemo implements ContentStore {
  readonly #inner: ContentStore;
  readonly #entries: LRUCache<Digest, Entry>;
  readonly locate?: ContentStore['locate'];
  readonly #now: () => number;

  constructor(inner: ContentStore, maxBytes = SMALL_BLOB_MEMO_BYTES, now: () => number = () => performance.now()) {
    this.#inner = inner;
    this.#now = now;
    this.#entries = new LRUCache<Digest, Entry>({ maxSize: maxBytes, sizeCalculation: (e) => (e.bytes?.length ?? 0) + ENTRY_OVERHEAD });
    if (inner.locate) this.locate = (d, size, opts) => inner.locate!(d, size, opts);
  }

  async stat(d: Digest): Promise<ContentStat | undefined> {
    const held = this.#entries.peek(d);
    if (held?.bytes && this.#now() - held.statAt < SMALL_BLOB_STAT_MS) return { size: held.size, version: held.version };
    const statAt = this.#now();
    const st = await this.#inner.stat(d);
    const e = this.#entries.peek(d);
    if (!st || st.size > SMALL_BLOB_BYTES) {
      if (e) this.#entries.delete(d);
    } else if (!e || e.version !== st.version || e.size !== st.size) {
      this.#entries.set(d, { size: st.size, version: st.version, statAt });
    } else {
      e.statAt = statAt;
    }
    return st;
  }

  source(d: Digest, size: number, range?: ByteRange): BodySource {
    if (range && (range.start < 0 || range.start > range.end || range.end >= size)) throw new RangeNotSatisfiable(size);
    const e = this.#entries.get(d);
    if (e?.bytes && e.size === size) return new BufferSource(e.bytes, range);
    if (!e || e.size !== size || size > SMALL_BLOB_BYTES || !this.#admits(e)) return this.#inner.source(d, size, range);
    // Read whole once, kept only if the version it was stat'ed at is still the one known.
    return new FillingSource(this.#inner.source(d, size), size, range, (bytes) => {
      if (this.#entries.peek(d) === e) this.#entries.set(d, { ...e, bytes });
    });
  }

  /** Whether this read of `e` from the store may keep its bytes: always while there is room, else every ADMIT_AFTER_READS-th time. */
  #admits(e: Entry): boolean {
    if (this.#entries.calculatedSize + e.size <= this.#entries.maxSize) return true;
    e.reads = (e.reads ?? 0) + 1;
    if (e.reads < ADMIT_AFTER_READS) return false;
    e.reads = 0;
    return true;
  }

  read(d: Digest): Promise<Buffer> {
    return this.#inner.read(d);
  }

  commit(spool: SpoolFile): Promise<{ version: string }> {
    this.#entries.delete(spool.expected);
    return this.#inner.commit(spool);
  }

  commitAndHold(spool: SpoolFile): Promise<{ version: string; held: HeldBlob }> {
    this.#entries.delete(spool.expected);
    return this.#inner.commitAndHold(spool);
  }

  hold(d: Digest, size: number): Promise<HeldBlob | undefined> {
    this.#entries.delete(d);
    return this.#inner.hold(d, size);
  }

  put(d: Digest, bytes: Uint8Array): Promise<{ version: string }> {
    this.#entries.delete(d);
    return this.#inner.put(d, bytes);
  }

  remove(d: Digest): Promise<void> {
    this.#entries.delete(d);
    return this.#inner.remove(d);
  }

  list(): AsyncIterable<Digest> {
    return this.#inner.list();
  }

  present(digests: readonly Digest[]): Promise<Set<Digest>> {
    return this.#inner.present(digests);
  }

  recentlyCommitted(d: Digest, now?: number): Promise<boolean> {
    return this.#inner.recentlyCommitted(d, now);
  }

  capacity(): Promise<Capacity | undefined> {
    return this.#inner.capacity();
  }

  checkWritable(): Promise<void> {
    return this.#inner.checkWritable();
  }
}

/** An inclusive range of bytes already in memory. */
class BufferSource implements BodySource {
  #rest: Buffer;
  whole?: Buffer;

  constructor(bytes: Buffer, range?: ByteRange) {
    this.#rest = range ? bytes.subarray(range.start, range.end + 1) : bytes;
    this.whole = this.#rest;
  }

  async readInto(buf: Buffer): Promise<number> {
    this.whole = undefined;
    const n = this.#rest.copy(buf, 0);
    this.#rest = this.#rest.subarray(n);
    return n;
  }

  async close(): Promise<void> {
    this.whole = undefined;
    this.#rest = this.#rest.subarray(this.#rest.length);
  }
}

/** Reads the whole small blob from the store at the first read, hands it to `keep`, then serves the range asked for. */
class FillingSource implements BodySource {
  readonly #whole: BodySource;
  readonly #size: number;
  readonly #range?: ByteRange;
  readonly #keep: (bytes: Buffer) => void;
  #served?: BufferSource;

  constructor(whole: BodySource, size: number, range: ByteRange | undefined, keep: (bytes: Buffer) => void) {
    this.#whole = whole;
    this.#size = size;
    this.#range = range;
    this.#keep = keep;
  }

  async readInto(buf: Buffer): Promise<number> {
    if (!this.#served) {
      const bytes = Buffer.allocUnsafe(this.#size);
      let filled = 0;
      while (filled < this.#size) {
        const n = await this.#whole.readInto(bytes.subarray(filled));
        if (n === 0) throw new Error(`blob ends at ${filled}, expected ${this.#size} bytes`);
        filled += n;
      }
      await this.#whole.close();
      this.#keep(bytes);
      this.#served = new BufferSource(bytes, this.#range);
    }
    return this.#served.readInto(buf);
  }

  async close(): Promise<void> {
    await this.#whole.close();
    await this.#served?.close();
  }
}
