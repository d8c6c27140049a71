// Repository globs as the config writes them (`library/*`, `myorg/**`): `*` stays within
// one path component, `**` crosses them. Used by access rules and by policies alike.

export function globMatcher(globs: string[]): (repository: string) => boolean {
  const res = globs.map((g) => new RegExp('^' + g.split('**').map((part) => part.split('*').map(escape).join('[^/]*')).join('.*') + '$'));
  return (repository) => res.some((re) => re.test(repository));
}

function escape(s: string): string {
  return s.replace(/[.+?^${}()|[\]\\]/g, '\\$&');
}
