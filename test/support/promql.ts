// Just enough PromQL for the dashboard and alert tests: the metric names an expression
// uses, whether its brackets balance, and which names a /metrics text exports. No
// Prometheus here: what these miss, a real one would refuse at load time.

/** The expression with the contents of its string literals removed (label values, regexes). */
export function withoutStrings(expr: string): string {
  return expr.replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'|`[^`]*`/g, '""');
}

/** regmirror's metric names, and bare process_/nodejs_ ones (which regmirror does not export: its defaults are prefixed). */
export function metricNames(expr: string): string[] {
  const found = withoutStrings(expr).match(/(?<![A-Za-z0-9_:$])(?:regmirror|process|nodejs)_[A-Za-z0-9_:]*/g) ?? [];
  return [...new Set(found)];
}

/** Undefined when (), [] and {} nest properly outside strings; else what is wrong. */
export function bracketProblem(expr: string): string | undefined {
  const close: Record<string, string> = { ')': '(', ']': '[', '}': '{' };
  const open: string[] = [];
  for (const ch of withoutStrings(expr)) {
    if (ch === '(' || ch === '[' || ch === '{') open.push(ch);
    else if (ch in close && open.pop() !== close[ch]) return `unexpected ${ch}`;
  }
  return open.length ? `unclosed ${open.join('')}` : undefined;
}

/** A Prometheus duration: 30s, 5m, 1h30m. */
export function isDuration(v: unknown): boolean {
  return typeof v === 'string' && /^(?:\d+(?:ms|s|m|h|d|w|y))+$/.test(v);
}

export interface Exposition {
  /** `# TYPE` lines: name → counter, gauge, histogram, summary. */
  types: Map<string, string>;
  /** Names that have at least one sample. */
  sampled: Set<string>;
}

export function parseExposition(text: string): Exposition {
  const types = new Map<string, string>();
  const sampled = new Set<string>();
  for (const line of text.split('\n')) {
    const type = /^# TYPE (\S+) (\S+)/.exec(line);
    if (type) types.set(type[1], type[2]);
    const sample = /^([A-Za-z_:][A-Za-z0-9_:]*)[{ ]/.exec(line);
    if (sample) sampled.add(sample[1]);
  }
  return { types, sampled };
}

/** The family a sample name belongs to: itself, or a histogram's or summary's for _bucket/_sum/_count. */
export function family(e: Exposition, name: string): string | undefined {
  if (e.types.has(name) || e.sampled.has(name)) return name;
  const base = /^(.+)_(?:bucket|sum|count)$/.exec(name)?.[1];
  const kind = base ? e.types.get(base) : undefined;
  return kind === 'histogram' || kind === 'summary' ? base : undefined;
}
