// `regmirror export`: writes cached images as one OCI image layout tar (a bundle) for an
// air-gapped mirror to import. Everything comes from the cache: no upstream is asked.
// Manifests are copied byte for byte (digests stay the same); with a platform filter an
// index is exported whole but only the chosen platforms' manifests and blobs go with it.
import { createWriteStream, type WriteStream } from 'node:fs';
import { rm } from 'node:fs/promises';
import { BlobGone } from '../errors.js';
import { digestHex, digestOf, DigestVerifier, parseDigest, type Digest } from '../oci/digest.js';
import { blobEntryName, ImageLayoutWriter, INDEX_FILE, LAYOUT_FILE, layoutFile, layoutIndex, type LayoutRoot } from '../oci/image-layout.js';
import { ALL_TYPES, isIndexType, isNonDistributableType, parseManifest, type Descriptor } from '../oci/manifest.js';
import { dockerHubName, formatImageReference, parseImageReference } from '../oci/reference.js';
import { READ_CHUNK, sourceToReadable } from '../store/body-source.js';
import type { TagEntry } from '../store/metadata.js';
import { loadConfig } from '../config.js';
import { ArgumentError, configPath, UsageError, type Values } from './args.js';
import { commandLogger, openCache, type CacheContext } from './context.js';
import { parsePlatforms, prewarm } from './prewarm.js';
import { ProgressView } from './progress.js';
import { formatBytes } from '../bytes.js';

export interface ExportOptions {
  /** Image references (`alpine:3`, `ghcr.io/org/app@sha256:…`), or 'all' for every tag in the database. */
  refs: string[] | 'all';
  /** `os/arch[/variant]` (a missing variant matches any); 'all' (the default) needs every platform of an index cached. */
  platforms?: string[] | 'all';
  /** Where the tar goes. Ended when the bundle is complete; destroyed if the export fails. */
  out: NodeJS.WritableStream;
  /**
   * With refs 'all', a tag that cannot be exported (its manifest or a blob evicted since
   * it was pulled) fails the export instead of being skipped.
   */
  strict?: boolean;
}

export interface ExportedImage {
  /** Full reference as index.json names it, e.g. `docker.io/library/alpine:3`. */
  name: string;
  digest: string;
  mediaType: string;
  /** Platforms whose manifests are in the bundle (`single` for an image that is no index). */
  platforms: string[];
}

export interface ExportSummary {
  images: ExportedImage[];
  /** Distinct blobs in the bundle, manifests included. */
  blobs: number;
  /** Their total size (the tar adds headers and padding). */
  bytes: number;
  /** Tags left out of an `--all` export, and why. */
  skipped: Array<{ name: string; reason: string }>;
}

type CacheReader = Pick<CacheContext, 'store' | 'metadata' | 'upstreams'>;

interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** What goes into the bundle, in order: manifests (bodies in memory) and blobs (streamed). */
interface Plan {
  roots: LayoutRoot[];
  images: ExportedImage[];
  entries: Map<Digest, { size: number; bytes?: Buffer }>;
  skipped: Array<{ name: string; reason: string }>;
}

/** The tags signature artifacts are kept under: cosign's `.sig`, the referrers tag schema's bare digest. */
const SIGNATURE_TAG = /^sha256-[a-f0-9]{64}(\.sig)?$/;

/** Docker attaches build attestations to an index; clients never pull them, so they may be absent. */
const ATTESTATION = 'attestation-manifest';

/** Exports the images from the cache into `opts.out` as an OCI image layout tar. */
export async function exportImages(ctx: CacheReader, opts: ExportOptions): Promise<ExportSummary> {
  let plan: Plan;
  try {
    plan = await makePlan(ctx, opts);
  } catch (err) {
    // Nothing was written; `out` is closed all the same, as the options promise.
    (opts.out as NodeJS.WritableStream & { destroy?: () => void }).destroy?.();
    throw err;
  }
  const writer = new ImageLayoutWriter(opts.out);
  try {
    await writer.writeFile(LAYOUT_FILE, layoutFile());
    await writer.writeFile(INDEX_FILE, layoutIndex(plan.roots));
    let bytes = 0;
    for (const [digest, e] of plan.entries) {
      bytes += e.size;
      if (e.bytes) await writer.writeFile(blobEntryName(digest), e.bytes);
      else await writer.writeBlob(digest, e.size, verified(ctx, digest, e.size));
    }
    await writer.finish();
    return { images: plan.images, blobs: plan.entries.size, bytes, skipped: plan.skipped };
  } catch (err) {
    writer.abort(err as Error);
    throw err;
  }
}

