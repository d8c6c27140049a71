// `regmirror prewarm`: fills the cache ahead of a rollout through the same caches the
// server answers from. Each image's index, the chosen platforms' manifests, configs and
// layers are fetched; a blob shared by several images is fetched once; the upstream's
// rate-limit state is respected (the run waits, and says so, rather than spending the
// last pulls of the budget).
import { readFile } from 'node:fs/promises';
import pLimit, { type LimitFunction } from 'p-limit';
import { request } from '../upstream/undici-core.js';
import { parseAllDocuments } from 'yaml';
import type { Target } from '../cache/blobs.js';
import { AccessDenied, RegmirrorError, toOciError } from '../errors.js';
import { parseDigest, type Digest } from '../oci/digest.js';
import { ALL_TYPES, isIndexType, parseManifest, type Descriptor } from '../oci/manifest.js';
import { formatImageReference, parseImageReference, type ImageReference } from '../oci/reference.js';
import { loadConfig } from '../config.js';
import { ArgumentError, configPath, readStdin, serverOrigin, UsageError, type Values } from './args.js';
import { commandLogger, openCache, type CacheContext } from './context.js';
import { ProgressView, summaryTable } from './progress.js';

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

export interface PrewarmOptions {
  /** Platforms of an index to cache; 'all' takes every one. */
  platforms: Platform[] | 'all';
  /** Blob downloads at once, across all images. */
  concurrency: number;
  /** Also cache the referrers (signatures, SBOMs) of each image. */
  referrers?: boolean;
  /** Resolve and report from the cache only; fetch nothing. */
  dryRun?: boolean;
  /** How long to wait for an upstream's rate limit before giving up on an image. */
  maxWaitMs?: number;
  /** Bounds the images resolved at once (default IMAGES_AT_ONCE); a server shares one across requests. */
  imageLimit?: LimitFunction;
  onEvent?: (e: PrewarmEvent) => void;
  /** For tests: how waiting passes. */
  sleep?: (ms: number) => Promise<void>;
}

export interface PrewarmResult {
  image: string;
  upstream?: string;
  digest?: string;
  platforms: string[];
  blobs: number;
  /** Bytes of every blob of the image. */
  size: number;
  fetchedBlobs: number;
  fetchedBytes: number;
  ms: number;
  error?: string;
  /** Dry run: blobs not in the cache (unknown when the manifests are not cached either). */
  missing?: number;
  /** Under a signature policy: `verified`, or why no valid signature covers the image. */
  signature?: string;
}

export type PrewarmEvent =
  | { type: 'start'; image: string }
  | { type: 'progress'; image: string; bytesDone: number; bytesTotal: number; blobsDone: number; blobsTotal: number }
  | { type: 'wait'; image: string; upstream: string; seconds: number; reason: string }
  | { type: 'done'; result: PrewarmResult };

/** `linux/amd64,linux/arm64/v8` → platforms; `all` → 'all'. */
export function parsePlatforms(text: string): Platform[] | 'all' {
  if (text.trim() === 'all') return 'all';
  return text.split(',').map((p) => {
    const [os, architecture, variant] = p.trim().split('/');
    if (!os || !architecture) throw new Error(`--platform: ${JSON.stringify(p.trim())} is not os/arch[/variant]`);
    return { os, architecture, ...(variant ? { variant } : {}) };
  });
}

function platformMatches(want: Platform, have: Descriptor['platform']): boolean {
  if (!have) return false;
  return want.os === have.os && want.architecture === have.architecture && (want.variant === undefined || want.variant === have.variant);
}

export function platformName(p: Descriptor['platform']): string {
  return p ? `${p.os}/${p.architecture}${p.variant ? `/${p.variant}` : ''}` : 'unknown';
}

/**
 * Image references from a list file: one per line with `#` comments, or a Kubernetes
 * manifest / Helm-rendered YAML, from which every `image:` value is taken.
 */
