// Reading an upstream's answer: its headers (one value each, as the registry API uses
// them) and the OCI error code of an error body.
type Headers = Record<string, string | string[] | undefined>;

export function header(h: Headers, name: string): string | undefined {
  const v = h[name];
  return Array.isArray(v) ? v[0] : v;
}

export function numberHeader(h: Headers, name: string): number | undefined {
  const v = header(h, name);
  return v !== undefined && /^\d+$/.test(v) ? Number(v) : undefined;
}

export function mediaTypeOf(h: Headers): string | undefined {
  return header(h, 'content-type')?.split(';')[0].trim();
}

/** The code of the first error of an OCI error body, if it is one. */
export function ociCode(body: Buffer): string | undefined {
  try {
    return (JSON.parse(body.toString('utf8')) as { errors?: Array<{ code?: string }> }).errors?.[0]?.code;
  } catch {
    return undefined;
  }
}
