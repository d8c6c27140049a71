// Progress for long CLI work: one bar per image plus a total on a terminal, plain lines
// otherwise (CI logs), and a summary table at the end.
import type { PrewarmEvent, PrewarmResult } from './prewarm.js';
import { formatBytes } from '../bytes.js';

interface Line {
  image: string;
  bytesDone: number;
  bytesTotal: number;
  blobsDone: number;
  blobsTotal: number;
  note: string;
}

const BAR = 24;

/** Renders prewarm events as they come. */
export class ProgressView {
  readonly #out: NodeJS.WritableStream;
  readonly #tty: boolean;
  readonly #lines = new Map<string, Line>();
  readonly #started = Date.now();
  #drawn = 0;
  #lastDraw = 0;

  constructor(out: NodeJS.WritableStream, tty: boolean) {
    this.#out = out;
    this.#tty = tty;
  }

  event(e: PrewarmEvent): void {
    const line = this.#line(e.type === 'done' ? e.result.image : e.image);
    if (e.type === 'start') line.note = 'resolving';
    if (e.type === 'progress') Object.assign(line, { bytesDone: e.bytesDone, bytesTotal: e.bytesTotal, blobsDone: e.blobsDone, blobsTotal: e.blobsTotal, note: '' });
    if (e.type === 'wait') line.note = `waiting ${e.seconds}s: ${e.upstream} ${e.reason}`;
    if (e.type === 'done') line.note = e.result.error ? `failed: ${e.result.error}` : 'done';
    if (this.#tty) this.#draw(e.type !== 'progress');
    else this.#plain(e);
  }

  #line(image: string): Line {
    let line = this.#lines.get(image);
    if (!line) {
      line = { image, bytesDone: 0, bytesTotal: 0, blobsDone: 0, blobsTotal: 0, note: '' };
      this.#lines.set(image, line);
    }
    return line;
  }

  #plain(e: PrewarmEvent): void {
    if (e.type === 'start') this.#out.write(`prewarm ${e.image}\n`);
    if (e.type === 'wait') this.#out.write(`waiting ${e.seconds}s for ${e.upstream}: ${e.reason} (${e.image})\n`);
    if (e.type === 'done') {
      const r = e.result;
      this.#out.write(r.error ? `failed ${r.image}${r.upstream ? ` (upstream ${r.upstream})` : ''}: ${r.error}\n` : `done ${r.image} ${formatBytes(r.size)}, fetched ${r.fetchedBlobs}/${r.blobs} blobs in ${seconds(r.ms)}\n`);
    }
  }

  #draw(force: boolean): void {
    const now = Date.now();
    if (!force && now - this.#lastDraw < 100) return;
    this.#lastDraw = now;
    const rows = [...this.#lines.values()].map((l) => `${bar(l.bytesDone, l.bytesTotal)} ${l.image}  ${formatBytes(l.bytesDone)}/${formatBytes(l.bytesTotal)} ${l.blobsDone}/${l.blobsTotal} blobs ${l.note}`);
    const done = [...this.#lines.values()].reduce((n, l) => n + l.bytesDone, 0);
    const total = [...this.#lines.values()].reduce((n, l) => n + l.bytesTotal, 0);
    const speed = done / Math.max(0.001, (now - this.#started) / 1000);
    const eta = speed > 0 && total > done ? ` eta ${Math.ceil((total - done) / speed)}s` : '';
    rows.push(`${bar(done, total)} total  ${formatBytes(done)}/${formatBytes(total)} ${formatBytes(speed)}/s${eta}`);
    const up = this.#drawn ? `\x1b[${this.#drawn}A` : '';
    this.#out.write(up + rows.map((r) => `\x1b[2K${r}\n`).join(''));
    this.#drawn = rows.length;
  }
}

function bar(done: number, total: number): string {
  const filled = total > 0 ? Math.round((BAR * Math.min(done, total)) / total) : 0;
  return `[${'#'.repeat(filled)}${'.'.repeat(BAR - filled)}]`;
}

function seconds(ms: number): string {
  return `${(ms / 1000).toFixed(1)}s`;
}

/** The closing table: one row per image, then one line per failure naming image, upstream and reason. */
export function summaryTable(results: PrewarmResult[]): string {
  const rows = [['IMAGE', 'DIGEST', 'PLATFORMS', 'SIZE', 'FETCHED', 'CACHED', 'TIME']];
  for (const r of results) {
    rows.push([
      r.image,
      r.digest ? r.digest.slice(7, 19) : '-',
      r.platforms.join(',') || '-',
      formatBytes(r.size),
      r.error ? 'failed' : r.missing !== undefined ? `would fetch ${r.missing}` : `${r.fetchedBlobs} (${formatBytes(r.fetchedBytes)})`,
      r.error ? '-' : String(r.blobs - (r.missing ?? r.fetchedBlobs)),
      seconds(r.ms),
    ]);
  }
  const widths = rows[0].map((_, i) => Math.max(...rows.map((row) => row[i].length)));
  const lines = rows.map((row) => row.map((c, i) => c.padEnd(widths[i])).join('  ').trimEnd());
  for (const r of results.filter((x) => x.error)) lines.push(`error: ${r.image}${r.upstream ? ` (upstream ${r.upstream})` : ''}: ${r.error}`);
  for (const r of results.filter((x) => x.signature !== undefined && x.signature !== 'verified')) lines.push(`warning: ${r.image}: ${r.signature} under its signature policy`);
  return lines.join('\n');
}
