// TOML edited as text, section by section, so an operator's comments and layout survive
// a merge; every edit is checked by parsing the result (verify) before it is written.
import { parse as parseToml } from 'smol-toml';
import { isDeepStrictEqual } from 'node:util';
import { ConfigureError } from './client-config.js';

export interface Section {
  /** Header key path ([] for the part before the first header). */
  path: string[];
  array: boolean;
  /** First line (leading comments included) and the line after the last. */
  start: number;
  header: number;
  end: number;
}

/** A TOML basic string (JSON's escaping is valid TOML). */
export const q = (s: string) => JSON.stringify(s);

export function tomlParse(text: string, where: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigureError(`${where}: not valid TOML: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** The key path of a table header line, or undefined when the line is not one. */
export function headerPath(line: string): { path: string[]; array: boolean } | undefined {
  if (!/^\s*\[/.test(line)) return undefined;
  let doc: unknown;
  try {
    doc = parseToml(line);
  } catch {
    return undefined;
  }
  const path: string[] = [];
  let node = doc;
  for (;;) {
    if (Array.isArray(node)) {
      if (node.length !== 1) return undefined;
      return { path, array: true };
    }
    const keys = Object.keys(node as object);
    if (keys.length === 0) return { path, array: false };
    if (keys.length !== 1) return undefined;
    path.push(keys[0]);
    node = (node as Record<string, unknown>)[keys[0]];
  }
}

/**
 * Splits TOML into its root part and one section per table header. Comment lines right
 * above a header belong to that header's section. Each section must parse on its own,
 * which refuses a split inside a multi-line array or string.
 */
export function sections(lines: string[], where: string): Section[] {
  const out: Section[] = [{ path: [], array: false, start: 0, header: -1, end: lines.length }];
  lines.forEach((line, i) => {
    const h = headerPath(line);
    if (!h) return;
    const prev = out[out.length - 1];
    let start = i;
    while (start - 1 > Math.max(prev.header, -1) && /^\s*#/.test(lines[start - 1])) start--;
    if (prev.header === -1 && start > 0 && lines.slice(0, start).every((l) => /^\s*(#.*)?$/.test(l))) {
      // A file that opens with comments: they stay with the root part, not the first table.
      start = Math.max(start, firstBlankAfterComments(lines));
    }
    prev.end = start;
    out.push({ ...h, start, header: i, end: lines.length });
  });
  for (const s of out) {
    try {
      parseToml(lines.slice(s.start, s.end).join('\n'));
    } catch {
      throw new ConfigureError(`${where}: cannot be edited safely around line ${s.start + 1} (a table header inside a multi-line value?); edit it by hand`);
    }
  }
  return out;
}

export function firstBlankAfterComments(lines: string[]): number {
  let i = 0;
  while (i < lines.length && /^\s*#/.test(lines[i])) i++;
  return i;
}

export function toLines(text: string): string[] {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

export function fromLines(lines: string[]): string {
  let n = lines.length;
  while (n > 0 && lines[n - 1].trim() === '') n--;
  return lines.slice(0, n).join('\n') + '\n';
}

/** Trailing blank lines of a section's body, kept when the body is replaced. */
export function trailingBlanks(lines: string[], s: Section): string[] {
  let n = 0;
  while (s.end - 1 - n > s.header && lines[s.end - 1 - n].trim() === '') n++;
  return Array(n).fill('');
}

/** JSON-normalised copy, so parsed TOML (null-prototype objects) compares with plain ones. */
export function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v ?? {}));
}

export function verify(where: string, result: string, expected: unknown): void {
  const got = tomlParse(result, `${where} (as edited)`);
  if (!isDeepStrictEqual(plain(got), plain(expected))) {
    throw new ConfigureError(`${where}: the merged file would not say what was intended; nothing was written (edit it by hand)`);
  }
}
