// One blob download from an upstream, shared by every client that asks for the digest
// while it runs. The upstream body is written to a spool file and hashed; each client
// follows at its own pace through a Follower (bytes not yet written from memory, older
// ones from the spool), so the upstream is read once at full speed and memory stays
// flat. Every response's final byte is held back until the digest is verified: a
// mismatch, a cut or a timeout destroys every client's stream (a failed transfer, never
// a complete wrong 200) and nothing is committed to the store.
import { StoreFull, UpstreamUnavailable } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { Logger } from '../log.js';
import type { BodySource } from '../store/body-source.js';
import { InlineHash, type ContentHash } from '../store/content-hash.js';
import type { ByteRange, ContentStore } from '../store/content-store.js';
import { dropBytes, type Spool, type SpoolFile } from '../store/spool.js';
import type { Metadata } from '../store/metadata.js';
import type { UpstreamClient } from '../upstream/client.js';
import { readChunks } from '../upstream/read-chunks.js';
import { Follower } from './follower.js';

/** How many times a cut upstream body is resumed with a Range request before the download fails. */
const MAX_RESUMES = 2;
/** In pass-through (store not writable), how far the fastest client may run ahead of the slowest. */
const WINDOW_BYTES = 8 * 1024 * 1024;
/** Followers are woken, and read, in steps of this many bytes while a download runs. */
export const FOLLOW_STEP = 1024 * 1024;
/** Received bytes waiting for the spool writer before reading upstream pauses. */
const MAX_PENDING = 4 * 1024 * 1024;
/**
 * Bytes already in the spool file that stay in memory too: followers within this much of
 * the download are served from the chunks as received, and only one further behind reads
 * the file back. Bounded, so memory stays flat however large the blob or slow the client.
 */
export const RECENT_BYTES = 4 * 1024 * 1024;

/** The store refused a write: the blob goes on to its clients uncached, the download is not bad. */
export function isStoreFull(err: unknown): err is StoreFull {
  return err instanceof StoreFull;
}

export interface DownloadDeps {
  store: ContentStore;
  spool: Spool;
  metadata: Metadata;
  log: Logger;
  /** Aborted at shutdown; never tied to one client's connection. */
  signal: AbortSignal;
  /** Told of every committed blob's size (eviction watches the store grow). */
  onPublished?: (bytes: number) => void;
  /** The store refused a write (disk full, read-only): the download goes on without caching. */
  onStoreFull?: (err: Error) => void;
}

/** A running (or finished) download of one digest through one upstream repository. */
export class Download {
  readonly digest: Digest;
  readonly upstream: UpstreamClient;
  readonly repository: string;
  /** Total size, once the upstream's headers said it. */
  size?: number;
  /** Resolves when the size is known and followers can start; rejects if the download fails first. */
  readonly ready: Promise<void>;
  /** Resolves when committed (or, in pass-through, streamed), rejects when failed. */
  readonly done: Promise<void>;

  #spool?: SpoolFile;
  /** Bytes received and hashed; in pass-through, more than the file holds. */
  #received = 0;
  /** Set when the store refused a write: later bytes live only in #window, nothing is published. */
  #passthrough?: { hash: ContentHash };
  /** Pass-through bytes from #windowStart on, kept until every follower has read them. */
  #window: Buffer[] = [];
  #windowStart = 0;
  readonly #followers = new Set<Follower>();
  /** Received, not yet in the spool file: written in batches by #drain(). */
  #pending: Buffer[] = [];
  #pendingBytes = 0;
  /**
   * The chunks received from file offset #recentStart on: every byte not yet written
   * (pending or being written) and the last RECENT_BYTES or so of those written.
   */
  #recent: Buffer[] = [];
  #recentStart = 0;
  /** #received when followers were last woken for new bytes in memory. */
  #wokeAt = 0;
  #writing?: Promise<void>;
  #writeError?: Error;
  /** Every byte hashed and the digest matched: followers may have their last byte. */
  #verified = false;
  #state: 'running' | 'done' | 'failed' = 'running';
  #error?: Error;
  #tick = deferred();
  #readyResolve!: () => void;
  readonly #deps: DownloadDeps;

