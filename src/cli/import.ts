// `regmirror import`: loads a bundle (an OCI image layout tar, as `regmirror export`
// writes it) into the cache, so an air-gapped mirror serves its images with no upstream.
//
// All or nothing. Every blob entry is hashed into a spool file as it streams past; nothing
// is committed until the whole tar was read, index.json parsed, every manifest reachable
// from it parsed, and every blob they reference found with the size they give it. Then
// the spools are committed and everything is recorded in one transaction: manifests
// and blobs, linked to each image's (upstream, repository) and pinned, and each tag pinned
// for every Accept class that takes the root's media type, so it never expires. Any
// failure discards the spools and leaves the store and the database as they were.
import { open } from 'node:fs/promises';
import { DigestMismatch, SizeMismatch } from '../errors.js';
import { DigestVerifier, parseDigest, type Digest } from '../oci/digest.js';
import { blobEntryName, INDEX_FILE, LAYOUT_FILE, LayoutError, MAX_LAYOUT_FILE_BYTES, parseLayoutFile, parseLayoutIndex, readImageLayout } from '../oci/image-layout.js';
import { accepts, ALL_TYPES, isIndexType, isNonDistributableType, MANIFEST_TYPES, MAX_MANIFEST_BYTES, parseManifest, type Descriptor, type ParsedManifest } from '../oci/manifest.js';
import { dockerHubName, formatImageReference, parseImageReference } from '../oci/reference.js';
import type { HeldBlob } from '../store/content-store.js';
import { crashPoint } from '../store/crash-point.js';
import type { ImportRecord } from '../store/metadata.js';
import type { SpoolFile } from '../store/spool.js';
import { loadConfig } from '../config.js';
import { ArgumentError, configPath, UsageError, type Values } from './args.js';
import { commandLogger, openCache, type CacheContext } from './context.js';
import { formatBytes } from '../bytes.js';

export interface ImportedImage {
  /** Full reference, e.g. `docker.io/library/alpine:3`. */
  name: string;
  upstream: string;
  repository: string;
  tag?: string;
  digest: string;
  mediaType: string;
}

export interface ImportSummary {
  images: ImportedImage[];
  /** Distinct blobs recorded, manifests included. */
  blobs: number;
  /** Their total size. */
  bytes: number;
  /** Of those, blobs the store already held (verified from the bundle, not written again). */
  present: number;
  /** Blob entries no image in index.json refers to: read, verified and dropped. */
  unreferenced: number;
}

type CacheWriter = Pick<CacheContext, 'store' | 'spool' | 'metadata' | 'upstreams'>;

/** A verified blob entry of the bundle. */
interface Received {
  size: number;
  /** Written to a spool file; absent when the store already had the blob. */
  spool?: SpoolFile;
  /**
   * Kept aside by the store from when it was found there (or committed from the spool),
   * so that eviction beside us cannot take the bytes before they are recorded and pinned.
   */
  held?: HeldBlob;
}

/**
 * Reads a bundle from `input` (a file, or stdin for `-`) and records its images. On any
 * problem it rejects with an `import: <entry>: …` message, changes nothing, and destroys `input`.
 *
 * Beside a running server: every blob is held by the store (its spool kept, or the stored
 * copy kept aside) until it is recorded and pinned, and once the rows are committed each
 * is checked and put back if another process (gc, the evictor) removed it meanwhile.
 */
export async function importBundle(ctx: CacheWriter, input: NodeJS.ReadableStream): Promise<ImportSummary> {
  const received = new Map<Digest, Received>();
  const published = new Set<Digest>();
  let committed = false;
  try {
    const files = await receive(ctx, input, received);
    const plan = await check(ctx, files, received);
    const versions = await commitAll(ctx, plan, received, published);
    crashPoint('import:before-commit');
    await ctx.metadata.recordImport(importRecord(plan, versions));
    committed = true;
    await recheck(ctx, plan, received, versions);
    let bytes = 0;
    for (const size of plan.blobs.values()) bytes += size;
    const present = [...plan.blobs.keys()].filter((d) => !published.has(d)).length;
    return {
      images: plan.images.map(({ digests: _, ...img }) => img),
      blobs: plan.blobs.size,
      bytes,
      present,
      unreferenced: [...received.keys()].filter((d) => !plan.blobs.has(d)).length,
    };
  } catch (err) {
    // Not read any further (a file is closed), as stream.pipeline would.
    (input as NodeJS.ReadableStream & { destroy?: () => void }).destroy?.();
    if (!committed) {
      // Blobs this run committed that no row names (none can, the transaction did not
      // commit, unless another process recorded the same blob meanwhile) go again.
      // A database that cannot say keeps the file: gc sweeps it later if no row names it.
      for (const d of published) if (!(await Promise.resolve(ctx.metadata.getBlob(d)).catch(() => true))) await ctx.store.remove(d).catch(() => {});
    }
    throw new Error(`import: ${(err as Error).message}`, { cause: err });
  } finally {
    await Promise.all([...received.values()].map(async (r) => {
      await r.held?.release();
      await r.spool?.discard();
    }));
  }
}

