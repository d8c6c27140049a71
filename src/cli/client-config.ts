// The client configurations `regmirror configure` writes: containerd hosts.toml files,
// Docker's daemon.json, podman's registries.conf, k3s's registries.yaml, each generated
// and merged into what the operator already has. Existing files are merged, never overwritten:
// entries for this mirror (the same URL) are replaced, everything else the operator wrote
// is kept, and running the command twice changes nothing the second time.
//
// TOML is edited as text, section by section, so the operator's comments and layout
// survive; every edit is then checked by parsing the result and comparing it with the
// intended change to the parsed original, and nothing is written if the two differ.
import { isDeepStrictEqual } from 'node:util';
import { parse as parseToml } from 'smol-toml';
import { isMap, isScalar, isSeq, parseDocument } from 'yaml';
import { ConfigureError } from './configure-error.js';
import { fromLines, plain, q, sections, toLines, tomlParse, trailingBlanks, verify, type Section } from './toml-sections.js';

export { ConfigureError };

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
    throw new ConfigureError(`--mirror ${JSON.stringify(text)} is not a URL (e.g. http://mirror.example:5000)`, true);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') throw new ConfigureError('--mirror must be an http:// or https:// URL', true);
  if (u.username || u.password) throw new ConfigureError('--mirror must not carry credentials', true);
  if ((u.pathname !== '/' && u.pathname !== '') || u.search || u.hash) {
    throw new ConfigureError('--mirror takes scheme://host[:port] with no path (regmirror routes by ?ns= and by a path prefix it adds itself)', true);
  }
  const host = u.host;
  const name = u.hostname.replace(/^\[|\]$/g, '');
  const loopback = name === 'localhost' || /^127\.\d+\.\d+\.\d+$/.test(name) || name === '::1';
  return { url: `${u.protocol}//${host}`, host, secure: u.protocol === 'https:', loopback };
}

export function parseRegistries(text: string | undefined): string[] {
  if (text === undefined) return [...DEFAULT_REGISTRIES];
  const list = [...new Set(text.split(',').map((s) => s.trim().toLowerCase()).filter(Boolean))];
  if (list.length === 0) throw new ConfigureError('--registries names no registry', true);
  for (const r of list) {
    if (!/^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/.test(r)) throw new ConfigureError(`--registries: ${JSON.stringify(r)} is not a registry host name such as ghcr.io`, true);
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
