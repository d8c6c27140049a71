// Managing what the cache holds: `cache ls/rm/pin/unpin`, `gc` (make the store and the
// database agree) and `verify` (re-hash every blob). They work on the data dir directly,
// safely beside a running server (SQLite WAL, atomic file operations).
import { createHash } from 'node:crypto';
import pLimit from 'p-limit';
import { parseDigest, type Digest } from '../oci/digest.js';
import { isIndexType, isNonDistributableType, parseManifest } from '../oci/manifest.js';
import { READ_CHUNK } from '../store/body-source.js';
import { formatImageReference, parseImageReference } from '../oci/reference.js';
import type { TagEntry } from '../store/metadata.js';
import type { CacheContext } from './context.js';

type Ctx = Pick<CacheContext, 'store' | 'metadata' | 'upstreams' | 'now'> & Partial<Pick<CacheContext, 'events'>>;

export interface CachedImage {
  image: string;
  upstream: string;
  repository: string;
  tag: string;
  digest: string;
  /** Bytes of the image's manifests and blobs that are in the store. */
  size: number;
  pinned: boolean;
  /** The store lacks part of what serving it needs (evicted since): the next pull fetches it again. */
  incomplete: boolean;
  /** When the image's root manifest was last served (ISO time). */
  lastPulled: string;
  hits: number;
}

/** Every digest of an image that the store holds: the root, cached children, their blobs. */
export async function imageDigests(ctx: Ctx, root: string): Promise<Set<string>> {
  return (await walkImage(ctx, root)).found;
}

/**
 * The image's digests the store holds, and how many it would need to serve the image but
 * lacks (evicted since): the root, a layer or config of a cached manifest, or every
 * platform of an index. Platforms never pulled are no loss: a mirror caches what is pulled.
 */
async function walkImage(ctx: Ctx, root: string): Promise<{ found: Set<string>; missing: number }> {
  const found = new Set<string>();
  let missing = 0;
  const visit = async (digest: string): Promise<boolean> => {
    if (found.has(digest)) return true;
    if (!(await ctx.metadata.getBlob(digest))) return false;
    found.add(digest);
    if (!(await ctx.metadata.getManifest(digest))) return true;
    const m = parseManifest(await ctx.store.read(parseDigest(digest)));
    let children = 0;
    for (const d of m.manifests) if (await visit(d.digest)) children++;
    if (m.manifests.length > 0 && children === 0) missing += m.manifests.length;
    for (const d of m.blobs) if (!(await visit(d.digest)) && !isNonDistributableType(d.mediaType)) missing++;
    return true;
  };
  if (!(await visit(root))) missing++;
  return { found, missing };
}

/** One entry per tag (its Accept-class rows folded together). */
async function tags(ctx: Ctx): Promise<TagEntry[]> {
  const seen = new Map<string, TagEntry>();
  for (const t of await ctx.metadata.listTags()) {
    const key = `${t.upstream}\n${t.repository}\n${t.tag}`;
    const prev = seen.get(key);
    // Prefer the index row: it names every platform.
    if (!prev || (isIndexType(t.mediaType) && !isIndexType(prev.mediaType))) seen.set(key, t);
  }
  return [...seen.values()];
}

export async function listImages(ctx: Ctx): Promise<CachedImage[]> {
  const out: CachedImage[] = [];
  for (const t of await tags(ctx)) {
    const { found: digests, missing } = await walkImage(ctx, t.digest);
    let size = 0;
    for (const d of digests) size += (await ctx.metadata.getBlob(d))?.size ?? 0;
    const stats = await ctx.metadata.blobStats(t.digest);
    out.push({
      image: `${t.upstream}/${t.repository}:${t.tag}`,
      upstream: t.upstream,
      repository: t.repository,
      tag: t.tag,
      digest: t.digest,
      size,
      pinned: t.pinned,
      incomplete: missing > 0,
      lastPulled: stats ? new Date(stats.lastAccess).toISOString() : '-',
      hits: stats?.hits ?? 0,
    });
  }
  return out.sort((a, b) => a.image.localeCompare(b.image));
}

export type Selector = { image: string } | { repository: string } | { olderThanMs: number };