/** Commits every planned blob (spools committed and held; held ones put back if gone); their versions. */
async function commitAll(ctx: CacheWriter, plan: Plan, received: Map<Digest, Received>, published: Set<Digest>): Promise<Map<Digest, string>> {
  const versions = new Map<Digest, string>();
  for (const [digest, r] of received) {
    if (!plan.blobs.has(digest)) continue;
    if (r.spool) {
      const { version, held } = await ctx.store.commitAndHold(r.spool);
      r.held = held;
      versions.set(digest, version);
      published.add(digest);
    } else if (r.held) versions.set(digest, (await r.held.restore()).version);
  }
  return versions;
}

/** The rows: manifests and blobs linked and pinned, tags pinned for every Accept class that takes the root. */
function importRecord(plan: Plan, versions: Map<Digest, string>): ImportRecord {
  const out: ImportRecord = { blobs: [], tags: [] };
  for (const img of plan.images) {
    const link = { upstream: img.upstream, repository: img.repository };
    for (const d of img.digests) {
      const manifest = plan.manifests.get(d);
      const version = versions.get(d);
      out.blobs.push({ digest: d, size: manifest?.size ?? plan.blobs.get(d)!, link, ...(manifest ? { mediaType: manifest.mediaType } : {}), ...(version === undefined ? {} : { version }) });
    }
    if (img.tag === undefined) continue;
    for (let mask = 1; mask <= ALL_TYPES; mask++) {
      if (accepts(mask, img.mediaType)) out.tags.push({ key: { ...link, tag: img.tag, accept: mask }, digest: img.digest, mediaType: img.mediaType });
    }
  }
  return out;
}

/**
 * After the commit every blob is pinned, so nothing removes it any more; but gc or the
 * evictor may have removed one between its store commit and the row commit, or a download
 * may have replaced it (another version). Put back what is gone and record the version.
 */
async function recheck(ctx: CacheWriter, plan: Plan, received: Map<Digest, Received>, versions: Map<Digest, string>): Promise<void> {
  const changed = new Map<Digest, string>();
  for (const [digest, r] of received) {
    if (!r.held || !plan.blobs.has(digest)) continue;
    const { version } = await r.held.restore();
    if (version !== versions.get(digest)) changed.set(digest, version);
  }
  if (changed.size === 0) return;
  for (const [d, version] of changed) await ctx.metadata.recordBlob(d, plan.blobs.get(d)!, undefined, version);
}

/** Reads the whole tar: blobs into spool files (verified), oci-layout and index.json into memory. */
async function receive(ctx: CacheWriter, input: NodeJS.ReadableStream, received: Map<Digest, Received>): Promise<{ index: Buffer }> {
  let layout: Buffer | undefined;
  let index: Buffer | undefined;
  for await (const entry of readImageLayout(input)) {
    if (entry.kind === 'oci-layout' || entry.kind === 'index') {
      if (entry.size > MAX_LAYOUT_FILE_BYTES) throw new LayoutError(entry.name, `is ${entry.size} bytes, more than the ${MAX_LAYOUT_FILE_BYTES} allowed`);
      const chunks: Buffer[] = [];
      for await (const chunk of entry.body) chunks.push(chunk);
      if (entry.kind === 'index') index = Buffer.concat(chunks);
      else layout = Buffer.concat(chunks);
      continue;
    }
    if (entry.kind !== 'blob') continue; // other files (a docker-save manifest.json, …) are not ours to read
    const digest = entry.digest!;
    // A blob the store (or this bundle) already has is verified, not written again.
    const held = received.has(digest) ? undefined : await ctx.store.hold(digest, entry.size);
    if (held) received.set(digest, { size: entry.size, held });
    const spool = received.has(digest) ? undefined : await ctx.spool.create(digest, entry.size);
    if (spool) received.set(digest, { size: entry.size, spool });
    const verifier = spool ? undefined : new DigestVerifier(digest, entry.size);
    for await (const chunk of entry.body) {
      if (spool) await spool.write(chunk);
      else verifier!.update(chunk);
    }
    try {
      await (spool ? spool.verify() : verifier!.verify());
    } catch (err) {
      if (err instanceof DigestMismatch) throw new LayoutError(entry.name, 'content does not match its digest');
      if (err instanceof SizeMismatch) throw new LayoutError(entry.name, err.message);
      throw err;
    }
    if (spool) await spool.syncAndClose();
  }
  if (!layout) throw new LayoutError(LAYOUT_FILE, 'missing from the bundle');
  parseLayoutFile(layout);
  if (!index) throw new LayoutError(INDEX_FILE, 'missing from the bundle');
  return { index };
}