/**
 * Finds every manifest and blob of the images before the first byte is written. With
 * --all, the cache is whatever a running server left of it: a tag that cannot be exported
 * is skipped (unless strict), and only a bundle with no image at all is an error.
 */
async function makePlan(ctx: CacheReader, opts: ExportOptions): Promise<Plan> {
  const platforms = opts.platforms === undefined || opts.platforms === 'all' ? 'all' : opts.platforms.map(parsePlatform);
  const plan: Plan = { roots: [], images: [], entries: new Map(), skipped: [] };
  const skipping = opts.refs === 'all' && !opts.strict;
  const targets: Target[] = [];
  if (opts.refs === 'all') targets.push(...(await allTags(ctx)));
  else for (const text of opts.refs) targets.push(await resolveRef(ctx, text));
  if (targets.length === 0) throw new Error(opts.refs === 'all' ? 'export: the cache holds no tags' : 'export: no image references given');
  const seen = new Set<string>();
  // The loop also meets the signature artifacts kept beside each image, appended as found.
  for (let i = 0; i < targets.length; i++) {
    const t = targets[i];
    if (seen.has(t.name)) continue;
    seen.add(t.name);
    const undo = checkpoint(plan);
    try {
      const before = new Set(plan.entries.keys());
      await planImage(ctx, plan, t, t.signatures ? 'all' : platforms);
      if (!t.signatures) targets.push(...(await signaturesOf(ctx, t, [...plan.entries].filter(([d, e]) => e.bytes && !before.has(d)).map(([d]) => d))));
    } catch (err) {
      const message = (err as Error).message;
      if (!skipping) throw message.startsWith('export: ') ? err : new Error(`export: ${t.name}: ${message}`, { cause: err });
      undo();
      plan.skipped.push({ name: t.name, reason: message.replace(/^export: /, '').replace(`${t.name}: `, '') });
    }
  }
  if (plan.images.length === 0) {
    throw new Error(`export: no tag in the cache could be exported: ${plan.skipped.map((s) => `${s.name} (${s.reason})`).join('; ')}; ${fetchHint(plan.skipped)}`);
  }
  return plan;
}

/** What brings skipped images back: `--fetch` pulls what the cache lost before exporting. */
function fetchHint(skipped: Array<{ name: string }>): string {
  return `to fetch what is missing and export them: regmirror export --fetch -o FILE ${skipped.map((s) => s.name).join(' ')}`;
}

/** Undoes what planning one image added, leaving the entries other images share. */
function checkpoint(plan: Plan): () => void {
  const roots = plan.roots.length;
  const images = plan.images.length;
  const entries = new Set(plan.entries.keys());
  return () => {
    plan.roots.length = roots;
    plan.images.length = images;
    for (const d of plan.entries.keys()) if (!entries.has(d)) plan.entries.delete(d);
  };
}

/** `linux/arm64/v8` → a platform; throws on anything else. */
export function parsePlatform(text: string): Platform {
  const parts = text.trim().split('/');
  const [os, architecture, variant] = parts;
  if (parts.length > 3 || !os || !architecture || (parts.length === 3 && !variant)) {
    throw new Error(`export: platform ${JSON.stringify(text)} is not os/arch[/variant]`);
  }
  return { os, architecture, ...(variant ? { variant } : {}) };
}

interface Target {
  /** Full reference written to index.json. */
  name: string;
  upstream: string;
  repository: string;
  digest: Digest;
  /** The signatures of another image: cosign's `.sig` tag, or the referrers kept under `sha256-<hex>`. */
  signatures?: true;
}

/**
 * The signature artifacts the cache keeps for an image's manifests (its root, and the
 * platform manifests just planned), as tagged roots of their own, so that an air-gapped
 * mirror with the same signature policy can verify what it serves.
 */
async function signaturesOf(ctx: CacheReader, t: Target, manifests: Digest[]): Promise<Target[]> {
  const out: Target[] = [];
  for (const d of new Set([t.digest, ...manifests])) {
    for (const tag of [`sha256-${digestHex(d)}.sig`, `sha256-${digestHex(d)}`]) {
      const row = pickTagRow(await ctx.metadata.tagRows(t.upstream, t.repository, tag));
      if (!row) continue;
      const name = formatImageReference({ registry: t.upstream, repository: t.repository, tag });
      out.push({ name, upstream: t.upstream, repository: t.repository, digest: parseDigest(row.digest), signatures: true });
    }
  }
  return out;
}

