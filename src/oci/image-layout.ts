// The OCI image layout as one tar stream (what `skopeo copy … oci-archive:` reads and
// `ctr images import` takes):
//
//   oci-layout          {"imageLayoutVersion":"1.0.0"}
//   index.json          an OCI index of the exported roots, each named by annotations
//   blobs/sha256/<hex>  manifests, configs and layers, byte for byte
//
// Written and read as streams: a blob goes from its source into its tar entry with its
// size known up front, and comes out of a tar as an async iterable of chunks, so neither
// direction stages a copy or holds a whole blob in memory. Nothing here touches the disk.
import { extract, pack, type Header, type Pack } from 'tar-stream';
import { digestHex, parseDigest, type Digest } from './digest.js';
import { OCI_INDEX, type Descriptor } from './manifest.js';

export const LAYOUT_FILE = 'oci-layout';
export const INDEX_FILE = 'index.json';
export const IMAGE_LAYOUT_VERSION = '1.0.0';
/** skopeo's `oci-archive:<file>:<ref>` picks the index.json entry whose ref.name equals <ref>. */
export const REF_NAME_ANNOTATION = 'org.opencontainers.image.ref.name';
/** `ctr images import` names the image by this (before ref.name, which it would prefix). */
export const CONTAINERD_NAME_ANNOTATION = 'io.containerd.image.name';
/** index.json and oci-layout are read whole; anything larger is no layout of ours. */
export const MAX_LAYOUT_FILE_BYTES = 4 * 1024 * 1024;

/** A problem with one entry of a layout (`entry` is its path in the tar, or `bundle`). */
export class LayoutError extends Error {
  constructor(
    readonly entry: string,
    problem: string,
  ) {
    super(`${entry}: ${problem}`);
    this.name = 'LayoutError';
  }
}

/** `blobs/sha256/<hex>`: where a blob lives in a layout. */
export function blobEntryName(d: Digest): string {
  return `blobs/sha256/${digestHex(d)}`;
}

/** An image named in index.json: the root descriptor and its full reference. */
export interface LayoutRoot {
  /** Full normalised reference, e.g. `docker.io/library/alpine:3`. */
  name: string;
  descriptor: { mediaType: string; digest: string; size: number };
}

/** The bytes of index.json for these roots; both name annotations carry the full reference. */
export function layoutIndex(roots: LayoutRoot[]): Buffer {
  const index = {
    schemaVersion: 2,
    mediaType: OCI_INDEX,
    manifests: roots.map((r) => ({
      mediaType: r.descriptor.mediaType,
      digest: r.descriptor.digest,
      size: r.descriptor.size,
      annotations: { [CONTAINERD_NAME_ANNOTATION]: r.name, [REF_NAME_ANNOTATION]: r.name },
    })),
  };
  return Buffer.from(JSON.stringify(index, null, 2) + '\n');
}

export function layoutFile(): Buffer {
  return Buffer.from(JSON.stringify({ imageLayoutVersion: IMAGE_LAYOUT_VERSION }) + '\n');
}

/** A root as index.json lists it; `name` is undefined when neither annotation is set. */
export interface IndexedRoot {
  name?: string;
  descriptor: Descriptor;
}

/** Parses index.json; throws LayoutError('index.json', …) when it is not an index of valid descriptors. */
export function parseLayoutIndex(bytes: Uint8Array): IndexedRoot[] {
  const fail = (problem: string): never => {
    throw new LayoutError(INDEX_FILE, problem);
  };
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    return fail('not valid JSON');
  }
  if (typeof doc !== 'object' || doc === null || Array.isArray(doc)) return fail('not a JSON object');
  const { schemaVersion, manifests } = doc as { schemaVersion?: unknown; manifests?: unknown };
  if (schemaVersion !== 2) fail(`schemaVersion is ${JSON.stringify(schemaVersion)}, not 2`);
  if (!Array.isArray(manifests)) return fail('has no manifests list');
  return manifests.map((m: unknown, i): IndexedRoot => {
    const d = m as Partial<Descriptor> | null;
    const where = `manifests[${i}]`;
    if (typeof d !== 'object' || d === null) return fail(`${where} is not a descriptor`);
    if (typeof d.mediaType !== 'string') fail(`${where} has no mediaType`);
    if (typeof d.digest !== 'string') fail(`${where} has no digest`);
    try {
      parseDigest(d.digest!);
    } catch (err) {
      fail(`${where}: ${(err as Error).message}`);
    }
    if (typeof d.size !== 'number' || !Number.isSafeInteger(d.size) || d.size < 0) fail(`${where} has no valid size`);
    const annotations = typeof d.annotations === 'object' && d.annotations !== null ? d.annotations : {};
    const name = [annotations[CONTAINERD_NAME_ANNOTATION], annotations[REF_NAME_ANNOTATION]].find((n) => typeof n === 'string' && n.length > 0);
    return { name, descriptor: { ...(d as Descriptor), annotations } };
  });
}

