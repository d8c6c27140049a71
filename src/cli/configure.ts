// `regmirror configure`: points a client at a regmirror by writing (or printing) its own
// configuration, merged into the files it already has (see client-config.ts). It plans
// every file first, touches nothing until the plan is whole, and writes by rename.
import { mkdir, readFile, rename, stat, writeFile, realpath, rm } from 'node:fs/promises';
import { dirname, join, resolve } from 'node:path';
import { randomBytes } from 'node:crypto';
import {
  ConfigureError,
  containerdHostsToml,
  DEFAULT_PATHS,
  dockerDaemonJson,
  k3sRegistriesYaml,
  parseMirror,
  parseRegistries,
  podmanRegistriesConf,
  TARGETS,
  type Edit,
  type Mirror,
  type Target,
} from './client-config.js';
import { loadConfig, type Config } from '../config.js';
import { q } from './toml-sections.js';

export * from './client-config.js';

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
  config?: string;
}

/** What a mirror's own config says: its URL (from `listen`, `tls`) and the registries it serves. */
function fromConfig(config: Config): { mirror: string; registries: string; notes: string[] } {
  const { host, port } = config.listen;
  const wildcard = host === '0.0.0.0' || host === '::' || host === '';
  const shown = wildcard ? '127.0.0.1' : host.includes(':') ? `[${host}]` : host;
  const mirror = `${config.tls ? 'https' : 'http'}://${shown}:${port}`;
  const names = config.upstreams.flatMap((u) => [u.name, ...u.aliases]);
  // An upstream named as a route (no host name) cannot be a client's registry.
  const registries = [...new Set(names.map((n) => n.toLowerCase()).filter((n) => /^[a-z0-9]([a-z0-9.-]*[a-z0-9])?(:[0-9]{1,5})?$/.test(n) && (n.includes('.') || n.includes(':') || n === 'localhost')))];
  if (registries.length === 0) throw new ConfigureError('the config names no upstream by a registry host name (such as ghcr.io): pass --registries');
  const notes = wildcard ? [`listen is ${host}:${port} (every address): the mirror is given as ${mirror}; on another machine pass --mirror http://HOST:${port}`] : [];
  return { mirror, registries: registries.join(','), notes };
}

/** `regmirror configure TARGET --mirror URL [...]`; stdout gets the files or the changes, stderr the notes. */
export async function configureCommand(flags: ConfigureFlags, args: string[], out: (s: string) => void = (s) => process.stdout.write(s), err: (s: string) => void = (s) => process.stderr.write(s)): Promise<number> {
  const [target, ...extra] = args;
  if (!TARGETS.includes(target as Target)) throw new ConfigureError(`name what to configure: ${TARGETS.join(', ')} (got ${target === undefined ? 'nothing' : JSON.stringify(target)})`, true);
  if (extra.length) throw new ConfigureError(`unexpected argument ${JSON.stringify(extra[0])}`, true);
  const configured = flags.config === undefined ? undefined : fromConfig(loadConfig(flags.config, process.env, { secrets: 'storage' }));
  if (configured) flags = { ...flags, mirror: flags.mirror ?? configured.mirror, registries: flags.registries ?? configured.registries };
  if (!flags.mirror) throw new ConfigureError('--mirror URL is required (e.g. --mirror http://127.0.0.1:5000), or --config mirror.yaml', true);
  if (flags.write !== undefined && flags.print) throw new ConfigureError('--write and --print exclude each other', true);
  if (flags.write === '') throw new ConfigureError('--write needs a path', true);
  const mirror = parseMirror(flags.mirror);
  let ca: string | undefined;
  if (flags.ca !== undefined) {
    if (!mirror.secure) throw new ConfigureError('--ca only applies to an https:// mirror', true);
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
  for (const n of [...(configured?.notes ?? []), ...plan.notes]) err(`note: ${n}\n`);
  return 0;
}