/** A user's reference → upstream, repository and root digest, from the database only. */
async function resolveRef(ctx: CacheReader, text: string): Promise<Target> {
  let ref;
  try {
    ref = parseImageReference(text);
  } catch (err) {
    throw new Error(`export: ${text}: ${(err as Error).message}`);
  }
  const upstream = ctx.upstreams.lookup(ref.registry);
  if (!upstream) throw new Error(`export: ${formatImageReference(ref)}: registry ${ref.registry} is not configured on this mirror`);
  const repository = upstream.name === 'docker.io' ? dockerHubName(ref.repository) : ref.repository;
  const name = formatImageReference({ ...ref, registry: upstream.name, repository });
  let digest = ref.digest;
  if (digest === undefined) {
    const row = pickTagRow(await ctx.metadata.tagRows(upstream.name, repository, ref.tag!));
    if (!row) throw new Error(`export: ${name}: not in the cache (pull or prewarm it first)`);
    digest = parseDigest(row.digest);
  }
  if (!(await ctx.metadata.isLinked(upstream.name, repository, digest))) {
    throw new Error(`export: ${name}: manifest ${digest} is not in the cache for ${upstream.name}/${repository}`);
  }
  return { name, upstream: upstream.name, repository, digest };
}

/**
 * Of a tag's rows (one per Accept class), the one a client accepting everything gets;
 * else an index (it covers the single manifests); else the most recently fetched.
 */
function pickTagRow(rows: TagEntry[]): TagEntry | undefined {
  return rows.find((r) => r.accept === ALL_TYPES) ?? rows.find((r) => isIndexType(r.mediaType)) ?? rows[0];
}

/** Every tag in the database, one root per (upstream, repository, tag). */
async function allTags(ctx: CacheReader): Promise<Target[]> {
  const byTag = new Map<string, TagEntry[]>();
  for (const row of await ctx.metadata.listTags()) {
    const key = `${row.upstream}\n${row.repository}\n${row.tag}`;
    const rows = byTag.get(key);
    if (rows) rows.push(row);
    else byTag.set(key, [row]);
  }
  return [...byTag.values()].map((rows) => {
    const row = pickTagRow([...rows].sort((a, b) => b.fetchedAt - a.fetchedAt))!;
    const name = formatImageReference({ registry: row.upstream, repository: row.repository, tag: row.tag });
    return { name, upstream: row.upstream, repository: row.repository, digest: parseDigest(row.digest), ...(SIGNATURE_TAG.test(row.tag) ? { signatures: true as const } : {}) };
  });
}

async function planImage(ctx: CacheReader, plan: Plan, t: Target, platforms: Platform[] | 'all'): Promise<void> {
  const root = await readManifest(ctx, t.name, t.digest);
  if (!root) throw new Error(`export: ${t.name}: manifest ${t.digest} is not in the cache`);
  const image: ExportedImage = { name: t.name, digest: t.digest, mediaType: root.mediaType, platforms: [] };
  plan.roots.push({ name: t.name, descriptor: { mediaType: root.mediaType, digest: t.digest, size: root.bytes.length } });
  plan.images.push(image);
  await planManifest(ctx, plan, image, t.digest, root, platforms);
  if (!isIndexType(root.mediaType)) image.platforms.push('single');
}

async function planManifest(
  ctx: CacheReader,
  plan: Plan,
  image: ExportedImage,
  digest: Digest,
  m: { mediaType: string; bytes: Buffer },
  platforms: Platform[] | 'all',
): Promise<void> {
  plan.entries.set(digest, { size: m.bytes.length, bytes: m.bytes });
  const parsed = parseManifest(m.bytes, m.mediaType);
  if (isIndexType(parsed.mediaType)) {
    let chosen = 0;
    for (const child of parsed.manifests) {
      if (platforms !== 'all' && !platforms.some((p) => platformMatches(p, child.platform))) continue;
      const childDigest = parseDigest(child.digest);
      const body = await readManifest(ctx, image.name, childDigest);
      if (!body) {
        if (child.annotations?.['vnd.docker.reference.type'] === ATTESTATION) continue;
        const hint = platforms === 'all' ? '; pull it, or export fewer platforms with --platform' : '';
        throw new Error(`export: ${image.name}: manifest ${childDigest} (${platformName(child.platform)}) is not in the cache${hint}`);
      }
      if (body.bytes.length !== child.size) throw new Error(`export: ${image.name}: manifest ${childDigest} is ${body.bytes.length} bytes, the index says ${child.size}`);
      chosen++;
      if (child.annotations?.['vnd.docker.reference.type'] !== ATTESTATION) image.platforms.push(platformName(child.platform));
      await planManifest(ctx, plan, image, childDigest, body, platforms);
    }
    if (chosen === 0 && platforms !== 'all') {
      throw new Error(`export: ${image.name}: no manifest in the index is for ${platforms.map(platformName).join(', ')}`);
    }
    return;
  }
  for (const blob of parsed.blobs) {
    const d = parseDigest(blob.digest);
    if (plan.entries.has(d)) continue;
    const stat = await ctx.store.stat(d);
    if (!stat) {
      if (isForeignLayer(blob)) continue;
      throw new Error(`export: ${image.name}: blob ${d} is not in the cache`);
    }
    if (stat.size !== blob.size) throw new Error(`export: ${image.name}: blob ${d} is ${stat.size} bytes in the cache, the manifest says ${blob.size}`);
    plan.entries.set(d, { size: blob.size });
  }
}

