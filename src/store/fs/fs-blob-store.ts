// The content store on a local file system, content-addressed:
//
//   <data>/blobs/sha256/ab/<hex>   published blobs and manifest bodies (never partial)
//
// A blob gets there only from a verified spool file in <data>/tmp on the same file system:
// fsync, then rename (or link, to keep the spool's name as a hold), so a crash leaves
// either the whole verified file or nothing. A blob's version is its file's mtime, set at
// commit: an in-place change shows as a new version.
import { link, mkdir, readdir, readFile, rm, stat, statfs, unlink, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { BlobGone, RangeNotSatisfiable } from '../../errors.js';
import { digestHex, isDigest, type Digest } from '../../oci/digest.js';
import { FileRangeSource, type BodySource } from '../body-source.js';
import { COMMIT_GRACE_MS, type ByteRange, type Capacity, type ContentStat, type ContentStore, type HeldBlob } from '../content-store.js';
import { isNotFound, rethrowAsStoreError } from '../file-errors.js';
import { statFile } from '../fs-callbacks.js';
import { linkInto, newSpoolName, type Spool, type SpoolFile } from '../spool.js';

export class FsBlobStore implements ContentStore {
  readonly #blobs: string;
  /** Where holds of published blobs are linked: the spool's directory, swept with it. */
  readonly #holds: string;
  readonly #spool: Spool;

  constructor(blobsDir: string, spoolDir: string, spool: Spool) {
    this.#blobs = blobsDir;
    this.#holds = spoolDir;
    this.#spool = spool;
  }

  /** Creates the directories; call once before use. */
  async init(): Promise<void> {
    await mkdir(join(this.#blobs, 'sha256'), { recursive: true });
  }

  /** `<data>/blobs/sha256/ab/<hex>`: the only function that turns a digest into a path. */
  pathFor(d: Digest): string {
    const hex = digestHex(d);
    return join(this.#blobs, 'sha256', hex.slice(0, 2), hex);
  }

  /** Asked on every hit of a blob not held in memory, hence fs's callback stat (fs-callbacks.ts). */
  async stat(d: Digest): Promise<ContentStat | undefined> {
    try {
      const st = await statFile(this.pathFor(d));
      return { size: st.size, version: String(st.mtimeMs) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  source(d: Digest, size: number, range?: ByteRange): BodySource {
    if (range && (range.start < 0 || range.start > range.end || range.end >= size)) throw new RangeNotSatisfiable(size);
    return new FileRangeSource(this.pathFor(d), size, range, () => new BlobGone(d));
  }

  read(d: Digest): Promise<Buffer> {
    return readFile(this.pathFor(d)).catch((err: unknown) => {
      throw isNotFound(err) ? new BlobGone(d) : err;
    });
  }

  async commit(spool: SpoolFile): Promise<{ version: string }> {
    return { version: String(await this.#place(spool, false)) };
  }

  async commitAndHold(spool: SpoolFile): Promise<{ version: string; held: HeldBlob }> {
    const mtimeMs = await this.#place(spool, true);
    const held = new FsHold(this.pathFor(spool.expected), { read: () => spool.read(), linkTo: (dest) => spool.relinkTo(dest), release: () => spool.discard() });
    return { version: String(mtimeMs), held };
  }

  /** A link in the spool's directory to the published file: it outlives the file's removal from blobs/. */
  async hold(d: Digest, size: number): Promise<HeldBlob | undefined> {
    const path = newSpoolName(this.#holds);
    try {
      await link(this.pathFor(d), path);
    } catch (err) {
      if (isNotFound(err)) return undefined;
      rethrowAsStoreError(err);
    }
    if ((await stat(path)).size === size) {
      const kept = { read: () => readFile(path), linkTo: (dest: string) => linkInto(path, dest).then(() => undefined), release: () => rm(path, { force: true }) };
      return new FsHold(this.pathFor(d), kept);
    }
    await rm(path, { force: true });
    return undefined;
  }

  /** Written through a spool file like any blob, so it is verified and appears whole or not at all. */
  async put(d: Digest, bytes: Uint8Array): Promise<{ version: string }> {
    const spool = await this.#spool.create(d, bytes.byteLength);
    try {
      await spool.write(bytes);
    } catch (err) {
      await spool.discard();
      throw err;
    }
    return this.commit(spool);
  }

  async remove(d: Digest): Promise<void> {
    // unlink, not rm: rm stats the path first, a second system call per evicted blob.
    await unlink(this.pathFor(d)).catch((err: unknown) => {
      if (!isNotFound(err)) throw err;
    });
  }

  /** By walking blobs/sha256. */
  async *list(): AsyncGenerator<Digest> {
    const root = join(this.#blobs, 'sha256');
    for (const prefix of await readdir(root).catch(() => [] as string[])) {
      if (!/^[a-f0-9]{2}$/.test(prefix)) continue;
      for (const name of await readdir(join(root, prefix)).catch(() => [] as string[])) {
        if (name.startsWith(prefix) && isDigest(`sha256:${name}`)) yield `sha256:${name}` as Digest;
      }
    }
  }

  /** By reading each prefix directory the digests fall in once: a batch by digest costs a few directory reads, not a stat per blob. */
  async present(digests: readonly Digest[]): Promise<Set<Digest>> {
    const byPrefix = new Map<string, Digest[]>();
    for (const d of digests) {
      const prefix = digestHex(d).slice(0, 2);
      const group = byPrefix.get(prefix);
      if (group) group.push(d);
      else byPrefix.set(prefix, [d]);
    }
    const found = new Set<Digest>();
    for (const [prefix, group] of byPrefix) {
      const names = new Set(
        await readdir(join(this.#blobs, 'sha256', prefix)).catch((err: unknown) => {
          if (isNotFound(err)) return [];
          throw err;
        }),
      );
      for (const d of group) if (names.has(digestHex(d))) found.add(d);
    }
    return found;
  }

  /** By its mtime, which commit sets. */
  async recentlyCommitted(d: Digest, now = Date.now()): Promise<boolean> {
    const st = await stat(this.pathFor(d)).catch(() => undefined);
    return st !== undefined && now - st.mtimeMs < COMMIT_GRACE_MS;
  }

  /** The file system's size and the room left for an unprivileged writer. */
  async capacity(): Promise<Capacity> {
    const fs = await statfs(this.#blobs);
    return { totalBytes: fs.blocks * fs.bsize, freeBytes: fs.bavail * fs.bsize };
  }

  async checkWritable(): Promise<void> {
    // Beside blobs/sha256, where list() never looks.
    const probe = join(this.#blobs, `.ready-${process.pid}`);
    try {
      await writeFile(probe, 'ok');
      await rm(probe, { force: true });
    } catch (err) {
      rethrowAsStoreError(err);
    }
  }

  /** Verifies, fsyncs and names the spool file at its digest's path; on any failure discards it. The mtime set. */
  async #place(spool: SpoolFile, keep: boolean): Promise<number> {
    try {
      await spool.verify();
      await spool.syncAndClose();
      const dest = this.pathFor(spool.expected);
      await mkdir(dirname(dest), { recursive: true });
      return await spool.placeAt(dest, keep);
    } catch (err) {
      await spool.discard();
      rethrowAsStoreError(err);
    }
  }
}

/** A second name of a verified file: a kept spool file, or a link to a published one. */
interface Kept {
  read(): Promise<Buffer>;
  linkTo(dest: string): Promise<void>;
  release(): Promise<void>;
}

/** A kept file from which the published copy can be linked back. */
class FsHold implements HeldBlob {
  readonly #dest: string;
  readonly #kept: Kept;

  constructor(dest: string, kept: Kept) {
    this.#dest = dest;
    this.#kept = kept;
  }

  read(): Promise<Buffer> {
    return this.#kept.read();
  }

  async restore(): Promise<{ version: string }> {
    await mkdir(dirname(this.#dest), { recursive: true });
    await this.#kept.linkTo(this.#dest);
    return { version: String((await stat(this.#dest)).mtimeMs) };
  }

  release(): Promise<void> {
    return this.#kept.release();
  }
}