interface Plan {
  images: Array<ImportedImage & { digests: Set<Digest> }>;
  manifests: Map<Digest, { mediaType: string; size: number }>;
  /** Every blob to record (manifests included) and its size. */
  blobs: Map<Digest, number>;
}

/** Walks index.json: every root and every manifest present under it parsed, every blob found. */
async function check(ctx: CacheWriter, files: { index: Buffer }, received: Map<Digest, Received>): Promise<Plan> {
  const checker = new Checker(ctx, received);
  const roots = parseLayoutIndex(files.index);
  for (const [i, root] of roots.entries()) {
    const where = `manifests[${i}]`;
    if (root.name === undefined) throw new LayoutError(INDEX_FILE, `${where} names no image (no io.containerd.image.name or org.opencontainers.image.ref.name annotation)`);
    let ref;
    try {
      ref = parseImageReference(root.name);
    } catch (err) {
      throw new LayoutError(INDEX_FILE, `${where}: ${(err as Error).message}`);
    }
    const upstream = ctx.upstreams.lookup(ref.registry);
    if (!upstream) throw new LayoutError(INDEX_FILE, `${root.name}: registry ${ref.registry} is not configured on this mirror`);
    const digest = parseDigest(root.descriptor.digest);
    if (ref.digest !== undefined && ref.digest !== digest) throw new LayoutError(INDEX_FILE, `${root.name} names a digest other than its descriptor's ${digest}`);
    if (!(MANIFEST_TYPES as readonly string[]).includes(root.descriptor.mediaType)) {
      throw new LayoutError(INDEX_FILE, `${where}: unsupported media type ${JSON.stringify(root.descriptor.mediaType)}`);
    }
    const repository = upstream.name === 'docker.io' ? dockerHubName(ref.repository) : ref.repository;
    const name = formatImageReference({ ...ref, registry: upstream.name, repository });
    const digests = new Set<Digest>();
    const mediaType = await checker.manifest(root.descriptor, name, digests);
    checker.plan.images.push({
      name,
      upstream: upstream.name,
      repository,
      ...(ref.tag !== undefined ? { tag: ref.tag } : {}),
      digest,
      mediaType,
      digests,
    });
  }
  return checker.plan;
}

class Checker {
  readonly plan: Plan = { images: [], manifests: new Map(), blobs: new Map() };
  readonly #parsed = new Map<Digest, ParsedManifest>();

  constructor(
    readonly ctx: CacheWriter,
    readonly received: Map<Digest, Received>,
  ) {}

  /** Checks a manifest and everything it references; adds their digests to `digests`; returns its media type. */
  async manifest(desc: Descriptor, image: string, digests: Set<Digest>): Promise<string> {
    const digest = parseDigest(desc.digest);
    const entry = blobEntryName(digest);
    const r = this.received.get(digest);
    if (!r) throw new LayoutError(entry, `missing from the bundle (manifest of ${image})`);
    if (r.size !== desc.size) throw new LayoutError(entry, `is ${r.size} bytes, its descriptor in ${image} says ${desc.size}`);
    if (r.size > MAX_MANIFEST_BYTES) throw new LayoutError(entry, `is a manifest of ${r.size} bytes, over the ${MAX_MANIFEST_BYTES} allowed`);
    digests.add(digest);
    let parsed = this.#parsed.get(digest);
    if (!parsed) {
      const kept = r.spool ?? r.held;
      const bytes = kept ? await kept.read() : await this.ctx.store.read(digest);
      try {
        parsed = parseManifest(bytes, desc.mediaType);
      } catch (err) {
        throw new LayoutError(entry, (err as Error).message);
      }
      if (parsed.mediaType !== desc.mediaType) throw new LayoutError(entry, `is a ${parsed.mediaType}, its descriptor in ${image} says ${desc.mediaType}`);
      this.#parsed.set(digest, parsed);
      this.plan.manifests.set(digest, { mediaType: parsed.mediaType, size: r.size });
      this.plan.blobs.set(digest, r.size);
    }
    if (isIndexType(parsed.mediaType)) {
      // The index is kept whole; the platforms left out of the bundle are simply not served.
      const present = parsed.manifests.filter((child) => this.received.has(digestIn(child, entry)));
      if (present.length === 0 && parsed.manifests.length > 0) throw new LayoutError(entry, `none of the index's manifests is in the bundle (${image})`);
      for (const child of present) await this.manifest(child, image, digests);
    } else {
      for (const blob of parsed.blobs) this.blob(blob, digest, image, digests);
    }
    return parsed.mediaType;
  }