export function imagesFromFile(text: string): string[] {
  if (/^\s*-?\s*image:\s*\S/m.test(text)) {
    const found = new Set<string>();
    for (const doc of parseAllDocuments(text)) collectImages(doc.toJS(), found);
    return [...found];
  }
  return text
    .split('\n')
    .map((l) => l.replace(/#.*$/, '').trim())
    .filter(Boolean);
}

function collectImages(node: unknown, found: Set<string>): void {
  if (Array.isArray(node)) for (const n of node) collectImages(n, found);
  else if (node && typeof node === 'object') {
    for (const [k, v] of Object.entries(node)) {
      if (k === 'image' && typeof v === 'string') found.add(v);
      else collectImages(v, found);
    }
  }
}

/** Images resolved at once by default: each holds its manifests in memory and asks the upstream for them. */
const IMAGES_AT_ONCE = 8;
/** Images one request may name. */
const MAX_IMAGES = 1000;

/** Prewarms every image; one image's failure does not stop the others. */
export async function prewarm(ctx: CacheContext, images: string[], opts: PrewarmOptions): Promise<PrewarmResult[]> {
  const limit = pLimit(opts.concurrency);
  const imageLimit = opts.imageLimit ?? pLimit(IMAGES_AT_ONCE);
  // Shared across images, so a layer common to several is fetched (or checked) once.
  const blobsSeen = new Map<Digest, Promise<'cached' | 'fetched'>>();
  return Promise.all(images.map((image) => imageLimit(() => prewarmOne(ctx, image, opts, limit, blobsSeen))));
}

async function prewarmOne(
  ctx: CacheContext,
  image: string,
  opts: PrewarmOptions,
  limit: ReturnType<typeof pLimit>,
  blobsSeen: Map<Digest, Promise<'cached' | 'fetched'>>,
): Promise<PrewarmResult> {
  const started = Date.now();
  const result: PrewarmResult = { image, platforms: [], blobs: 0, size: 0, fetchedBlobs: 0, fetchedBytes: 0, ms: 0 };
  try {
    const ref = parseImageReference(image);
    result.image = formatImageReference(ref);
    opts.onEvent?.({ type: 'start', image: result.image });
    const upstream = ctx.upstreams.lookup(ref.registry);
    if (!upstream) throw new Error(`registry ${ref.registry} is not configured on this mirror`);
    result.upstream = upstream.name;
    if (!ctx.upstreams.permits(upstream, ref.repository)) throw new AccessDenied(`repository ${ref.repository} of ${upstream.name} is not served by this mirror`);
    const target: Target = { upstream, repository: ref.repository };
    if (opts.dryRun) return await dryRun(ctx, target, ref, result);
    await waitForBudget(ctx, target, result.image, opts);
    const blobs = await manifestsOf(ctx, target, ref, opts, result);
    await fetchBlobs(ctx, target, blobs, opts, limit, blobsSeen, result);
  } catch (err) {
    result.error = describe(err);
  }
  result.ms = Date.now() - started;
  opts.onEvent?.({ type: 'done', result });
  return result;
}

/** What to ask for instead: the platforms the index has (attestations, platform unknown, aside). */
function noPlatformMatches(children: Descriptor[], wanted: Platform[]): string {
  const has = [...new Set(children.filter((d) => d.platform && d.platform.os !== 'unknown').map((d) => platformName(d.platform)))];
  return `no manifest in the index is for ${wanted.map((p) => platformName(p)).join(', ')}; it has ${has.join(', ') || 'no named platform'}`;
}

/** Caches the root manifest, the chosen children and (optionally) referrers; returns the blobs to fetch. */
async function manifestsOf(ctx: CacheContext, t: Target, ref: ImageReference, opts: PrewarmOptions, result: PrewarmResult): Promise<Descriptor[]> {
  const root = await ctx.manifests.get(t, ref.digest ? { digest: ref.digest } : { tag: ref.tag! }, ALL_TYPES, true);
  result.digest = root.digest;
  const parsed = parseManifest(root.bytes!, root.mediaType);
  const blobs: Descriptor[] = [...parsed.blobs];
  if (isIndexType(parsed.mediaType)) {
    const chosen = parsed.manifests.filter((d) => opts.platforms === 'all' || opts.platforms.some((p) => platformMatches(p, d.platform)));
    if (chosen.length === 0) throw new Error(noPlatformMatches(parsed.manifests, opts.platforms as Platform[]));
    for (const child of chosen) {
      const m = await ctx.manifests.get(t, { digest: parseDigest(child.digest) }, ALL_TYPES, true);
      blobs.push(...parseManifest(m.bytes!, m.mediaType).blobs);
      result.platforms.push(platformName(child.platform));
    }
  } else {
    result.platforms.push('single');
  }
  if (opts.referrers) blobs.push(...(await referrersOf(ctx, t, parseDigest(root.digest))));
  // Under a signature policy the image's signatures are cached with it (and so exported).
  const verdict = await ctx.signatures?.verdictFor(t, parseDigest(root.digest));
  if (verdict) result.signature = verdict.ok ? 'verified' : `${verdict.reason}${verdict.detail ? ` (${verdict.detail})` : ''}`;
  return blobs;
}

async function referrersOf(ctx: CacheContext, t: Target, digest: Digest): Promise<Descriptor[]> {
  const body = await ctx.manifests.referrers(t, digest, '').catch(() => undefined);
  if (!body) return [];
  const blobs: Descriptor[] = [];
  for (const d of parseManifest(body.bytes, body.contentType).manifests) {
    const m = await ctx.manifests.get(t, { digest: parseDigest(d.digest) }, ALL_TYPES, true);
    blobs.push(...parseManifest(m.bytes!, m.mediaType).blobs);
  }
  return blobs;
}

async function fetchBlobs(
  ctx: CacheContext,
  t: Target,
  descriptors: Descriptor[],
  opts: PrewarmOptions,
  limit: ReturnType<typeof pLimit>,
  blobsSeen: Map<Digest, Promise<'cached' | 'fetched'>>,
  result: PrewarmResult,
): Promise<void> {
  const unique = new Map(descriptors.map((d) => [parseDigest(d.digest), d.size]));
  result.blobs = unique.size;
  result.size = [...unique.values()].reduce((a, b) => a + b, 0);
  let done = 0;
  let doneBytes = 0;
  const report = () => {
    const inFlight = [...unique.keys()].reduce((n, d) => n + (ctx.blobs.progress(d) ?? 0), 0);
    opts.onEvent?.({ type: 'progress', image: result.image, bytesDone: Math.min(result.size, doneBytes + inFlight), bytesTotal: result.size, blobsDone: done, blobsTotal: unique.size });
  };
  const ticker = setInterval(report, 250);
  try {
    await Promise.all(
      [...unique].map(async ([digest, size]) => {
        // The first image to ask for a blob owns its fetch; the others just wait for it.
        let p = blobsSeen.get(digest);
        const owner = p === undefined;
        if (!p) {
          p = limit(() => ctx.blobs.ensure(t, digest).then((r) => r.result));
          blobsSeen.set(digest, p);
        }
        if ((await p) === 'fetched' && owner) {
          result.fetchedBlobs++;
          result.fetchedBytes += size;
        }
        done++;
        doneBytes += size;
      }),
    );
  } finally {
    clearInterval(ticker);
    report();
  }
}

/** Waits while the upstream is rate-limited or its pull budget is at the floor, up to maxWait. */
async function waitForBudget(ctx: CacheContext, t: Target, image: string, opts: PrewarmOptions): Promise<void> {
  const sleep = opts.sleep ?? ((ms: number) => new Promise((r) => setTimeout(r, ms)));
  const deadline = ctx.now() + (opts.maxWaitMs ?? 5 * 60_000);
  for (;;) {
    const state = t.upstream.state;
    const limitedFor = state.limitedUntil - ctx.now();
    const atFloor = !state.canRevalidate();
    if (limitedFor <= 0 && !atFloor) return;
    const reason = limitedFor > 0 ? 'rate-limited (429)' : `pull budget at its floor (${state.budget?.remaining ?? 0} left)`;
    if (ctx.now() >= deadline) throw new Error(`${t.upstream.name} is ${reason}; gave up waiting`);
    const waitMs = Math.min(Math.max(limitedFor, 5_000), deadline - ctx.now());
    opts.onEvent?.({ type: 'wait', image, upstream: t.upstream.name, seconds: Math.ceil(waitMs / 1000), reason });
    await sleep(waitMs);
  }
}

/** What a prewarm would fetch, from the database alone. */
async function dryRun(ctx: CacheContext, t: Target, ref: ImageReference, result: PrewarmResult): Promise<PrewarmResult> {
  const digest = ref.digest ?? (await ctx.metadata.getTag({ upstream: t.upstream.name, repository: t.repository, tag: ref.tag!, accept: ALL_TYPES }))?.digest;
  if (!digest || !(await ctx.metadata.getManifest(digest))) return { ...result, platforms: ['(not cached: manifests and blobs unknown)'] };
  result.digest = digest;
  const parsed = parseManifest(await ctx.store.read(parseDigest(digest)));
  const children = isIndexType(parsed.mediaType) ? parsed.manifests : [];
  if (children.length === 0) result.platforms.push('single');
  const blobs = [...parsed.blobs];
  for (const c of children) {
    result.platforms.push(platformName(c.platform));
    if (await ctx.metadata.getManifest(c.digest)) blobs.push(...parseManifest(await ctx.store.read(parseDigest(c.digest))).blobs);
  }
  result.blobs = blobs.length;
  result.size = blobs.reduce((n, b) => n + b.size, 0);
  let missing = 0;
  for (const b of blobs) if (!(await ctx.metadata.getBlob(b.digest))) missing++;
  result.missing = missing;
  return result;
}

/** One line naming the reason, for the summary and the exit status. */
function describe(err: unknown): string {
  if (!(err instanceof RegmirrorError)) return (err as Error).message;
  const oci = toOciError(err);
  return `${oci.code}: ${oci.message}`;
}

/** Options from the JSON body of POST /_regmirror/prewarm; throws naming the bad field. */
export function prewarmRequest(body: unknown): { images: string[]; options: PrewarmOptions } {
  const b = (body ?? {}) as { images?: unknown; platforms?: unknown; concurrency?: unknown; referrers?: unknown };
  if (!Array.isArray(b.images) || b.images.length === 0 || !b.images.every((i) => typeof i === 'string')) {
    throw new Error('images: a non-empty list of image references is required');
  }
  if (b.images.length > MAX_IMAGES) throw new Error(`images: at most ${MAX_IMAGES} per request (send several)`);
  if (b.platforms !== undefined && typeof b.platforms !== 'string') throw new Error('platforms: must be a string such as linux/amd64,linux/arm64 or all');
  if (b.concurrency !== undefined && (!Number.isInteger(b.concurrency) || (b.concurrency as number) < 1 || (b.concurrency as number) > 64)) {
    throw new Error('concurrency: must be a whole number from 1 to 64');
  }
  return {
    images: b.images as string[],
    options: {
      platforms: b.platforms === undefined ? 'all' : parsePlatforms(b.platforms as string),
      concurrency: (b.concurrency as number | undefined) ?? 4,
      referrers: b.referrers === true,
    },
  };
}

/** Asks a running regmirror to prewarm its own cache and relays the progress it streams back. */
export async function prewarmViaServer(
  server: string,
  images: string[],
  opts: { platforms?: string; concurrency?: number; referrers?: boolean; token?: string; onEvent?: (e: PrewarmEvent) => void },
): Promise<PrewarmResult[]> {
  const res = await request(new URL('/_regmirror/prewarm', server), {
    method: 'POST',
    headers: { 'content-type': 'application/json', ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}) },
    body: JSON.stringify({ images, platforms: opts.platforms, concurrency: opts.concurrency, referrers: opts.referrers }),
  });
  if (res.statusCode !== 200) {
    const text = await res.body.text();
    let reason = text.slice(0, 200);
    try {
      reason = (JSON.parse(text) as { error?: string }).error ?? reason;
    } catch {
      // not JSON: keep the text
    }
    throw new Error(`${server} refused the prewarm (${res.statusCode}): ${reason}`);
  }
  let buffered = '';
  let results: PrewarmResult[] | undefined;
  for await (const chunk of res.body) {
    buffered += (chunk as Buffer).toString('utf8');
    let nl: number;
    while ((nl = buffered.indexOf('\n')) >= 0) {
      const event = JSON.parse(buffered.slice(0, nl)) as PrewarmEvent | { type: 'summary'; results: PrewarmResult[] | { error: string } };
      buffered = buffered.slice(nl + 1);
      if (event.type === 'summary') {
        if (!Array.isArray(event.results)) throw new Error(`${server}: prewarm failed: ${event.results.error}`);
        results = event.results;
      } else opts.onEvent?.(event);
    }
  }
  if (!results) throw new Error(`${server} ended the prewarm stream without a summary`);
  return results;
}

