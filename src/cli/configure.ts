// `regmirror configure`: points a client at a regmirror by writing (or printing) its own
// configuration: containerd hosts.toml files, Docker's daemon.json, podman's
// registries.conf, k3s's registries.yaml. Existing files are merged, never overwritten:
// entries for this mirror (the same URL) are replaced, everything else the operator wrote
// is kept, and running the command twice changes nothing the second time.
//
// TOML is edited as text, section by section, so the operator's comments and layout
// survive; every edit is then checked by parsing the result and comparing it with the
// intended change to the parsed original, and nothing is written if the two differ.
import { mkdir, readFile, rename, stat, writeFile, realpath, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import { randomBytes } from 'node:crypto';
import { parse as parseToml } from 'smol-toml';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';

export const TARGETS = ['containerd', 'docker', 'podman', 'k3s'] as const;
export type Target = (typeof TARGETS)[number];

export const DEFAULT_REGISTRIES = ['docker.io', 'ghcr.io', 'quay.io', 'registry.k8s.io'];

/** Where each client reads its configuration, used in help and notes. */
export const DEFAULT_PATHS: Record<Target, string> = {
  containerd: '/etc/containerd/certs.d',
  docker: '/etc/docker/daemon.json',
  podman: '/etc/containers/registries.conf',
  k3s: '/etc/rancher/k3s/registries.yaml',
};

/** A mistake the operator can fix (bad flag, unreadable file): printed as one line. */
export class ConfigureError extends Error {
  constructor(message: string) {
    super(`configure: ${message}`);
    this.name = 'ConfigureError';
  }
}

export interface Mirror {
  /** scheme://host[:port], no trailing slash: the form written into every file. */
  url: string;
  /** host[:port] as in the URL (no default port). */
  host: string;
  secure: boolean;
  loopback: boolean;
}

export function parseMirror(text: string): Mirror {
  let u: URL;
  try {
    u = new URL(text);
  } catch {
    throw new ConfigureError(`--mirror ${JSON.stringify(text)} is not a URL (e.g. http://mirror.example:5000)`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigureError('--mirror must be an http:// or https:// URL');
  if (u.username || u.password) throw new ConfigureError('--mirror must not carry credentials');
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) {
    throw new ConfigureError('--mirror takes scheme://host[:port] with no path (regmirror routes by ?ns= and by a path prefix it adds itself)');
  }
  const host = u.host;
  const name = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = name === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(name) || name === '::1';
  return { url: `${u.protocol}//${host}`, host, secure: u.protocol === 'https:', loopback };
}

export function parseRegistries(text: string | undefined): string[] {
  if (text === undefined) return [...DEFAULT_REGISTRIES];
  const list = [...new Set(text.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean))];
  if (list.length === 0) throw new ConfigureError('--registries names no registry');
  for (const r of list) {
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/.test(r)) throw new ConfigureError(`--registries: ${JSON.stringify(r)} is not a registry host name such as ghcr.io`);
  }
  return list;
}

/** The registry's own endpoint, kept as containerd's fallback. */
export function upstreamServer(registry: string): string {
  return registry === 'docker.io' ? 'https://registry-1.docker.io' : `https://${registry}`;
}

export interface Edit {
  text: string;
  /** What changed, one phrase each; empty when nothing did. */
  changes: string[];
}

// ---------------------------------------------------------------------------
// TOML as sections of text

interface Section {
  /** Header key path ([] for the part before the first header). */
  path: string[];
  array: boolean;
  /** First line (leading comments included) and the line after the last. */
  start: number;
  header: number;
  end: number;
}

const q = (s: string) => JSON.stringify(s);

function tomlParse(text: string, where: string): Record<string, unknown> {
  try {
    return parseToml(text) as Record<string, unknown>;
  } catch (err) {
    throw new ConfigureError(`${where}: not valid TOML: ${(err as Error).message.split('\n')[0]}`);
  }
}