/** A manifest body from the store, checked against its digest; undefined when it is not cached. */
async function readManifest(ctx: CacheReader, image: string, digest: Digest): Promise<{ mediaType: string; bytes: Buffer } | undefined> {
  const row = await ctx.metadata.getManifest(digest);
  if (!row) return undefined;
  let bytes: Buffer;
  try {
    bytes = await ctx.store.read(digest);
  } catch (err) {
    if (err instanceof BlobGone) return undefined;
    throw err;
  }
  if (digestOf(bytes) !== digest) throw new Error(`export: ${image}: manifest ${digest} is damaged in the cache`);
  return { mediaType: row.mediaType, bytes };
}

/** The blob's bytes from the store, hashed on the way: a damaged file fails the export. */
async function* verified(ctx: CacheReader, digest: Digest, size: number): AsyncGenerator<Uint8Array> {
  const verifier = new DigestVerifier(digest, size);
  for await (const chunk of sourceToReadable(ctx.store.source(digest, size), READ_CHUNK)) {
    verifier.update(chunk as Buffer);
    yield chunk as Buffer;
  }
  try {
    verifier.verify();
  } catch (err) {
    throw new Error(`export: blob ${digest} is damaged in the cache: ${(err as Error).message}`);
  }
}

function platformMatches(want: Platform, have: Descriptor['platform']): boolean {
  if (!have) return false;
  return want.os === have.os && want.architecture === have.architecture && (want.variant === undefined || want.variant === have.variant);
}

function platformName(p: Descriptor['platform']): string {
  return p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : 'unknown';
}

/** Windows base layers are fetched from their own URLs and never cached; nor exported. */
function isForeignLayer(d: Descriptor): boolean {
  return isNonDistributableType(d.mediaType) && Array.isArray((d as { urls?: unknown }).urls);
}

/** `regmirror export`. */
export async function exportCommand(values: Values, refs: string[]): Promise<number> {
  if (!values.output) throw new ArgumentError('regmirror export: name the bundle with -o FILE (or -o - for standard output)');
  if (values.all === (refs.length > 0)) throw new ArgumentError('regmirror export: name images or give --all, not both or neither');
  const platforms = values.platform === undefined || values.platform === 'all' ? 'all' : values.platform.split(',').map((p) => p.trim());
  const config = loadConfig(configPath(values));
  const ctx = await openCache(config, { log: commandLogger(config) });
  try {
    if (values.fetch && refs.length > 0) {
      const view = new ProgressView(process.stderr, process.stderr.isTTY === true);
      const warmed = await prewarm(ctx, refs, { platforms: parsePlatforms(values.platform ?? 'all'), concurrency: 4, onEvent: (e) => view.event(e) });
      const failed = warmed.filter((r) => r.error);
      if (failed.length) throw new UsageError(`regmirror export: could not fetch ${failed.map((r) => `${r.image} (${r.error})`).join('; ')}`);
    }
    const toStdout = values.output === '-';
    const out = toStdout ? process.stdout : createWriteStream(values.output);
    const summary = await exportImages(ctx, { refs: values.all ? 'all' : refs, platforms, out, strict: values.strict === true }).catch(async (err: Error) => {
      if (!toStdout) await rm(values.output!, { force: true });
      throw new UsageError(`regmirror export: ${err.message}`);
    });
    if (!toStdout) await new Promise<void>((resolve) => (out as WriteStream).once('close', () => resolve()));
    for (const s of summary.skipped) process.stderr.write(`regmirror export: warning: skipped ${s.name}: ${s.reason}\n`);
    if (summary.skipped.length) process.stderr.write(`regmirror export: ${fetchHint(summary.skipped)}\n`);
    if (values.json) {
      // Standard output may be the bundle itself.
      (toStdout ? process.stderr : process.stdout).write(JSON.stringify(summary, null, 2) + '\n');
      return 0;
    }
    process.stderr.write(`exported ${summary.images.length} image(s), ${summary.blobs} blobs, ${formatBytes(summary.bytes)}\n`);
    for (const i of summary.images) process.stderr.write(`  ${i.name} ${i.digest.slice(0, 19)} ${i.platforms.join(',')}\n`);
    return 0;
  } finally {
    await ctx.close();
  }
}