/** `regmirror prewarm`: exit status 1 when any image failed. */
export async function prewarmCommand(values: Values, args: string[]): Promise<number> {
  const images = [...args];
  for (const file of values.file ?? []) {
    const text = file === '-' ? await readStdin() : await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      throw new UsageError(`regmirror prewarm: cannot read ${file}: ${err.code ?? err.message}`);
    });
    images.push(...imagesFromFile(text));
  }
  if (images.length === 0) throw new ArgumentError('regmirror prewarm: name at least one image, or a list with -f');
  const concurrency = values.concurrency === undefined ? 4 : Number(values.concurrency);
  if (!Number.isInteger(concurrency) || concurrency < 1 || concurrency > 64) throw new ArgumentError('regmirror prewarm: --concurrency must be a whole number from 1 to 64');
  let platforms: ReturnType<typeof parsePlatforms>;
  try {
    platforms = parsePlatforms(values.platform ?? 'all');
  } catch (err) {
    throw new ArgumentError(`regmirror prewarm: ${(err as Error).message}`);
  }
  const view = new ProgressView(process.stderr, process.stderr.isTTY === true && !values.json);
  const onEvent = (e: PrewarmEvent) => view.event(e);
  let results: PrewarmResult[];
  if (values.server !== undefined) {
    const server = serverOrigin(values.server, 'prewarm');
    if (values['dry-run']) throw new ArgumentError('regmirror prewarm: --dry-run reads the data dir; use it without --server');
    results = await prewarmViaServer(server, images, {
      platforms: values.platform,
      concurrency,
      referrers: values.referrers,
      token: process.env.REGMIRROR_ADMIN_TOKEN,
      onEvent,
    });
  } else {
    const config = loadConfig(configPath(values));
    const ctx = await openCache(config, { log: commandLogger(config) });
    try {
      results = await prewarm(ctx, images, { platforms, concurrency, referrers: values.referrers, dryRun: values['dry-run'], onEvent });
    } finally {
      await ctx.close();
    }
  }
  console.log(values.json ? JSON.stringify(results, null, 2) : summaryTable(results));
  return results.some((r) => r.error) ? 1 : 0;
}