  constructor(deps: DownloadDeps, upstream: UpstreamClient, repository: string, digest: Digest) {
    this.#deps = deps;
    this.upstream = upstream;
    this.repository = repository;
    this.digest = digest;
    let readyReject!: (e: Error) => void;
    this.ready = new Promise<void>((resolve, reject) => {
      this.#readyResolve = resolve;
      readyReject = reject;
    });
    this.done = this.#run().catch((err: Error) => {
      readyReject(err);
      throw err;
    });
    // Nobody may be waiting on these when the download fails; the error is delivered to followers.
    this.ready.catch(() => {});
    this.done.catch(() => {});
  }

  /** Bytes received so far. */
  get received(): number {
    return this.#received;
  }

  /** The digest matched: every byte may go to the clients, whatever becomes of the publish. */
  get verified(): boolean {
    return this.#verified;
  }

  /** Bytes a follower can read from the spool (the rest, in pass-through, from the window). */
  get onDisk(): number {
    return this.#spool?.written ?? 0;
  }

  /** The store could not take this blob: it is streamed to its clients without being cached. */
  get passthrough(): boolean {
    return this.#passthrough !== undefined;
  }

  get failed(): Error | undefined {
    return this.#error;
  }

  /**
   * The exclusive end of what a reader whose response ends at `end` (inclusive) may read
   * now: everything written, except that the response's final byte waits for verification.
   */
  readableUntil(end: number): number {
    if (this.#state === 'done' || this.#verified) return end + 1;
    return Math.min(this.#received, end);
  }

  /**
   * Where the bytes held in memory start (the recent ones written, then those being
   * written and pending): a follower reads below it from the spool, from it on with copyFromMemory().
   */
  get memoryStart(): number {
    return this.#recentStart;
  }

  /**
   * Copies received bytes from `pos` (≥ memoryStart) up to `until` into `buf`, as many
   * as fit; returns how many. Copied, not sliced: the chunks may leave memory once it returns.
   */
  copyFromMemory(buf: Buffer, pos: number, until: number): number {
    return copyOut(this.#recent, this.#recentStart, pos, Math.min(until - pos, buf.length), buf);
  }

  /** Pass-through bytes from `pos` up to `until` into `buf`, as many as fit; returns how many. */
  copyFromWindow(buf: Buffer, pos: number, until: number): number {
    return copyOut(this.#window, this.#windowStart, pos, Math.min(until - pos, buf.length), buf);
  }

  /** Resolves at the next change: more bytes written, published, or failed. */
  changed(): Promise<void> {
    return this.#tick.promise;
  }

  /**
   * A reader of the blob (or a range of it) that follows the download as it grows. Once
   * the download is committed the spool may be gone (an object store's is not renamed
   * into it), so a reader that comes that late reads the store.
   */
  follow(range?: ByteRange): BodySource {
    if (this.#state === 'done' && !this.#passthrough) return this.#deps.store.source(this.digest, this.#received, range);
    const f = new Follower(this, this.#spool?.reader(), range, () => {
      this.#followers.delete(f);
      this.#wake();
    });
    this.#followers.add(f);
    return f;
  }

  /** A follower read more: the pass-through window may shrink and the download go on. */
  consumed(): void {
    if (this.#passthrough) this.#wake();
  }

  get state(): 'running' | 'done' | 'failed' {
    return this.#state;
  }

  #wake(): void {
    const t = this.#tick;
    this.#tick = deferred();
    t.resolve();
  }

  async #run(): Promise<void> {
    const { store, metadata, log, signal } = this.#deps;
    const started = Date.now();
    try {
      await this.#fetch(signal);
      if (this.#passthrough) {
        await this.#passthrough.hash.verify();
        await this.#spool?.discard();
        this.#state = 'done';
        log.warn('blob streamed to its clients without caching: the store refused the write', { digest: this.digest, bytes: this.#received });
        return;
      }
      // The clients' last bytes go as soon as the digest is known good; the commit (fsync
      // and rename, or an upload) only decides whether the blob is cached: no need to wait.
      const spool = this.#spool!;
      await spool.verify();
      this.#verified = true;
      this.#wake();
      const { version } = await store.commit(spool);
      await metadata.recordBlob(this.digest, spool.written, { upstream: this.upstream.name, repository: this.repository }, version);
      this.#deps.onPublished?.(spool.written);
      this.#state = 'done';
      log.info('blob downloaded', { digest: this.digest, repo: this.repository, bytes: spool.written, ms: Date.now() - started });
      // Followers still reading hold the file open; later readers read the store. A spool
      // file that cannot be removed now is swept at the next start: the download is good.
      await spool.discard().catch(() => undefined);
    } catch (err) {
      this.#state = 'failed';
      this.#error = err as Error;
      await this.#spool?.discard();
      log.warn('blob download failed', { digest: this.digest, repo: this.repository, err: err as Error });
      throw err;
    } finally {
      // A client still reading holds this download: it finishes from its open spool file,
      // not from chunks kept in memory for as long as it takes.
      this.#recent = [];
      this.#recentStart = this.#received;
      this.#wake();
    }
  }

  /** Streams the upstream body into the spool file, resuming a cut body with Range when it can. */
  async #fetch(signal: AbortSignal): Promise<void> {
    for (let attempt = 0; ; attempt++) {
      const from = this.#received;
      const res = await this.upstream.getBlob(this.repository, this.digest, signal, from);
      try {
        if (from === 0) {
          this.size = res.length;
          // Hashed inline from the chunks as they are written: sha256 costs less CPU than a
          // worker reading the file back, and the digest is still known before the last byte goes.
          this.#spool = await this.#deps.spool.create(this.digest, this.size).catch((err: Error) => {
            if (!isStoreFull(err)) throw err;
            this.#enterPassthrough(err, new InlineHash(this.digest, this.size));
            return undefined;
          });
          this.#readyResolve();
        }
        await readChunks(res.body, (chunk) => this.#take(chunk));
        await this.#flush();
        return;
      } catch (err) {
        const resumable = attempt < MAX_RESUMES && !signal.aborted && !this.#passthrough && this.size !== undefined && this.#received > from;
        if (!resumable) throw err instanceof UpstreamUnavailable || signal.aborted || isStoreFull(err) ? err : new UpstreamUnavailable(`blob body cut: ${(err as Error).message}`);
        this.#deps.log.warn('blob body cut; resuming', { digest: this.digest, at: this.#received });
      } finally {
        res.body.destroy();
        res.release();
      }
    }
  }

  /**
   * One upstream chunk: queued for the spool file, or (pass-through) into the window for
   * the followers. Returns a promise only when reading upstream must wait: most chunks
   * cost no promise at all.
   */
  #take(chunk: Buffer): Promise<void> | undefined {
    if (this.#writeError) throw this.#writeError;
    this.#received += chunk.length;
    if (this.#passthrough) {
      this.#passthrough.hash.tail(chunk);
      this.#window.push(chunk);
      this.#wake();
      return this.#throttle();
    }
    this.#pending.push(chunk);
    this.#pendingBytes += chunk.length;
    this.#recent.push(chunk);
    // Followers read these from memory; waking them per chunk would mean a write per chunk.
    if (this.#received - this.#wokeAt >= FOLLOW_STEP) {
      this.#wokeAt = this.#received;
      this.#wake();
    }
    this.#writing ??= this.#drain();
    // Reading upstream waits only when the disk falls behind by MAX_PENDING.
    return this.#pendingBytes >= MAX_PENDING ? this.#writing : undefined;
  }

  /** Writes what is pending in batches (one writev each) until nothing is; wakes followers after each. */
  async #drain(): Promise<void> {
    try {
      while (this.#pending.length > 0 && !this.#passthrough) {
        const batch = this.#pending;
        this.#pending = [];
        this.#pendingBytes = 0;
        const before = this.onDisk;
        try {
          await this.#spool!.append(batch);
          this.#forgetWritten();
        } catch (err) {
          if (!isStoreFull(err)) throw err;
          // append() hashed what reached the file; a short write may have put part of the
          // batch there. The window, and the hash's in-memory tail, start after it.
          const hash = this.#spool!.hash;
          this.#enterPassthrough(err as Error, hash);
          for (const c of [...dropBytes(batch, this.onDisk - before), ...this.#pending]) {
            hash.tail(c);
            this.#window.push(c);
          }
          this.#pending = [];
          this.#pendingBytes = 0;
          this.#recent = [];
        }
        this.#wake();
      }
    } catch (err) {
      this.#writeError = err as Error;
    } finally {
      this.#writing = undefined;
    }
  }

  /** Drops the oldest written chunks from memory, keeping at least RECENT_BYTES of the written ones. */
  #forgetWritten(): void {
    const onDisk = this.onDisk;
    const recent = this.#recent;
    let drop = 0;
    let start = this.#recentStart;
    while (drop < recent.length && start + recent[drop].length <= onDisk - RECENT_BYTES) start += recent[drop++].length;
    if (drop === 0) return;
    this.#recent = recent.slice(drop);
    this.#recentStart = start;
  }

  /** Waits until everything received is in the spool file (or the window). */
  async #flush(): Promise<void> {
    while (this.#writing) await this.#writing;
    if (this.#writeError) throw this.#writeError;
  }

  #enterPassthrough(err: Error, hash: ContentHash): void {
    this.#passthrough = { hash };
    this.#recent = [];
    this.#windowStart = this.onDisk;
    this.#deps.log.warn('store write failed; streaming the blob without caching', { digest: this.digest, code: err instanceof StoreFull ? err.reason : err.message });
    this.#deps.onStoreFull?.(err);
  }

  /** Drops window bytes every follower has read; waits while the slowest lags too far behind. */
  async #throttle(): Promise<void> {
    for (;;) {
      if (this.#followers.size === 0) throw new UpstreamUnavailable('every client left a blob that cannot be cached (store full); download abandoned');
      const slowest = Math.min(...[...this.#followers].map((f) => f.position));
      while (this.#window.length && this.#windowStart + this.#window[0].length <= slowest) this.#windowStart += this.#window.shift()!.length;
      if (this.#received - this.#windowStart <= WINDOW_BYTES) return;
      await this.changed();
    }
  }
}

function deferred(): { promise: Promise<void>; resolve: () => void } {
  let resolve!: () => void;
  const promise = new Promise<void>((r) => (resolve = r));
  return { promise, resolve };
}

/** Copies up to `max` bytes at `pos` of chunks that hold the bytes from `start` on into `buf`; returns how many. */
function copyOut(chunks: readonly Buffer[], start: number, pos: number, max: number, buf: Buffer): number {
  if (pos < start) return 0;
  let at = start;
  let n = 0;
  for (const chunk of chunks) {
    if (n >= max) break;
    const end = at + chunk.length;
    if (pos + n < end) n += chunk.copy(buf, n, pos + n - at, Math.min(chunk.length, pos + n - at + (max - n)));
    at = end;
  }
  return n;
}
