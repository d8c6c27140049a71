// The .deb: the staged tree under /usr/lib/regmirror, a /usr/bin link, the packaged unit,
// /etc/regmirror/mirror.yaml as a conffile, and the maintainer scripts of deploy/debian.
import { execFileSync } from 'node:child_process';
import { chmod, copyFile, cp, mkdir, readFile, rm, symlink, writeFile } from 'node:fs/promises';
import { join } from 'node:path';

export interface DebInput {
  root: string;
  /** The staged regmirror-<version>/ tree, as in the tarball. */
  stage: string;
  out: string;
  version: string;
  /** Debian's name for the architecture: amd64, arm64. */
  arch: string;
  description: string;
}

const CONFIG = '/etc/regmirror/mirror.yaml';
const DATA = '/var/lib/regmirror';

/**
 * deploy/systemd/regmirror.service made fit for the package: the packaged launcher, and a
 * static system user (postinst creates it) in place of DynamicUser, so the cache keeps one
 * owner that `ls -l` can name. Each replacement must match: a drift in the source unit
 * fails packaging instead of shipping a unit half adapted.
 */
export function packagedUnit(source: string): string {
  const header = [
    '# regmirror as a systemd service, as installed by the regmirror .deb (or by unpacking the',
    '# tarball into /usr/lib/regmirror, linking /usr/bin/regmirror to its bin/regmirror and',
    '# adding a system user regmirror). The config is /etc/regmirror/mirror.yaml; the cache',
    `# lives in ${DATA}. Start it with: systemctl enable --now regmirror`,
    '#',
    '# Upstream credentials: put DOCKERHUB_USERNAME=… and DOCKERHUB_TOKEN=… in',
    '# /etc/regmirror/env (mode 0600) and reference them as ${DOCKERHUB_TOKEN} in mirror.yaml.',
    '',
    '',
  ].join('\n');
  const edits: Array<[RegExp, string]> = [
    [/^(#.*\n|\n)*(?=\[Unit\])/, header],
    [/^ExecStart=.*$/m, `ExecStart=/usr/bin/regmirror serve --config ${CONFIG}`],
    [/^# A transient unprivileged user;/m, '# The unprivileged system user the package creates;'],
    [/^DynamicUser=yes$/m, 'User=regmirror\nGroup=regmirror'],
  ];
  let unit = source;
  for (const [from, to] of edits) {
    if (!from.test(unit)) throw new Error(`deploy/systemd/regmirror.service no longer has ${from}: adapt scripts/deb.ts`);
    unit = unit.replace(from, to);
  }
  return unit;
}

/** mirror.example.yaml with the cache in the state directory the unit grants. */
export function packagedConfig(example: string): string {
  const from = /^dataDir: .*$/m;
  if (!from.test(example)) throw new Error('mirror.example.yaml has no top-level dataDir');
  return example.replace(from, `dataDir: ${DATA}`);
}

function control(input: DebInput, installedKiB: number): string {
  return [
    'Package: regmirror',
    `Version: ${input.version}`,
    `Architecture: ${input.arch}`,
    'Maintainer: regmirror maintainers <regmirror@localhost>',
    // The bundled node links only these; no nodejs package is needed.
    'Depends: libc6, libstdc++6, libgcc-s1',
    'Section: net',
    'Priority: optional',
    `Installed-Size: ${installedKiB}`,
    `Description: ${input.description}`,
    ' A pull-through caching proxy for OCI and Docker registries, with its own Node.js',
    ' runtime and production dependencies: installing it needs no network and no npm.',
    '',
  ].join('\n');
}

/** Builds regmirror_<version>_<arch>.deb into input.out; its path. */
export async function buildDeb(input: DebInput): Promise<string> {
  const tree = join(input.out, 'deb-root');
  await rm(tree, { recursive: true, force: true });
  await cp(input.stage, join(tree, 'usr/lib/regmirror'), { recursive: true, verbatimSymlinks: true });
  await mkdir(join(tree, 'usr/bin'), { recursive: true });
  await symlink('../lib/regmirror/bin/regmirror', join(tree, 'usr/bin/regmirror'));
  await mkdir(join(tree, 'lib/systemd/system'), { recursive: true });
  await copyFile(join(input.stage, 'share/regmirror/regmirror.service'), join(tree, 'lib/systemd/system/regmirror.service'));
  await mkdir(join(tree, 'etc/regmirror'), { recursive: true });
  await writeFile(join(tree, CONFIG.slice(1)), packagedConfig(await readFile(join(input.root, 'mirror.example.yaml'), 'utf8')));

  const debian = join(tree, 'DEBIAN');
  await mkdir(debian);
  const kib = Number(execFileSync('du', ['-sk', '--exclude=DEBIAN', tree], { encoding: 'utf8' }).split('\t')[0]);
  await writeFile(join(debian, 'control'), control(input, kib));
  await writeFile(join(debian, 'conffiles'), `${CONFIG}\n`);
  for (const script of ['postinst', 'prerm', 'postrm']) {
    await copyFile(join(input.root, 'deploy/debian', script), join(debian, script));
    await chmod(join(debian, script), 0o755);
  }
  const deb = join(input.out, `regmirror_${input.version}_${input.arch}.deb`);
  // gzip: xz would take minutes over the node binary for a few MiB less.
  execFileSync('dpkg-deb', ['--build', '--root-owner-group', '-Zgzip', tree, deb], { stdio: 'inherit' });
  await rm(tree, { recursive: true, force: true });
  return deb;
}
