// A PostgreSQL url as messages show it. Kept apart from connection.ts so that naming a
// database does not load the driver.

/** host:port/database of a postgres:// url: never its user or anything else. */
export function describeTarget(url: string): string {
  const u = new URL(url);
  return `${u.hostname}:${u.port || '5432'}${u.pathname}`;
}