function select(ctx: Ctx, images: CachedImage[], sel: Selector): CachedImage[] {
  if ('image' in sel) {
    const ref = parseImageReference(sel.image);
    const upstream = ctx.upstreams.lookup(ref.registry)?.name ?? ref.registry;
    const hit = images.filter((i) => i.upstream === upstream && i.repository === ref.repository && (ref.tag === undefined || i.tag === ref.tag) && (ref.digest === undefined || i.digest === ref.digest));
    if (hit.length === 0) throw new Error(`${formatImageReference(ref)} is not in the cache`);
    return hit;
  }
  if ('repository' in sel) {
    const ref = parseImageReference(sel.repository);
    const upstream = ctx.upstreams.lookup(ref.registry)?.name ?? ref.registry;
    return images.filter((i) => i.upstream === upstream && i.repository === ref.repository);
  }
  const cutoff = ctx.now() - sel.olderThanMs;
  return images.filter((i) => i.lastPulled === '-' || Date.parse(i.lastPulled) < cutoff);
}

/** Pins or unpins whole images: the tag (it never expires) and every manifest and blob (never evicted). */
export async function setPinned(ctx: Ctx, image: string, pinned: boolean): Promise<CachedImage[]> {
  const chosen = select(ctx, await listImages(ctx), { image });
  for (const img of chosen) await ctx.metadata.setTagPinned(img.upstream, img.repository, img.tag, pinned);
  await repin(ctx);
  // As they now are: the listing was taken before the change.
  return chosen.map((img) => ({ ...img, pinned }));
}

/** Blob pins follow tag pins: a blob is pinned while any pinned image holds it. */
async function repin(ctx: Ctx): Promise<void> {
  const keep = new Set<string>();
  for (const t of (await tags(ctx)).filter((x) => x.pinned)) for (const d of await imageDigests(ctx, t.digest)) keep.add(d);
  // Found outside the transaction: beside a running server, the write lock is held only
  // for the changes, never for a walk of every row.
  const pin: string[] = [];
  const unpin: string[] = [];
  for await (const page of ctx.metadata.blobRows()) {
    for (const b of page) {
      if (keep.has(b.digest) && !b.pinned) pin.push(b.digest);
      if (!keep.has(b.digest) && b.pinned) unpin.push(b.digest);
    }
  }
  if (pin.length + unpin.length === 0) return;
  await ctx.metadata.setBlobPins(pin, unpin);
}

/**
 * Removes images: their tags, and every manifest and blob no remaining image holds. A pinned
 * image was kept on purpose (often imported for an air-gapped site), so it goes only with force.
 */
export async function removeImages(ctx: Ctx, sel: Selector, force = false): Promise<{ images: CachedImage[]; blobs: number; bytes: number }> {
  const all = await listImages(ctx);
  const chosen = select(ctx, all, sel);
  const pinned = chosen.filter((i) => i.pinned).map((i) => i.image);
  if (pinned.length && !force) {
    for (const i of chosen.filter((c) => c.pinned)) ctx.events?.record({ kind: 'pinned_eviction_refused', upstream: i.upstream, repository: i.repository, tag: i.tag, digest: i.digest, message: `cache rm refused to remove ${i.image}: it is pinned (unpin it, or pass --force)` });
    throw new Error(`${pinned.join(', ')} ${pinned.length === 1 ? 'is' : 'are'} pinned: unpin first, or pass --force`);
  }
  const chosenKeys = new Set(chosen.map((i) => i.image));
  const keep = new Set<string>();
  for (const img of all.filter((i) => !chosenKeys.has(i.image))) for (const d of await imageDigests(ctx, img.digest)) keep.add(d);
  const drop = new Map<string, number>();
  for (const img of chosen) {
    for (const d of await imageDigests(ctx, img.digest)) if (!keep.has(d)) drop.set(d, (await ctx.metadata.getBlob(d))?.size ?? 0);
  }
  await ctx.metadata.removeImages(chosen, [...drop.keys()]);
  for (const d of drop.keys()) await ctx.store.remove(d as Digest);
  await repin(ctx);
  return { images: chosen, blobs: drop.size, bytes: [...drop.values()].reduce((a, b) => a + b, 0) };
}

export interface GcReport {
  orphanFiles: number;
  /** Files with no row, left alone: published too recently (their publisher may be about to record them). */
  recentFiles: number;
  orphanFileBytes: number;
  missingFiles: number;
  links: number;
  manifests: number;
  tags: number;
  rollups: number;
}

const ROLLUP_DAYS = 30;

/** Expired leases are kept this long (a look at who held what after an incident), then gc forgets them. */
const LEASE_KEEP_MS = 3_600_000;

/** Files checked against the rows per query, and stats run at once: gc's memory stays flat, its waits overlap. */
const LIST_BATCH = 500;
const STAT_CONCURRENCY = 16;
/** Rows checked against the store per batch: by digest, so a batch falls in a few of the file store's directories. */
const ROW_PAGE = 4096;

