// `regmirror cache ls|rm|pin|unpin`, `regmirror gc` and `regmirror verify`: the operator's
// view of what the cache holds. They open the data dir of --config (the running server
// may keep serving meanwhile), or with --server ask that server to do the same on its
// own cache, and print a table, or JSON with --json. They contact no
// upstream, so upstream secrets need not be set where they run; a data dir no mirror has
// used yet is said to hold no cache, and nothing is created in it.
import { duration, loadConfig } from '../config.js';
import { ArgumentError, configPath, serverOrigin, UsageError, type Values } from './args.js';
import { gc, listImages, removeImages, setPinned, verify, type CachedImage, type GcReport, type Selector, type VerifyReport } from './cache-admin.js';
import { askServer, type VerifyProgress } from './cache-remote.js';
import { commandLogger, noCacheYet, openCache, type CacheContext } from './context.js';
import { formatBytes } from '../bytes.js';
import { noCacheLine } from './status.js';

/**
 * Where a command's report comes from: the running server of --server (`remote`: its
 * endpoint and the request body), else the cache of --config; on a data dir with no cache
 * yet, `fresh` answers instead (given the line that says so). `print` shows it either way.
 */
async function withCache<T>(
  values: Values,
  command: string,
  op: { local: (ctx: CacheContext) => Promise<T>; remote: { path: string; body?: object; onProgress?: (p: VerifyProgress) => void } },
  print: (report: T) => number,
  fresh: (line: string) => number,
): Promise<number> {
  if (values.server !== undefined) {
    const server = serverOrigin(values.server, command);
    return print(await askServer<T>(server, command, op.remote.path, op.remote.body, op.remote.onProgress));
  }
  const config = loadConfig(configPath(values), process.env, { secrets: 'storage' });
  if (noCacheYet(config)) return fresh(noCacheLine(config));
  const ctx = await openCache(config, { log: commandLogger(config) });
  try {
    return print(await op.local(ctx));
  } finally {
    await ctx.close();
  }
}

function table(images: CachedImage[]): string {
  const rows = [['IMAGE', 'DIGEST', 'SIZE', 'PINNED', 'LAST PULLED', 'HITS']];
  for (const i of images) rows.push([i.incomplete ? `${i.image} *` : i.image, i.digest.slice(7, 19), formatBytes(i.size), i.pinned ? 'yes' : '-', i.lastPulled.replace(/\.\d+Z$/, 'Z'), String(i.hits)]);
  const widths = rows[0].map((_, c) => Math.max(...rows.map((r) => r[c].length)));
  const lines = rows.map((r) => r.map((cell, c) => cell.padEnd(widths[c])).join('  ').trimEnd());
  if (images.some((i) => i.incomplete)) lines.push('* incomplete: part of it was evicted; the next pull fetches it again');
  return lines.join('\n');
}

/** `cache ls`, `cache rm IMAGE|--repository R|--older-than 30d [--force]`, `cache pin IMAGE`, `cache unpin IMAGE`. */
export async function cacheCommand(values: Values, args: string[]): Promise<number> {
  const [verb, ...rest] = args;
  const out = (x: unknown, text: string) => console.log(values.json ? JSON.stringify(x, null, 2) : text);
  switch (verb) {
    case 'ls': {
      const print = (images: CachedImage[]) => {
        out(images, images.length ? table(images) : 'the cache holds no images');
        return 0;
      };
      return withCache(values, 'cache ls', { local: listImages, remote: { path: '/_regmirror/cache' } }, print, (line) => saidEmpty(values, [], line));
    }
    case 'rm': {
      const sel = selector(values, rest);
      const print = (r: Removed) => {
        out(r, `removed ${r.images.length} image(s): ${r.blobs} blobs, ${formatBytes(r.bytes)} freed${r.images.map((i) => `\n  ${i.image}`).join('')}`);
        return 0;
      };
      const force = values.force === true;
      const local = (ctx: CacheContext) => refused('rm', removeImages(ctx, sel, force));
      return withCache(values, 'cache rm', { local, remote: { path: '/_regmirror/cache/rm', body: { ...sel, force } } }, print, nothingThere('rm'));
    }
    case 'pin':
    case 'unpin': {
      if (rest.length !== 1) throw new ArgumentError(`regmirror cache ${verb}: name one image`);
      const print = (images: CachedImage[]) => {
        out(images, images.map((i) => `${verb === 'pin' ? 'pinned' : 'unpinned'} ${i.image} ${i.digest.slice(0, 19)}`).join('\n'));
        return 0;
      };
      const local = (ctx: CacheContext) => refused(verb, setPinned(ctx, rest[0], verb === 'pin'));
      return withCache(values, `cache ${verb}`, { local, remote: { path: `/_regmirror/cache/${verb}`, body: { image: rest[0] } } }, print, nothingThere(verb));
    }
    default:
      throw new ArgumentError('regmirror cache: ls, rm, pin or unpin (see regmirror --help)');
  }
}

