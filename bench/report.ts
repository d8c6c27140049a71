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

/** A column of values: one subject measured (a proxy, or regmirror on one metadata backend). */
export interface Column {
  key: string;
  label: string;
  /** Its name in ratio headers: `rm` of rm÷dist. */
  short: string;
  /** Printed instead of a value when the subject was not measured at all (e.g. "skipped"). */
  missing?: string;
}

/** The table's columns in order, and the pairs of them whose ratio gets a column of its own. */
export interface TableLayout {
  columns: Column[];
  pairs: Array<{ a: string; b: string; label?: string }>;
}

export interface Row {
  metric: string;
  /** By column key. */
  values?: Record<string, Stat | undefined>;
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

export function table(rows: Row[], layout: TableLayout): string {
  const { columns, pairs } = layout;
  const short = (key: string) => columns.find((c) => c.key === key)?.short ?? key;
  const header = [
    'metric',
    ...columns.map((c) => c.label),
    ...pairs.map((p) => p.label ?? `${short(p.a)}÷${short(p.b)}`),
    'reference',
    ...columns.map((c) => `${c.short}÷ref`),
  ];
  const lines: string[][] = [header];
  for (const r of rows) {
    if (r.section) {
      lines.push([r.metric]);
      continue;
    }
    const v = (key: string) => r.values?.[key];
    const ratios = r.ratios !== false;
    lines.push([
      r.metric,
      ...columns.map((c) => (r.continuation ? '' : v(c.key) ? cell(v(c.key), r.integer) : c.missing ?? '—')),
      ...pairs.map((p) => (ratios && !r.continuation ? ratio(v(p.a), v(p.b)) : '')),
      r.ref ? `${r.ref.name} ${cell(r.ref.stat, r.integer)}` : '',
      ...columns.map((c) => (ratios && r.ref ? ratio(v(c.key), r.ref.stat) : '')),
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

/** The table's rows as JSON, each named in full (section + metric), its values by column key. */
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
    out.push({ metric, ...r.values, reference: r.ref });
  }
  return out;
}