/** Parses oci-layout; throws LayoutError('oci-layout', …) unless it names a 1.x layout. */
export function parseLayoutFile(bytes: Uint8Array): void {
  let doc: unknown;
  try {
    doc = JSON.parse(Buffer.from(bytes).toString('utf8'));
  } catch {
    throw new LayoutError(LAYOUT_FILE, 'not valid JSON');
  }
  const version = (doc as { imageLayoutVersion?: unknown } | null)?.imageLayoutVersion;
  if (typeof version !== 'string' || !/^1\.\d+\.\d+$/.test(version)) {
    throw new LayoutError(LAYOUT_FILE, `unsupported imageLayoutVersion ${JSON.stringify(version)}`);
  }
}

// ---------------------------------------------------------------------------
// Writing

// Fixed metadata, so the same content always makes the same tar.
const FILE: Partial<Header> = { mode: 0o644, mtime: new Date(0), uid: 0, gid: 0, uname: '', gname: '' };
const DIR: Partial<Header> = { ...FILE, type: 'directory', mode: 0o755 };

/**
 * Writes a layout as a tar into `out`, in call order. Call writeFile/writeBlob one at a
 * time (each awaited), then finish(); on any failure call abort(err).
 */
export class ImageLayoutWriter {
  readonly #pack: Pack = pack();
  readonly #out: NodeJS.WritableStream;
  readonly #pumped: Promise<void>;
  #failed?: Error;

