// The content store in an S3 bucket (AWS, Ceph RGW, MinIO, …), content-addressed:
//
//   <prefix>/blobs/sha256/ab/<hex>   published blobs and manifest bodies
//
// A blob gets there only from a verified spool file (store/spool.ts), which stays on local
// disk: one PutObject for a small one, a multipart upload for a large one; either way the
// object appears under its key only once it is whole. Its version is the object's version
// id where the bucket keeps versions, else its ETag: both change when other bytes are put
// under the key. A blob can also be located: a presigned GET URL lets a client read it
// from the bucket itself (storage.redirect). Holds keep a verified local copy in the spool, to upload again if the
// object was removed meanwhile.
import { DeleteObjectCommand, GetObjectCommand, HeadObjectCommand, ListObjectsV2Command, PutObjectCommand, S3Client, type HeadObjectCommandOutput } from '@aws-sdk/client-s3';
import { Upload } from '@aws-sdk/lib-storage';
import { getSignedUrl } from '@aws-sdk/s3-request-presigner';
import { randomBytes } from 'node:crypto';
import pLimit from 'p-limit';
import { Readable } from 'node:stream';
import { BlobGone, DigestMismatch, RangeNotSatisfiable, SizeMismatch } from '../../errors.js';
import { digestHex, DigestVerifier, isDigest, type Digest } from '../../oci/digest.js';
import type { BodySource } from '../body-source.js';
import { COMMIT_GRACE_MS, type ByteRange, type ContentStat, type ContentStore, type HeldBlob } from '../content-store.js';
import type { Spool, SpoolFile } from '../spool.js';
import { isMissing, readError, storeError } from './s3-errors.js';
import { S3RangeSource } from './s3-range-source.js';
import { SpoolHold } from './spool-hold.js';

export interface S3StoreOptions {
  bucket: string;
  /** Keys start with it (no leading or trailing slash needed); none puts blobs/ at the bucket's root. */
  prefix?: string;
  /** Unset: the AWS chain's, or us-east-1 with an endpoint. */
  region?: string;
  /** For a store other than AWS: its URL, e.g. http://rgw.internal:7480. */
  endpoint?: string;
  /** Bucket in the path rather than the host name (most stores other than AWS want it). */
  forcePathStyle?: boolean;
  /** Static keys; without them the AWS default chain (environment, profile, instance role). */
  credentials?: { accessKeyId: string; secretAccessKey: string; sessionToken?: string };
  /** Blobs larger than this go up in parts of this size (S3's minimum part is 5 MiB). */
  partSize?: number;
}

const DEFAULT_PART_SIZE = 16 * 1024 * 1024;
/** Parts of one upload in flight at once: the memory an upload takes is this many parts. */
const UPLOAD_QUEUE = 2;
const SPOOL_READ_CHUNK = 1024 * 1024;
const MAX_SOCKETS = 1024;
/** HEADs in flight for one present() batch. */
const PRESENT_CONCURRENCY = 16;
/** An endpoint that does not answer fails a request in this long, not at the OS's TCP timeout. */
const CONNECT_TIMEOUT_MS = 5000;

export class S3ContentStore implements ContentStore {
  readonly #s3: S3Client;
  readonly #bucket: string;
  /** `<prefix>/`, or empty. */
  readonly #root: string;
  readonly #spool: Spool;
  readonly #partSize: number;