type Removed = Awaited<ReturnType<typeof removeImages>>;

/** What the operation refuses (an image not in the cache, a bad name) is the user's to fix. */
function refused<T>(verb: string, work: Promise<T>): Promise<T> {
  return work.catch((err: Error) => {
    throw new UsageError(`regmirror cache ${verb}: ${err.message}`);
  });
}

function selector(values: Values, rest: string[]): Selector {
  const given = [rest.length > 0, values.repository !== undefined, values['older-than'] !== undefined].filter(Boolean).length;
  if (given !== 1 || rest.length > 1) throw new ArgumentError('regmirror cache rm: name one image, or --repository R, or --older-than 30d');
  if (rest.length) return { image: rest[0] };
  if (values.repository !== undefined) return { repository: values.repository };
  try {
    return { olderThanMs: duration(values['older-than'], '--older-than', true) };
  } catch {
    throw new ArgumentError('regmirror cache rm: --older-than takes a duration such as 30d or 12h');
  }
}

/** `gc [--dry-run]`: makes the store and the database agree; reports what it freed. */
export async function gcCommand(values: Values): Promise<number> {
  const dry = values['dry-run'] === true;
  const print = (r: GcReport) => {
    const verb = dry ? 'would remove' : 'removed';
    out(values, r, [
      `${verb} ${r.orphanFiles} file(s) with no record (${formatBytes(r.orphanFileBytes)})`,
      ...(r.recentFiles > 0 ? [`left ${r.recentFiles} file(s) with no record published within the last hour (another process may be recording them)`] : []),
      `${verb} ${r.missingFiles} record(s) whose file is gone`,
      `${verb} ${r.links} link(s), ${r.manifests} manifest row(s) and ${r.tags} tag(s) pointing at nothing`,
      `${verb} ${r.rollups} hourly roll-up(s) older than 30 days`,
    ]);
    return 0;
  };
  const empty: GcReport = { orphanFiles: 0, recentFiles: 0, orphanFileBytes: 0, missingFiles: 0, links: 0, manifests: 0, tags: 0, rollups: 0 };
  return withCache(values, 'gc', { local: (ctx) => gc(ctx, dry), remote: { path: '/_regmirror/gc', body: { dryRun: dry } } }, print, (line) => saidEmpty(values, empty, `${line}; nothing to collect`));
}

/** `verify [--repair]`: re-hashes every blob; exit status 1 when any is bad and was not repaired. */
export async function verifyCommand(values: Values): Promise<number> {
  const repair = values.repair === true;
  const tty = process.stderr.isTTY === true && !values.json;
  const onProgress = ({ done, total, bytes }: Omit<VerifyProgress, 'type'>) => {
    if (tty) process.stderr.write(`\r\x1b[2Kverify ${done}/${total} blobs, ${formatBytes(bytes)}`);
    else if (done === total || done % 1000 === 0) process.stderr.write(`verify ${done}/${total} blobs, ${formatBytes(bytes)}\n`);
  };
  const local = async (ctx: CacheContext) => {
    const r = await verify(ctx, { repair, onProgress: (done, total, bytes) => onProgress({ done, total, bytes }) });
    ctx.metadata.bump('(store)', 'verify_failed', r.bad.length);
    return r;
  };
  const print = (r: VerifyReport) => {
    if (tty && r.checked > 0) process.stderr.write('\n');
    const lines = [`checked ${r.checked} blobs (${formatBytes(r.bytes)}): ${r.bad.length} bad${repair ? `, ${r.repaired} removed (the next pull fetches them again)` : ''}`];
    for (const b of r.bad) lines.push(`bad ${b.digest}: ${b.problem}`);
    out(values, r, lines);
    return r.bad.length > r.repaired ? 1 : 0;
  };
  const empty: VerifyReport = { checked: 0, bytes: 0, bad: [], repaired: 0 };
  return withCache(values, 'verify', { local, remote: { path: '/_regmirror/verify', body: { repair }, onProgress } }, print, (line) => saidEmpty(values, empty, `${line}; nothing to verify`));
}

/** A fresh data dir, for the commands that only look: an empty answer, exit status 0 (JSON keeps its shape; the line goes to stderr). */
function saidEmpty(values: Values, empty: unknown, line: string): number {
  if (values.json) console.error(line);
  out(values, empty, [line]);
  return 0;
}

/** A fresh data dir, for the commands that name an image: it is not there. */
function nothingThere(verb: string): (line: string) => number {
  return (line) => {
    throw new UsageError(`regmirror cache ${verb}: ${line}`);
  };
}

function out(values: Values, x: unknown, lines: string[]): void {
  console.log(values.json ? JSON.stringify(x, null, 2) : lines.join('\n'));
}