  constructor(out: NodeJS.WritableStream) {
    this.#out = out;
    // Kept for good: an error of `out` fails the export (through writeEntry/finish), and
    // one after abort() must not become an uncaught exception.
    out.on('error', (err: Error) => this.#fail(err));
    this.#pumped = this.#pump();
    this.#pumped.catch(() => {}); // surfaced through writeEntry/finish
    this.#pack.entry({ ...DIR, name: 'blobs/' }).on('error', noop);
    this.#pack.entry({ ...DIR, name: 'blobs/sha256/' }).on('error', noop);
  }

  /** Copies the tar into `out`, waiting for it to drain. */
  async #pump(): Promise<void> {
    const out = this.#out;
    try {
      for await (const chunk of this.#pack) {
        if (this.#failed) break;
        if (!out.write(chunk as Buffer)) await drained(out);
      }
    } catch (err) {
      this.#fail(err as Error);
    }
    if (this.#failed) throw this.#failed;
  }

  /** Stops the tar; entries being written fail with their own "destroyed" error, never emitted. */
  #fail(err: Error): void {
    this.#failed ??= err;
    if (!this.#pack.destroyed) this.#pack.destroy();
  }

  /** A small file (oci-layout, index.json, a manifest body) from memory. */
  writeFile(name: string, bytes: Uint8Array): Promise<void> {
    return this.writeEntry(name, bytes.byteLength, [bytes]);
  }

  /** A blob streamed from `body`, which must yield exactly `size` bytes. */
  writeBlob(d: Digest, size: number, body: AsyncIterable<Uint8Array>): Promise<void> {
    return this.writeEntry(blobEntryName(d), size, body);
  }

  async writeEntry(name: string, size: number, body: Iterable<Uint8Array> | AsyncIterable<Uint8Array>): Promise<void> {
    if (this.#failed) throw this.#failed;
    let settle!: (err?: Error | null) => void;
    const written = new Promise<void>((resolve, reject) => {
      settle = (err) => (err ? reject(this.#failed ?? err) : resolve());
    });
    written.catch(noop);
    const sink = this.#pack.entry({ ...FILE, name, size }, (err) => settle(err));
    sink.on('error', noop); // reported through the entry callback
    try {
      for await (const chunk of body) {
        if (this.#failed) throw this.#failed;
        if (!sink.write(Buffer.from(chunk.buffer, chunk.byteOffset, chunk.byteLength))) await drained(sink);
      }
      sink.end(undefined);
    } catch (err) {
      this.#fail(err as Error);
      throw err;
    }
    await written;
  }

  /** Writes the end-of-archive marker, waits for `out` to take every byte and ends it. */
  async finish(): Promise<void> {
    if (this.#failed) throw this.#failed;
    this.#pack.finalize();
    await this.#pumped;
    await new Promise<void>((resolve, reject) => {
      this.#out.once('error', reject);
      this.#out.end(() => resolve());
    });
  }

  /**
   * Stops writing: the tar is left incomplete and `out` is destroyed once nothing more is
   * being written to it (a file is closed; the caller removes it). Destroyed without an
   * error: the failure is the rejection the caller already has.
   */
  abort(err: Error): void {
    this.#fail(err);
    const out = this.#out as NodeJS.WritableStream & { destroy?: () => void };
    void this.#pumped.catch(noop).finally(() => out.destroy?.());
  }
}

function noop(): void {}

/** Resolves on 'drain'; rejects when the stream errors or closes first. */
function drained(stream: { once(event: string, fn: (...args: unknown[]) => void): unknown; off?(event: string, fn: (...args: unknown[]) => void): unknown }): Promise<void> {
  return new Promise((resolve, reject) => {
    const done = (err?: Error) => {
      stream.off?.('drain', onDrain);
      stream.off?.('error', onError);
      stream.off?.('close', onClose);
      if (err) reject(err);
      else resolve();
    };
    const onDrain = () => done();
    const onError = (err: unknown) => done(err as Error);
    const onClose = () => done(new Error('the stream was closed before it drained'));
    stream.once('drain', onDrain);
    stream.once('error', onError);
    stream.once('close', onClose);
  });
}

// ---------------------------------------------------------------------------
// Reading

/** One regular file of a layout tar. Consume or skip `body` before asking for the next entry. */
export interface LayoutEntry {
  /** The path in the tar, without a leading `./`. */
  name: string;
  kind: 'oci-layout' | 'index' | 'blob' | 'other';
  /** For blobs: the digest its path names. */
  digest?: Digest;
  /** From the tar header. */
  size: number;
  /** The entry's bytes; a bundle that ends inside the entry fails here with a LayoutError naming it. */
  body: AsyncIterable<Buffer>;
}

/**
 * Reads a layout tar entry by entry. Directories are skipped; a link or device under
 * `blobs/`, a blob path that is no sha256 digest, or a tar that ends early throws a
 * LayoutError naming the entry. Breaking out of the loop stops reading `input`.
 */
export async function* readImageLayout(input: NodeJS.ReadableStream): AsyncGenerator<LayoutEntry> {
  const ex = extract();
  let inputError: Error | undefined;
  const onInputError = (err: Error) => {
    inputError ??= err;
    ex.destroy(err);
  };
  input.on('error', onInputError);
  input.pipe(ex as unknown as NodeJS.WritableStream);
  let last: string | undefined;
  const where = () => (last === undefined ? 'bundle' : `bundle after ${last}`);
  const iterator = ex[Symbol.asyncIterator]();
  try {
    for (;;) {
      let step: Awaited<ReturnType<typeof iterator.next>>;
      try {
        step = await iterator.next();
      } catch (err) {
        throw new LayoutError(where(), inputError ? `reading the bundle failed: ${inputError.message}` : describeTarError(err as Error, last === undefined ? 'start' : 'between'));
      }
      if (step.done) return;
      const stream = step.value;
      const header = stream.header;
      const name = header.name.replace(/^(\.\/)+/, '');
      last = name;
      const type = header.type ?? 'file';
      if (type === 'directory') {
        stream.resume();
        continue;
      }
      const isBlobPath = name.startsWith('blobs/');
      if (type !== 'file' && type !== 'contiguous-file') {
        if (isBlobPath || name === INDEX_FILE || name === LAYOUT_FILE) throw new LayoutError(name, `is a ${type}, not a regular file`);
        stream.resume();
        continue;
      }
      const size = header.size ?? 0;
      let kind: LayoutEntry['kind'] = 'other';
      let digest: Digest | undefined;
      if (name === LAYOUT_FILE) kind = 'oci-layout';
      else if (name === INDEX_FILE) kind = 'index';
      else if (isBlobPath) {
        const m = /^blobs\/([^/]+)\/([^/]+)$/.exec(name);
        if (!m) throw new LayoutError(name, 'is not blobs/<algorithm>/<hex>');
        try {
          digest = parseDigest(`${m[1]}:${m[2]}`);
        } catch (err) {
          throw new LayoutError(name, (err as Error).message);
        }
        kind = 'blob';
      }
      let consumed = false;
      const body = (async function* () {
        consumed = true;
        try {
          for await (const chunk of stream) yield chunk as Buffer;
        } catch (err) {
          throw new LayoutError(name, inputError ? `reading the bundle failed: ${inputError.message}` : describeTarError(err as Error, 'inside'));
        }
      })();
      yield { name, kind, digest, size, body };
      if (!consumed) {
        // Skipped by the consumer: drain it so the next entry can be read.
        for await (const _ of body) void _;
      }
    }
  } finally {
    input.off('error', onInputError);
    input.unpipe?.(ex as unknown as NodeJS.WritableStream);
    if (!ex.destroyed) ex.destroy();
  }
}

function describeTarError(err: Error, where: 'start' | 'between' | 'inside'): string {
  // tar-stream fails the extractor with "Unexpected end of data" and destroys the entry
  // being read with a bare "Stream was destroyed".
  if (where === 'inside' && /unexpected end of data|stream was destroyed/i.test(err.message)) return 'the bundle is truncated: it ends inside this entry';
  if (/unexpected end of data/i.test(err.message)) return 'the bundle is truncated';
  if (/invalid (tar )?header/i.test(err.message)) return where === 'start' ? 'not a tar archive' : 'damaged tar header';
  return err.message;
}