  constructor(opts: S3StoreOptions, spool: Spool) {
    // With an endpoint of its own the store rarely cares which region a request is signed
    // for; AWS itself does, and the chain (AWS_REGION, the profile) knows it.
    const region = opts.region ?? (opts.endpoint ? 'us-east-1' : undefined);
    this.#s3 = new S3Client({
      ...(region ? { region } : {}),
      ...(opts.endpoint ? { endpoint: opts.endpoint } : {}),
      forcePathStyle: opts.forcePathStyle ?? false,
      ...(opts.credentials ? { credentials: opts.credentials } : {}),
      // Every blob being served holds a connection (two at a chunk's end) for as long as its
      // client takes: the SDK's 50 would queue a HEAD for a hit behind slow pulls. No
      // request timeout: a body waits on its client, idle, by design.
      requestHandler: { connectionTimeout: CONNECT_TIMEOUT_MS, httpAgent: { keepAlive: true, maxSockets: MAX_SOCKETS }, httpsAgent: { keepAlive: true, maxSockets: MAX_SOCKETS } },
    });
    this.#bucket = opts.bucket;
    const prefix = (opts.prefix ?? '').replace(/^\/+|\/+$/g, '');
    this.#root = prefix === '' ? '' : `${prefix}/`;
    this.#spool = spool;
    this.#partSize = Math.max(opts.partSize ?? DEFAULT_PART_SIZE, 5 * 1024 * 1024);
  }

  /** `<prefix>/blobs/sha256/ab/<hex>`: the only function that turns a digest into a key. */
  keyFor(d: Digest): string {
    const hex = digestHex(d);
    return `${this.#root}blobs/sha256/${hex.slice(0, 2)}/${hex}`;
  }

  async stat(d: Digest): Promise<ContentStat | undefined> {
    const head = await this.#head(d);
    return head && { size: head.ContentLength ?? 0, version: versionOf(head) };
  }

  source(d: Digest, size: number, range?: ByteRange): BodySource {
    if (range && (range.start < 0 || range.start > range.end || range.end >= size)) throw new RangeNotSatisfiable(size);
    const key = this.keyFor(d);
    return new S3RangeSource(async (start, end, signal) => {
      try {
        const res = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key, Range: `bytes=${start}-${end}` }), { abortSignal: signal });
        return res.Body as Readable;
      } catch (err) {
        throw readError(err, d, 'GetObject');
      }
    }, size, range);
  }

  async read(d: Digest): Promise<Buffer> {
    const key = this.keyFor(d);
    try {
      const res = await this.#s3.send(new GetObjectCommand({ Bucket: this.#bucket, Key: key }));
      return Buffer.from(await res.Body!.transformToByteArray());
    } catch (err) {
      throw readError(err, d, 'GetObject');
    }
  }

  async commit(spool: SpoolFile): Promise<{ version: string }> {
    return { version: await this.#upload(spool) };
  }

  async commitAndHold(spool: SpoolFile): Promise<{ version: string; held: HeldBlob }> {
    const version = await this.#upload(spool);
    return { version, held: new SpoolHold(spool, this.#restorer(spool)) };
  }

  /** Downloads the published blob into a spool file, verified: the hold is a local copy, as one made by commitAndHold. */
  async hold(d: Digest, size: number): Promise<HeldBlob | undefined> {
    const head = await this.#head(d);
    if (!head || head.ContentLength !== size) return undefined;
    const spool = await this.#spool.create(d, size);
    try {
      for await (const chunk of this.#wholeObject(d, size)) await spool.write(chunk);
      await spool.verify();
    } catch (err) {
      await spool.discard();
      // Gone meanwhile, or not the bytes it claims: there is nothing to hold.
      if (err instanceof BlobGone || err instanceof DigestMismatch || err instanceof SizeMismatch) return undefined;
      throw err;
    }
    return new SpoolHold(spool, this.#restorer(spool));
  }

  async put(d: Digest, bytes: Uint8Array): Promise<{ version: string }> {
    const v = new DigestVerifier(d, bytes.byteLength);
    v.update(bytes);
    v.verify();
    return { version: await this.#putObject(d, bytes) };
  }

  async remove(d: Digest): Promise<void> {
    const key = this.keyFor(d);
    // S3 answers a delete of an absent key with success.
    await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key })).catch((err: unknown) => {
      throw storeError(err, 'DeleteObject');
    });
  }

  /** A HEAD each, 16 at once: a listing per prefix would take fewer requests for a big batch, but pages of keys to hold and compare. */
  async present(digests: readonly Digest[]): Promise<Set<Digest>> {
    const limit = pLimit(PRESENT_CONCURRENCY);
    const heads = await Promise.all(digests.map((d) => limit(async () => ((await this.#head(d)) ? d : undefined))));
    return new Set(heads.filter((d) => d !== undefined));
  }

  /** Every key under <prefix>/blobs/sha256/ that is a blob's; anything else there is skipped. */
  async *list(): AsyncGenerator<Digest> {
    const under = `${this.#root}blobs/sha256/`;
    let token: string | undefined;
    do {
      const page = await this.#s3.send(new ListObjectsV2Command({ Bucket: this.#bucket, Prefix: under, ContinuationToken: token })).catch((err: unknown) => {
        throw storeError(err, 'ListObjectsV2');
      });
      for (const o of page.Contents ?? []) {
        const d = o.Key === undefined ? undefined : this.#digestAt(o.Key.slice(under.length));
        if (d) yield d;
      }
      token = page.IsTruncated ? page.NextContinuationToken : undefined;
    } while (token);
  }

  /** By the object's Last-Modified, which S3 sets when an upload completes. */
  async recentlyCommitted(d: Digest, now = Date.now()): Promise<boolean> {
    const head = await this.#head(d);
    return head?.LastModified !== undefined && now - head.LastModified.getTime() < COMMIT_GRACE_MS;
  }

  /** A bucket has no bound the store could see (a quota shows as a refused write). */
  async capacity(): Promise<undefined> {
    return undefined;
  }

  /** Puts and deletes a probe object beside blobs/, where list() never looks. */
  async checkWritable(): Promise<void> {
    const key = `${this.#root}.ready-${process.pid}-${randomBytes(6).toString('hex')}`;
    try {
      await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key: key, Body: 'ok' }));
      await this.#s3.send(new DeleteObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (err) {
      throw storeError(err, 'PutObject/DeleteObject of a probe');
    }
  }

  /**
   * A presigned GetObject URL for the blob's key, signed locally with the store's own
   * credentials (no request to the store): its query carries only S3's signature, and
   * it honours Range. With temporary credentials (a role, web identity) it stops working
   * when they expire, which may come before `expiresInSeconds`. The size is not needed:
   * the object is the blob.
   */
  async locate(d: Digest, _size: number, opts: { expiresInSeconds: number }): Promise<string> {
    try {
      return await getSignedUrl(this.#s3, new GetObjectCommand({ Bucket: this.#bucket, Key: this.keyFor(d) }), { expiresIn: opts.expiresInSeconds });
    } catch (err) {
      throw storeError(err, 'presigning GetObject');
    }
  }

  /** Closes the client's connections. */
  close(): void {
    this.#s3.destroy();
  }

  /** Verifies the spool and uploads it under its digest; on a mismatch discards it. The object's version. */
  async #upload(spool: SpoolFile): Promise<string> {
    try {
      await spool.verify();
    } catch (err) {
      await spool.discard();
      throw err;
    }
    const d = spool.expected;
    if (spool.written <= this.#partSize) return this.#putObject(d, await spool.read());
    const key = this.keyFor(d);
    try {
      const upload = new Upload({ client: this.#s3, params: { Bucket: this.#bucket, Key: key, Body: spoolStream(spool) }, partSize: this.#partSize, queueSize: UPLOAD_QUEUE });
      await upload.done();
    } catch (err) {
      throw storeError(err, 'multipart upload');
    }
    // Asked, not taken from the upload's answer: not every store sends the final ETag.
    const head = await this.#head(d);
    if (!head) throw storeError(new Error('the uploaded object is not there'), 'HeadObject');
    return versionOf(head);
  }

  async #putObject(d: Digest, bytes: Uint8Array): Promise<string> {
    const key = this.keyFor(d);
    try {
      const res = await this.#s3.send(new PutObjectCommand({ Bucket: this.#bucket, Key: key, Body: bytes, ContentLength: bytes.byteLength }));
      if (res.VersionId || res.ETag) return versionOf(res);
    } catch (err) {
      throw storeError(err, 'PutObject');
    }
    const head = await this.#head(d);
    if (!head) throw storeError(new Error('the object put is not there'), 'HeadObject');
    return versionOf(head);
  }

  /** Puts the kept spool back under its key when the object is gone; the object's version. */
  #restorer(spool: SpoolFile): () => Promise<string> {
    return async () => {
      const head = await this.#head(spool.expected);
      return head ? versionOf(head) : this.#upload(spool);
    };
  }

  async #head(d: Digest): Promise<HeadObjectCommandOutput | undefined> {
    const key = this.keyFor(d);
    try {
      return await this.#s3.send(new HeadObjectCommand({ Bucket: this.#bucket, Key: key }));
    } catch (err) {
      if (isMissing(err)) return undefined;
      throw storeError(err, 'HeadObject');
    }
  }

  /** The whole object in chunks, through the same ranged reads as serving. */
  async *#wholeObject(d: Digest, size: number): AsyncGenerator<Buffer> {
    const source = this.source(d, size);
    try {
      for (;;) {
        const buf = Buffer.allocUnsafe(SPOOL_READ_CHUNK);
        const n = await source.readInto(buf);
        if (n === 0) return;
        yield buf.subarray(0, n);
      }
    } finally {
      await source.close();
    }
  }

  /** `ab/<hex>` (relative to blobs/sha256/) as its digest; undefined for any other key. */
  #digestAt(rest: string): Digest | undefined {
    const m = /^([a-f0-9]{2})\/([a-f0-9]{64})$/.exec(rest);
    if (!m || !m[2].startsWith(m[1]) || !isDigest(`sha256:${m[2]}`)) return undefined;
    return `sha256:${m[2]}` as Digest;
  }
}

/** The object's version id where the bucket keeps versions, else its ETag (without quotes). */
function versionOf(o: { VersionId?: string; ETag?: string }): string {
  if (o.VersionId && o.VersionId !== 'null') return o.VersionId;
  return (o.ETag ?? '').replace(/^"|"$/g, '');
}

/** The spool's bytes as a stream, read through a reader of its own (the upload reads at its pace). */
function spoolStream(spool: SpoolFile): Readable {
  const size = spool.written;
  const reader = spool.reader();
  return Readable.from(
    (async function* () {
      try {
        for (let pos = 0; pos < size; ) {
          const buf = Buffer.allocUnsafe(Math.min(SPOOL_READ_CHUNK, size - pos));
          const n = await reader.read(buf, buf.length, pos);
          if (n === 0) throw new Error(`spool file ends at ${pos}, expected ${size} bytes`);
          pos += n;
          yield n === buf.length ? buf : buf.subarray(0, n);
        }
      } finally {
        await reader.close();
      }
    })(),
    { objectMode: false },
  );
}