/** The key path of a table header line, or undefined when the line is not one. */
function headerPath(line: string): { path: string[]; array: boolean } | undefined {
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
function sections(lines: string[], where: string): Section[] {
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

function firstBlankAfterComments(lines: string[]): number {
  let i = 0;
  while (i < lines.length && /^\s*#/.test(lines[i])) i++;
  return i;
}

function toLines(text: string): string[] {
  const lines = text.replace(/\r\n/g, '\n').split('\n');
  if (lines.length > 0 && lines[lines.length - 1] === '') lines.pop();
  return lines;
}

function fromLines(lines: string[]): string {
  let n = lines.length;
  while (n > 0 && lines[n - 1].trim() === '') n--;
  return lines.slice(0, n).join('\n') + '\n';
}

/** Trailing blank lines of a section's body, kept when the body is replaced. */
function trailingBlanks(lines: string[], s: Section): string[] {
  let n = 0;
  while (s.end - 1 - n > s.header && lines[s.end - 1 - n].trim() === '') n++;
  return Array(n).fill('');
}

/** JSON-normalised copy, so parsed TOML (null-prototype objects) compares with plain ones. */
function plain(v: unknown): unknown {
  return JSON.parse(JSON.stringify(v ?? {}));
}

function verify(where: string, result: string, expected: unknown): void {
  const got = tomlParse(result, `${where} (as edited)`);
  if (!isDeepStrictEqual(plain(got), plain(expected))) {
    throw new ConfigureError(`${where}: the merged file would not say what was intended; nothing was written (edit it by hand)`);
  }
}

// ---------------------------------------------------------------------------
// containerd: <dir>/<registry>/hosts.toml

function containerdHostLines(mirror: Mirror, ca?: string): string[] {
  const lines = [`[host.${q(mirror.url)}]`, '  capabilities = ["pull", "resolve"]'];
  if (ca) lines.push(`  ca = ${q(ca)}`);
  return lines;
}

/** hosts.toml for one registry, merged into `existing` when there is one. */
export function containerdHostsToml(existing: string | undefined, registry: string, mirror: Mirror, ca?: string, where = `${registry}/hosts.toml`): Edit {
  const server = upstreamServer(registry);
  const ours = containerdHostLines(mirror, ca);
  if (existing === undefined || existing.trim() === '') {
    const text = fromLines([
      `# ${registry}: pulls go to the regmirror at ${mirror.url} first (containerd adds ?ns=${registry});`,
      '# `server` is the registry itself, the fallback. Written by `regmirror configure containerd`.',
      `server = ${q(server)}`,
      '',
      ...ours,
    ]);
    return { text, changes: [`created with [host.${q(mirror.url)}] and server = ${q(server)}`] };
  }
  const parsed = tomlParse(existing, where);
  const lines = toLines(existing);
  const secs = sections(lines, where);
  const changes: string[] = [];
  const own = secs.find((s) => !s.array && s.path.length === 2 && s.path[0] === 'host' && s.path[1] === mirror.url);
  let out: string[];
  if (own) {
    const body = [...ours, ...trailingBlanks(lines, own)];
    out = [...lines.slice(0, own.header), ...body, ...lines.slice(own.end)];
    if (lines.slice(own.header, own.end).join('\n') !== body.join('\n')) changes.push(`replaced [host.${q(mirror.url)}]`);
  } else {
    const firstHost = secs.find((s) => s.path[0] === 'host');
    const at = firstHost ? firstHost.start : lines.length;
    const before = lines.slice(0, at);
    if (before.length > 0 && before[before.length - 1].trim() !== '') before.push('');
    out = [...before, ...ours, '', ...lines.slice(at)];
    changes.push(`added [host.${q(mirror.url)}]${firstHost ? ' before the other hosts' : ''}`);
  }
  if (parsed.server === undefined) {
    // Into the root part: after its last non-blank line.
    const root = sections(out, where)[0];
    let at = root.end;
    while (at > 0 && out[at - 1].trim() === '') at--;
    out = [...out.slice(0, at), `server = ${q(server)}`, ...(at === root.end ? [''] : []), ...out.slice(at)];
    changes.push(`added server = ${q(server)} (the fallback)`);
  }
  const text = fromLines(out);

  const expected = plain(parsed) as Record<string, unknown>;
  expected.server ??= server;
  const hosts = (expected.host ??= {}) as Record<string, Record<string, unknown>>;
  const kept = Object.fromEntries(Object.entries(hosts[mirror.url] ?? {}).filter(([, v]) => typeof v === 'object' && v !== null && !Array.isArray(v)));
  hosts[mirror.url] = { ...kept, capabilities: ['pull', 'resolve'], ...(ca ? { ca } : {}) };
  verify(where, text, expected);
  return { text: changes.length ? text : existing, changes };
}

// ---------------------------------------------------------------------------
// podman / CRI-O / buildah / skopeo: registries.conf (v2)

/** The [[registry.mirror]] location for one registry: a path prefix on the mirror. */
export function podmanMirrorLocation(mirror: Mirror, registry: string): string {
  return `${mirror.host}/${registry}`;
}

function podmanMirrorLines(mirror: Mirror, registry: string): string[] {
  const lines = ['[[registry.mirror]]', `location = ${q(podmanMirrorLocation(mirror, registry))}`];
  if (!mirror.secure) lines.push('insecure = true');
  return lines;
}

function registryName(t: Record<string, unknown>): string | undefined {
  const v = t.prefix ?? t.location;
  return typeof v === 'string' ? v : undefined;
}

function podmanOne(text: string, registry: string, mirror: Mirror, where: string, changes: string[]): string {
  const lines = toLines(text);
  const secs = sections(lines, where);
  const ours = podmanMirrorLines(mirror, registry);
  const location = podmanMirrorLocation(mirror, registry);
  const standalone = (s: Section) => plain(parseToml(lines.slice(s.start, s.end).join('\n'))) as Record<string, unknown>;

  const owners = secs.filter((s) => s.array && s.path.length === 1 && s.path[0] === 'registry' && registryName(((standalone(s).registry as unknown[])[0] ?? {}) as Record<string, unknown>) === registry);
  if (owners.length > 1) throw new ConfigureError(`${where}: more than one [[registry]] for ${registry}; fix that first`);
  if (owners.length === 0) {
    const out = [...lines];
    if (out.length > 0 && out[out.length - 1].trim() !== '') out.push('');
    out.push('[[registry]]', `prefix = ${q(registry)}`, `location = ${q(registry)}`, '', ...ours);
    changes.push(`added [[registry]] ${registry} with mirror ${location}`);
    return fromLines(out);
  }
  const reg = owners[0];
  const regTable = (standalone(reg).registry as Array<Record<string, unknown>>)[0];
  if (regTable.mirror !== undefined) throw new ConfigureError(`${where}: the [[registry]] for ${registry} lists its mirrors inline; write them as [[registry.mirror]] tables first`);
  const index = secs.indexOf(reg);
  const mirrors: Section[] = [];
  for (let i = index + 1; i < secs.length && secs[i].array && secs[i].path.join('.') === 'registry.mirror'; i++) mirrors.push(secs[i]);
  const own = mirrors.filter((m) => ((standalone(m).registry as { mirror: Array<Record<string, unknown>> }).mirror[0] ?? {}).location === location);

  // Ours goes first: mirrors are tried in order. Already first and the same: nothing to do.
  const first = mirrors[0];
  if (own.length === 1 && own[0] === first && lines.slice(first.start, first.end).join('\n').trimEnd() === ours.join('\n')) return text;
  const drop = new Set(own.flatMap((m) => range(m.start, m.end)));
  const at = first ? first.start : reg.end;
  const out: string[] = [];
  lines.forEach((line, i) => {
    if (i === at) {
      if (!first && out.length > 0 && out[out.length - 1].trim() !== '') out.push('');
      out.push(...ours, '');
    }
    if (!drop.has(i)) out.push(line);
  });
  if (at === lines.length) {
    if (out.length > 0 && out[out.length - 1].trim() !== '') out.push('');
    out.push(...ours);
  }
  changes.push(own.length ? `${registry}: mirror ${location} replaced and put first` : `${registry}: mirror ${location} added first`);
  return fromLines(out);
}

function range(a: number, b: number): number[] {
  return Array.from({ length: b - a }, (_, i) => a + i);
}

export function podmanRegistriesConf(existing: string | undefined, registries: string[], mirror: Mirror, where = 'registries.conf'): Edit {
  const fresh = existing === undefined || existing.trim() === '';
  const base = fresh
    ? '# Pulls go to the regmirror at ' + mirror.url + ' first, then to each registry itself.\n# Written by `regmirror configure podman`.\n'
    : existing;
  const parsed = tomlParse(base, where);
  if (parsed.registries !== undefined) {
    throw new ConfigureError(`${where}: uses the old v1 format ([registries.search] …); convert it to [[registry]] tables (containers-registries.conf(5)) first`);
  }
  const changes: string[] = [];
  let text = base;
  for (const r of registries) text = podmanOne(text, r, mirror, where, changes);

  const expected = plain(parsed) as { registry?: Array<Record<string, unknown>> };
  const list = (expected.registry ??= []);
  for (const r of registries) {
    const ours = { location: podmanMirrorLocation(mirror, r), ...(mirror.secure ? {} : { insecure: true }) };
    const entry = list.find((e) => registryName(e) === r);
    if (entry) entry.mirror = [ours, ...((entry.mirror as Array<Record<string, unknown>> | undefined) ?? []).filter((m) => m.location !== ours.location)];
    else list.push({ prefix: r, location: r, mirror: [ours] });
  }
  if (list.length === 0) delete expected.registry;
  verify(where, text, expected);
  if (fresh) return { text, changes: [`created with mirrors for ${registries.join(', ')}`] };
  return { text: changes.length ? text : existing, changes };
}

// ---------------------------------------------------------------------------
// Docker Engine: daemon.json

export function dockerDaemonJson(existing: string | undefined, mirror: Mirror, where = 'daemon.json'): Edit {
  let doc: Record<string, unknown> = {};
  if (existing !== undefined && existing.trim() !== '') {
    let v: unknown;
    try {
      v = JSON.parse(existing);
    } catch (err) {
      throw new ConfigureError(`${where}: not valid JSON: ${(err as Error).message}`);
    }
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new ConfigureError(`${where}: must be a JSON object`);
    doc = v as Record<string, unknown>;
  }
  const list = (key: string): string[] => {
    const v = doc[key];
    if (v === undefined) return [];
    if (!Array.isArray(v) || v.some((x) => typeof x !== 'string')) throw new ConfigureError(`${where}: "${key}" must be a list of strings`);
    return v as string[];
  };
  const norm = (s: string) => s.replace(/\/+$/, '');
  const changes: string[] = [];
  const mirrors = list('registry-mirrors');
  const nextMirrors = [mirror.url, ...mirrors.filter((m) => norm(m) !== mirror.url)];
  const next: Record<string, unknown> = { ...doc };
  if (!isDeepStrictEqual(mirrors, nextMirrors)) {
    next['registry-mirrors'] = nextMirrors;
    changes.push(mirrors.some((m) => norm(m) === mirror.url) ? `registry-mirrors: ${mirror.url} moved first` : `registry-mirrors: ${mirror.url} added first`);
  }
  if (!mirror.secure && !mirror.loopback) {
    // Docker refuses a plain-HTTP mirror off localhost unless it is an insecure registry.
    const insecure = list('insecure-registries');
    if (!insecure.some((h) => norm(h).replace(/^https?:\/\//, '') === mirror.host)) {
      next['insecure-registries'] = [...insecure, mirror.host];
      changes.push(`insecure-registries: ${mirror.host} added (the mirror is plain HTTP)`);
    }
  }
  if (existing === undefined || existing.trim() === '') return { text: JSON.stringify(next, null, 2) + '\n', changes };
  return { text: changes.length ? JSON.stringify(next, null, 2) + '\n' : existing, changes };
}

// ---------------------------------------------------------------------------
// k3s: registries.yaml (k3s turns it into containerd hosts.toml files; the registry
// itself stays as the last-resort endpoint, so no fallback needs writing)

export function k3sRegistriesYaml(existing: string | undefined, registries: string[], mirror: Mirror, ca?: string, where = 'registries.yaml'): Edit {
  const fresh = existing === undefined || existing.trim() === '';
  const source = fresh
    ? `# Pulls go to the regmirror at ${mirror.url} first; k3s keeps each registry itself as the\n# last resort. Written by \`regmirror configure k3s\`.\n`
    : existing;
  const doc = parseDocument(source);
  if (doc.errors.length) throw new ConfigureError(`${where}: not valid YAML: ${doc.errors[0].message.split('\n')[0]}`);
  if (doc.contents === null) doc.contents = doc.createNode({}) as never;
  if (!isMap(doc.contents)) throw new ConfigureError(`${where}: must be a mapping`);
  const changes: string[] = [];
  // `mirrors:` with nothing under it (null), or an empty `{}`: start a block mapping there.
  const blockMap = (path: string[]) => {
    const node = doc.getIn(path, true);
    const empty = node === undefined || node === null || (isScalar(node) && (node.value === null || node.value === '')) || (isMap(node) && node.items.length === 0);
    if (empty) doc.setIn(path, doc.createNode({}));
    else if (!isMap(node)) throw new ConfigureError(`${where}: ${path.join('.')} must be a mapping`);
  };
  for (const r of registries) {
    blockMap(['mirrors']);
    blockMap(['mirrors', r]);
    const node = doc.getIn(['mirrors', r, 'endpoint'], true);
    if (node !== undefined && !isSeq(node)) throw new ConfigureError(`${where}: mirrors.${r}.endpoint must be a list`);
    const current = (node ? (node.toJSON() as unknown[]) : []).map(String);
    const next = [mirror.url, ...current.filter((e) => e.replace(/\/+$/, '') !== mirror.url)];
    if (!isDeepStrictEqual(current, next)) {
      doc.setIn(['mirrors', r, 'endpoint'], doc.createNode(next));
      changes.push(`mirrors.${r}.endpoint: ${mirror.url} ${current.length ? 'put first' : 'added'}`);
    }
  }
  if (ca && mirror.secure) {
    const path = ['configs', mirror.host, 'tls', 'ca_file'];
    for (let i = 1; i < path.length; i++) blockMap(path.slice(0, i));
    if (doc.getIn(path) !== ca) {
      doc.setIn(path, ca);
      changes.push(`configs.${mirror.host}.tls.ca_file: ${ca}`);
    }
  }
  if (fresh) return { text: doc.toString(), changes: [`created with mirrors for ${registries.join(', ')}`] };
  return { text: changes.length ? doc.toString() : existing, changes };
}

// ---------------------------------------------------------------------------
// The command

export interface ConfigureOptions {
  target: Target;
  mirror: Mirror;
  registries: string[];
  /** Absolute path of the CA file for an https mirror (containerd, k3s). */
  ca?: string;
  /** containerd: the hosts directory; the others: the file. Undefined: print only. */
  write?: string;
}

export interface PlannedFile {
  path: string;
  before: string | undefined;
  after: string;
  changes: string[];
}

export interface Plan {
  files: PlannedFile[];
  /** Advice for the operator (stderr). */
  notes: string[];
}

async function readIfExists(path: string): Promise<string | undefined> {
  try {
    return await readFile(path, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') return undefined;
    throw new ConfigureError(`cannot read ${path}: ${code ?? String(err)}`);
  }
}

/** Works out every file's new content; reads existing files when writing, touches nothing. */
export async function planConfigure(o: ConfigureOptions): Promise<Plan> {
  const notes: string[] = [];
  const read = (p: string) => (o.write === undefined ? Promise.resolve(undefined) : readIfExists(p));
  const files: PlannedFile[] = [];
  const add = async (path: string, edit: (before: string | undefined) => Edit) => {
    const before = await read(path);
    const e = edit(before);
    files.push({ path, before, after: e.text, changes: e.changes });
  };
  switch (o.target) {
    case 'containerd': {
      const dir = o.write ?? DEFAULT_PATHS.containerd;
      for (const r of o.registries) {
        const path = join(dir, r, 'hosts.toml');
        await add(path, (b) => containerdHostsToml(b, r, o.mirror, o.ca, path));
      }
      notes.push(`containerd reads these when config_path = ${q(dir)} (containerd 1.x: [plugins."io.containerd.grpc.v1.cri".registry]; 2.x: [plugins."io.containerd.cri.v1.images".registry]); ctr takes --hosts-dir ${dir}`);
      break;
    }
    case 'docker': {
      const others = o.registries.filter((r) => r !== 'docker.io');
      if (!o.registries.includes('docker.io')) throw new ConfigureError("Docker Engine's registry-mirrors only applies to Docker Hub: include docker.io in --registries");
      const path = o.write ?? DEFAULT_PATHS.docker;
      await add(path, (b) => dockerDaemonJson(b, o.mirror, path));
      notes.push(`Docker Engine uses registry-mirrors for Docker Hub only${others.length ? `: ${others.join(', ')} are still pulled directly` : ''}. Restart dockerd to apply.`);
      if (o.ca) notes.push(`Docker reads a mirror's CA from /etc/docker/certs.d/${o.mirror.host}/ca.crt: copy ${o.ca} there.`);
      break;
    }
    case 'podman': {
      const path = o.write ?? DEFAULT_PATHS.podman;
      await add(path, (b) => podmanRegistriesConf(b, o.registries, o.mirror, path));
      if (o.ca) notes.push(`podman, CRI-O and skopeo read a registry's CA from /etc/containers/certs.d/${o.mirror.host}/ca.crt: copy ${o.ca} there.`);
      break;
    }
    case 'k3s': {
      const path = o.write ?? DEFAULT_PATHS.k3s;
      await add(path, (b) => k3sRegistriesYaml(b, o.registries, o.mirror, o.ca, path));
      notes.push('k3s reads registries.yaml at start-up: restart k3s (or k3s-agent) on the node to apply.');
      break;
    }
  }
  return { files, notes };
}

/** Writes the changed files: a temp file beside each, then rename, keeping an existing file's mode. */
export async function applyPlan(plan: Plan): Promise<void> {
  for (const f of plan.files) {
    if (f.before !== undefined && f.before === f.after) continue;
    const target = f.before === undefined ? f.path : await realpath(f.path);
    const mode = f.before === undefined ? 0o644 : (await stat(target)).mode & 0o7777;
    await mkdir(dirname(target), { recursive: true }).catch((err: NodeJS.ErrnoException) => {
      throw new ConfigureError(`cannot create ${dirname(target)}: ${err.code ?? err.message}`);
    });
    const tmp = join(dirname(target), `.${randomBytes(6).toString('hex')}.regmirror-tmp`);
    try {
      await writeFile(tmp, f.after, { mode });
      await rename(tmp, target);
    } catch (err) {
      await rm(tmp, { force: true });
      throw new ConfigureError(`cannot write ${target}: ${(err as NodeJS.ErrnoException).code ?? String(err)}`);
    }
  }
}

/** One line per file: created, updated (with what) or unchanged. */
export function describePlan(plan: Plan): string[] {
  return plan.files.map((f) => {
    if (f.before === undefined) return `created ${f.path}: ${f.changes.join('; ')}`;
    if (f.before === f.after) return `unchanged ${f.path}`;
    return `updated ${f.path}: ${f.changes.join('; ')}`;
  });
}

/** What --print shows: the file's content; several files each under a comment naming it. */
export function printPlan(plan: Plan): string {
  if (plan.files.length === 1) return plan.files[0].after;
  return plan.files.map((f) => `# ---- ${f.path}\n${f.after}`).join('\n');
}

export interface ConfigureFlags {
  mirror?: string;
  registries?: string;
  write?: string;
  print?: boolean;
  ca?: string;
}

/** `regmirror configure TARGET --mirror URL [...]`; stdout gets the files or the changes, stderr the notes. */
export async function configureCommand(flags: ConfigureFlags, args: string[], out: (s: string) => void = (s) => process.stdout.write(s), err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  const [target, ...extra] = args;
  if (!TARGETS.includes(target as Target)) throw new ConfigureError(`name what to configure: ${TARGETS.join(', ')} (got ${target === undefined ? 'nothing' : JSON.stringify(target)})`);
  if (extra.length) throw new ConfigureError(`unexpected argument ${JSON.stringify(extra[0])}`);
  if (!flags.mirror) throw new ConfigureError('--mirror URL is required (e.g. --mirror http://127.0.0.1:5000)');
  if (flags.write !== undefined && flags.print) throw new ConfigureError('--write and --print exclude each other');
  if (flags.write === '') throw new ConfigureError('--write needs a path');
  const mirror = parseMirror(flags.mirror);
  let ca: string | undefined;
  if (flags.ca !== undefined) {
    if (!mirror.secure) throw new ConfigureError('--ca only applies to an https:// mirror');
    ca = resolve(flags.ca);
    await stat(ca).catch(() => {
      throw new ConfigureError(`--ca ${flags.ca}: no such file`);
    });
  }
  const plan = await planConfigure({
    target: target as Target,
    mirror,
    registries: parseRegistries(flags.registries),
    ca,
    write: flags.write === undefined ? undefined : resolve(flags.write),
  });
  if (flags.write === undefined) {
    out(printPlan(plan));
  } else {
    await applyPlan(plan);
    out(describePlan(plan).join('\n') + '\n');
  }
  for (const n of plan.notes) err(`note: ${n}\n`);
  return 0;
}
