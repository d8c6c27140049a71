// Statistics over rounds and the printed table: each cell is the median of the rounds
// with min–max, and ratios are ratios of medians.

export interface Stat {
  median: number;
  min: number;
  max: number;
  n: number;
}

export function stat(values: Array<number | undefined>): Stat | undefined {
  const v = values.filter((x): x is number => x !== undefined && Number.isFinite(x)).sort((a, b) => a - b);
  if (v.length === 0) return undefined;
  const mid = v.length >> 1;
  const median = v.length % 2 ? v[mid] : (v[mid - 1] + v[mid]) / 2;
  return { median, min: v[0], max: v[v.length - 1], n: v.length };
}

function num(x: number, integer: boolean): string {
  if (integer) return String(Math.round(x));
  const a = Math.abs(x);
  if (a >= 100) return x.toFixed(0);
  if (a >= 10) return x.toFixed(1);
  if (a >= 1) return x.toFixed(2);
  return x.toFixed(3);
}

export function cell(s: Stat | undefined, integer = false): string {
  if (!s) return '—';
  const m = num(s.median, integer);
  if (s.n < 2 || s.min === s.max) return m;
  return `${m} (${num(s.min, integer)}–${num(s.max, integer)})`;
}

function ratio(a: Stat | undefined, b: Stat | undefined): string {
  if (!a || !b || b.median === 0) return '—';
  return `${(a.median / b.median).toFixed(2)}×`;
}

export interface Row {
  metric: string;
  regmirror?: Stat;
  distribution?: Stat;
  /** A reference this row is compared with, e.g. nginx or a direct pull. */
  ref?: { name: string; stat?: Stat };
  integer?: boolean;
  /** Print ratios to the other proxy / the reference (off for counts where a ratio means nothing). */
  ratios?: boolean;
  /** A section heading line instead of a data row. */
  section?: boolean;
  /** A second reference for the row above: its values are not repeated, only the ratios. */
  continuation?: boolean;
}

export function table(rows: Row[], opts: { distributionNote?: string }): string {
  const header = ['metric', 'regmirror', 'distribution', 'rm÷dist', 'reference', 'rm÷ref', 'dist÷ref'];
  const lines: string[][] = [header];
  for (const r of rows) {
    if (r.section) {
      lines.push([r.metric]);
      continue;
    }
    const dist = r.distribution ? cell(r.distribution, r.integer) : opts.distributionNote ?? '—';
    const ratios = r.ratios !== false;
    lines.push([
      r.metric,
      r.continuation ? '' : cell(r.regmirror, r.integer),
      r.continuation ? '' : dist,
      ratios && !r.continuation ? ratio(r.regmirror, r.distribution) : '',
      r.ref ? `${r.ref.name} ${cell(r.ref.stat, r.integer)}` : '',
      ratios && r.ref ? ratio(r.regmirror, r.ref.stat) : '',
      ratios && r.ref ? ratio(r.distribution, r.ref.stat) : '',
    ]);
  }
  const widths = header.map((_, i) => Math.max(...lines.filter((l) => l.length > 1).map((l) => (l[i] ?? '').length)));
  const out: string[] = [];
  for (const [i, l] of lines.entries()) {
    if (l.length === 1) {
      out.push(l[0]);
      continue;
    }
    out.push(l.map((c, j) => (j === 0 ? c.padEnd(widths[j]) : c.padStart(widths[j]))).join('  ').trimEnd());
    if (i === 0) out.push(widths.map((w) => '-'.repeat(w)).join('  '));
  }
  return out.join('\n');
}

/** The table's rows as JSON, each named in full (section + metric). */
export function jsonSummary(rows: Row[]): unknown[] {
  let section = '';
  let last = '';
  const out: unknown[] = [];
  for (const r of rows) {
    if (r.section) {
      section = r.metric.replace(/^\d+\.\s*/, '');
      continue;
    }
    const metric = r.continuation ? last : `${section}: ${r.metric.trim()}`;
    last = metric;
    out.push({ metric, regmirror: r.regmirror, distribution: r.distribution, reference: r.ref });
  }
  return out;
}
