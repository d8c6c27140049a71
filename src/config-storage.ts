// The storage section of the config: eviction bounds, background verification, and where
// published blobs live (the data dir's file store, or an S3 bucket).
import { ConfigError, bool, checkUrl, duration, known, nonBlank, obj, oneOf, size, str } from './config-values.js';

/** An S3 bucket (AWS or a compatible store) for published blobs; credentials come from the AWS chain, never from the file. */
export interface S3StorageConfig {
  bucket: string;
  /** Keys start with `<prefix>/`; empty: at the bucket's root. */
  prefix: string;
  /** Unset: the AWS chain's (AWS_REGION, the profile), or us-east-1 with an endpoint. */
  region?: string;
  /** A store other than AWS (Ceph RGW, MinIO): its URL. */
  endpoint?: string;
  /** Bucket in the path, not the host name. */
  forcePathStyle: boolean;
}

export interface StorageConfig {
  /** Bytes the store may hold, or a share of its file system (`{ percent }`); 0: no limit. */
  maxSize: number | { percent: number };
  /** Eviction starts above this share of maxSize (percent)… */
  highWatermark: number;
  /** …and removes least-recently-used blobs until the store is under this share. */
  lowWatermark: number;
  /** Re-hash every blob this often in the background; 0: never. */
  verifyEveryMs: number;
  /** Where published blobs live: `fs` in the data dir, or `s3` (then `s3` says where). The spool stays in the data dir. */
  backend: 'fs' | 's3';
  s3?: S3StorageConfig;
  /** Warm blob GETs answered with a 307 to a short-lived URL of the store (s3 only) instead of streamed through. */
  redirect: boolean;
  /** How long an evicted blob's bytes stay after its rows went; unset: by backend (deleteGraceOf). */
  deleteGraceMs?: number;
}

/**
 * The grace the config gives, or the backend's. On a file system outside a cluster every
 * reader is in this process and the evictor sees it, so nothing need wait. A bucket may be
 * shared by replicas whose readers the evictor cannot see: 5 minutes lets a client that
 * started a pull just before the eviction finish a large layer at modest speed (1 GiB at
 * 4 MB/s), for the price of the bucket holding what was evicted that much longer.
 */
export function deleteGraceOf(s: StorageConfig): number {
  return s.deleteGraceMs ?? (s.backend === 's3' ? DEFAULT_S3_DELETE_GRACE_MS : 0);
}

const DEFAULT_S3_DELETE_GRACE_MS = 5 * 60_000;

export function parseStorage(v: unknown, d: StorageConfig, env: NodeJS.ProcessEnv): StorageConfig {
  const o = obj(v, 'storage');
  known(o, 'storage.', ['maxSize', 'highWatermark', 'lowWatermark', 'verifyEvery', 'backend', 's3', 'redirect', 'deleteGrace']);
  const pct = (x: unknown, key: string) => {
    if (typeof x !== 'number' || x <= 0 || x > 100) throw new ConfigError(key, 'must be a percentage from 1 to 100');
    return x;
  };
  const backend = o.backend === undefined ? d.backend : oneOf(o.backend, 'storage.backend', ['fs', 's3'] as const);
  const s: StorageConfig = {
    maxSize: o.maxSize === undefined ? d.maxSize : typeof o.maxSize === 'string' && o.maxSize.trim().endsWith('%') ? { percent: pct(Number(o.maxSize.trim().slice(0, -1)), 'storage.maxSize') } : size(o.maxSize, 'storage.maxSize'),
    highWatermark: o.highWatermark === undefined ? d.highWatermark : pct(o.highWatermark, 'storage.highWatermark'),
    lowWatermark: o.lowWatermark === undefined ? d.lowWatermark : pct(o.lowWatermark, 'storage.lowWatermark'),
    verifyEveryMs: o.verifyEvery === undefined ? d.verifyEveryMs : duration(o.verifyEvery, 'storage.verifyEvery'),
    backend,
    redirect: o.redirect === undefined ? d.redirect : bool(o.redirect, 'storage.redirect'),
  };
  // Only a bucket can hand a client a URL of its own; a file store has nothing to point at.
  if (s.redirect && backend !== 's3') throw new ConfigError('storage.redirect', 'needs storage.backend: s3');
  if (o.deleteGrace !== undefined && o.deleteGrace !== null) s.deleteGraceMs = duration(o.deleteGrace, 'storage.deleteGrace');
  if (s.lowWatermark >= s.highWatermark) throw new ConfigError('storage.lowWatermark', 'must be below storage.highWatermark');
  if (backend === 's3') {
    if (o.s3 === undefined || o.s3 === null) throw new ConfigError('storage.s3', 'required with storage.backend: s3 (at least a bucket)');
    s.s3 = s3Storage(o.s3, env);
    if (typeof s.maxSize === 'object') throw new ConfigError('storage.maxSize', 'a bucket has no size to take a share of; give bytes (500GiB) or 0');
  } else if (o.s3 !== undefined && o.s3 !== null) {
    throw new ConfigError('storage.s3', 'is only read with storage.backend: s3');
  }
  return s;
}

function s3Storage(v: unknown, env: NodeJS.ProcessEnv): S3StorageConfig {
  const o = obj(v, 'storage.s3');
  known(o, 'storage.s3.', ['bucket', 'prefix', 'region', 'endpoint', 'forcePathStyle']);
  if (o.bucket === undefined) throw new ConfigError('storage.s3.bucket', 'required');
  const bucket = nonBlank(str(o.bucket, 'storage.s3.bucket', env), 'storage.s3.bucket');
  // S3's own rule, checked here so that a typo fails at start-up, not at the first write.
  if (!/^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$/.test(bucket)) throw new ConfigError('storage.s3.bucket', 'is not a bucket name (3–63 lower-case letters, digits, dots and hyphens)');
  const out: S3StorageConfig = {
    bucket,
    prefix: o.prefix === undefined || o.prefix === null ? '' : str(o.prefix, 'storage.s3.prefix', env).replace(/^\/+|\/+$/g, ''),
    forcePathStyle: o.forcePathStyle === undefined ? false : bool(o.forcePathStyle, 'storage.s3.forcePathStyle'),
  };
  if (o.region !== undefined && o.region !== null) out.region = nonBlank(str(o.region, 'storage.s3.region', env), 'storage.s3.region');
  if (o.endpoint !== undefined && o.endpoint !== null) {
    out.endpoint = str(o.endpoint, 'storage.s3.endpoint', env);
    checkUrl(out.endpoint, 'storage.s3.endpoint');
  }
  return out;
}