  blob(desc: Descriptor, manifest: Digest, image: string, digests: Set<Digest>): void {
    const d = digestIn(desc, blobEntryName(manifest));
    const r = this.received.get(d);
    if (!r) {
      // Windows base layers are fetched from their own URLs; no registry serves them.
      if (isNonDistributableType(desc.mediaType)) return;
      throw new LayoutError(blobEntryName(d), `missing from the bundle (${desc.mediaType} of ${image})`);
    }
    if (r.size !== desc.size) throw new LayoutError(blobEntryName(d), `is ${r.size} bytes, manifest ${manifest} says ${desc.size}`);
    digests.add(d);
    this.plan.blobs.set(d, r.size);
  }
}

/** A descriptor's digest; one that is no sha256 digest is a problem of the manifest (`entry`) naming it. */
function digestIn(desc: Descriptor, entry: string): Digest {
  try {
    return parseDigest(desc.digest);
  } catch (err) {
    throw new LayoutError(entry, (err as Error).message);
  }
}

/**
 * The imported images that no valid signature covers under this mirror's own policies,
 * checked again from what was just imported. They are imported all the same (flagged, not
 * refused): the bundle may hold unsigned images on purpose, and the serving path refuses
 * them under `enforce` whatever the import said.
 */
async function unsignedImages(ctx: CacheContext, images: ImportedImage[]): Promise<Array<{ name: string; reason: string }>> {
  const guard = ctx.signatures;
  if (!guard) return [];
  const out: Array<{ name: string; reason: string }> = [];
  for (const img of images) {
    const upstream = ctx.upstreams.lookup(img.upstream);
    if (!upstream) continue;
    const verdict = await guard.verdictFor({ upstream, repository: img.repository }, parseDigest(img.digest));
    if (verdict && !verdict.ok) out.push({ name: img.name, reason: `${verdict.reason}${verdict.detail ? ` (${verdict.detail})` : ''}` });
  }
  return out;
}

/** `regmirror import`. */
export async function importCommand(values: Values, args: string[]): Promise<number> {
  if (args.length !== 1) throw new ArgumentError('regmirror import: name one bundle file (or - for standard input)');
  const input =
    args[0] === '-'
      ? process.stdin
      : (
          await open(args[0]).catch((err: NodeJS.ErrnoException) => {
            throw new UsageError(`regmirror import: cannot read ${args[0]}: ${err.code ?? err.message}`);
          })
        ).createReadStream();
  const config = loadConfig(configPath(values));
  const ctx = await openCache(config, { log: commandLogger(config) });
  try {
    const summary = await importBundle(ctx, input).catch((err: Error) => {
      throw new UsageError(err.message.startsWith('import:') ? `regmirror ${err.message}` : `regmirror import: ${err.message}`);
    });
    const unverified = await unsignedImages(ctx, summary.images);
    if (values.json) {
      console.log(JSON.stringify({ ...summary, unverified }, null, 2));
      return 0;
    }
    console.log(`imported ${summary.images.length} image(s), ${summary.blobs} blobs, ${formatBytes(summary.bytes)} (${summary.present} already cached); tags pinned:`);
    for (const i of summary.images) console.log(`  ${i.name} ${i.digest}`);
    for (const u of unverified) process.stderr.write(`regmirror import: warning: ${u.name}: ${u.reason}; a signature policy in enforce mode refuses it\n`);
    return 0;
  } finally {
    await ctx.close();
  }
}