/** Makes the store and the database agree; with dryRun, only counts. */
export async function gc(ctx: Ctx, dryRun: boolean): Promise<GcReport> {
  const report: GcReport = { orphanFiles: 0, recentFiles: 0, orphanFileBytes: 0, missingFiles: 0, links: 0, manifests: 0, tags: 0, rollups: 0 };
  const listed: Digest[] = [];
  for await (const d of ctx.store.list()) {
    listed.push(d);
    if (listed.length >= LIST_BATCH) await sweepOrphans(ctx, listed.splice(0), report, dryRun);
  }
  await sweepOrphans(ctx, listed, report, dryRun);
  const limit = pLimit(STAT_CONCURRENCY);
  for await (const page of ctx.metadata.blobRows(ROW_PAGE)) {
    const digests = page.map((b) => parseDigest(b.digest));
    const present = await ctx.store.present(digests);
    // A stat says for sure before a row goes (the batch answer is a listing read a moment ago).
    const absent = digests.filter((d) => !present.has(d));
    const missing = (await Promise.all(absent.map((d) => limit(async () => ((await ctx.store.stat(d)) ? undefined : d))))).filter((d) => d !== undefined);
    report.missingFiles += missing.length;
    if (!dryRun && missing.length > 0) await ctx.metadata.forgetBlobs(missing);
  }
  Object.assign(report, await ctx.metadata.reconcile(ctx.now() - ROLLUP_DAYS * 86_400_000, dryRun));
  // Leases of downloads and replicas that ended without releasing them (a kill -9): rows only, nobody waits on them.
  if (!dryRun) await ctx.metadata.leases.prune(LEASE_KEEP_MS);
  return report;
}

/** Removes the listed files that no row names (unless just committed: their row may be on its way). */
async function sweepOrphans(ctx: Ctx, listed: Digest[], report: GcReport, dryRun: boolean): Promise<void> {
  if (listed.length === 0) return;
  const known = new Set(await ctx.metadata.knownBlobs(listed));
  for (const d of listed) {
    if (known.has(d)) continue;
    if (await ctx.store.recentlyCommitted(d, ctx.now())) {
      report.recentFiles++;
      continue;
    }
    const st = await ctx.store.stat(d);
    report.orphanFiles++;
    report.orphanFileBytes += st?.size ?? 0;
    if (!dryRun) await ctx.store.remove(d);
  }
}

export interface VerifyReport {
  checked: number;
  bytes: number;
  bad: Array<{ digest: string; problem: string }>;
  repaired: number;
}

/** Re-hashes every stored blob; with repair, removes the bad ones so the next pull fetches them again. */
export async function verify(ctx: Ctx, opts: { repair: boolean; concurrency?: number; onProgress?: (done: number, total: number, bytes: number) => void }): Promise<VerifyReport> {
  const report: VerifyReport = { checked: 0, bytes: 0, bad: [], repaired: 0 };
  const total = (await ctx.metadata.storeSize()).blobs;
  const limit = pLimit(opts.concurrency ?? 4);
  for await (const page of ctx.metadata.blobRows()) await verifyPage(ctx, page, limit, opts, report, total);
  return report;
}

async function verifyPage(ctx: Ctx, page: Array<{ digest: string; size: number }>, limit: ReturnType<typeof pLimit>, opts: { repair: boolean; onProgress?: (done: number, total: number, bytes: number) => void }, report: VerifyReport, total: number): Promise<void> {
  await Promise.all(
    page.map((b) =>
      limit(async () => {
        const digest = parseDigest(b.digest);
        const problem = await check(ctx, digest, b.size);
        report.checked++;
        report.bytes += b.size;
        if (problem) {
          report.bad.push({ digest, problem });
          if (opts.repair) {
            await ctx.metadata.forgetBlobs([digest]);
            await ctx.store.remove(digest);
            report.repaired++;
          }
        }
        // A row added since the count was taken: the total grows with it, never below what was done.
        opts.onProgress?.(report.checked, Math.max(total, report.checked), report.bytes);
      }),
    ),
  );
}

async function check(ctx: Ctx, digest: Digest, size: number): Promise<string | undefined> {
  const st = await ctx.store.stat(digest);
  if (!st) return 'file missing';
  if (st.size !== size) return `size ${st.size}, recorded ${size}`;
  const hash = createHash('sha256');
  const source = ctx.store.source(digest, st.size);
  // One buffer for the whole blob: verify reads the entire store.
  const buf = Buffer.allocUnsafe(Math.min(READ_CHUNK, Math.max(st.size, 1)));
  try {
    for (let n; (n = await source.readInto(buf)) > 0; ) hash.update(buf.subarray(0, n));
  } finally {
    await source.close();
  }
  const actual = `sha256:${hash.digest('hex')}`;
  return actual === digest ? undefined : `content hashes to ${actual}`;
}
