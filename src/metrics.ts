// Prometheus metrics (prom-client), one registry per server so tests can run several.
// Labels are bounded sets (route kind, status, upstream name, cache result): never a
// repository, a digest or anything a client can choose freely.
import { Counter, Gauge, Registry, collectDefaultMetrics } from './prom-client-core.js';

export type CacheResult = 'hit' | 'miss' | 'revalidated' | 'stale' | 'head';

/** The counters and gauges regmirror exports at /metrics. */
export class Metrics {
  readonly registry = new Registry();
  readonly requests = new Counter({
    name: 'regmirror_http_requests_total',
    help: 'Client requests by route kind, method, status sent and result (complete, or aborted: the body was cut)',
    labelNames: ['route', 'method', 'status', 'result'] as const,
    registers: [this.registry],
  });
  readonly cache = new Counter({
    name: 'regmirror_cache_results_total',
    help: 'Manifest and blob answers by cache result',
    labelNames: ['kind', 'result'] as const,
    registers: [this.registry],
  });
  readonly bytes = new Counter({
    name: 'regmirror_blob_bytes_served_total',
    help: 'Blob bytes sent to clients, by where they came from (redirect: the client was sent to the store for them)',
    labelNames: ['source'] as const,
    registers: [this.registry],
  });
  readonly blobRedirects = new Counter({
    name: 'regmirror_blob_redirects_total',
    help: 'Blob GETs answered with a 307 to the store (storage.redirect); each is also a cache hit',
    registers: [this.registry],
  });
  readonly upstreamRequests = new Counter({
    name: 'regmirror_upstream_requests_total',
    help: 'Requests sent to upstreams, by upstream, kind (manifest_get is what Docker Hub counts) and status',
    labelNames: ['upstream', 'kind', 'status'] as const,
    registers: [this.registry],
  });
  readonly egressRefused = new Counter({
    name: 'regmirror_upstream_egress_refused_total',
    help: 'Connections an upstream led to (redirect, token realm) and the mirror refused, by the kind of address',
    labelNames: ['upstream', 'address'] as const,
    registers: [this.registry],
  });
  readonly parentFallbacks = new Counter({
    name: 'regmirror_parent_fallbacks_total',
    help: 'Requests the parent mirror failed (unreachable, 5xx) that were sent to the upstream itself, by upstream',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  readonly stale = new Counter({
    name: 'regmirror_stale_served_total',
    help: 'Cached tags served without a successful revalidation, by reason',
    labelNames: ['upstream', 'reason'] as const,
    registers: [this.registry],
  });
  readonly evictionPasses = new Counter({
    name: 'regmirror_eviction_passes_total',
    help: 'Eviction passes the store being over its high watermark called for: ran, held_elsewhere (another replica holds the evictor lease) or unavailable (the database)',
    labelNames: ['result'] as const,
    registers: [this.registry],
  });
  readonly evictionStuck = new Counter({
    name: 'regmirror_eviction_stuck_total',
    help: 'Eviction passes that ended with the store still over its high watermark: what is left is pinned or in use',
    registers: [this.registry],
  });
  readonly evictions = new Counter({
    name: 'regmirror_evicted_blobs_total',
    help: 'Blobs removed to keep the store under its size limit',
    registers: [this.registry],
  });
  readonly verifyFailures = new Counter({
    name: 'regmirror_verify_failures_total',
    help: 'Stored blobs found not to match their digest',
    registers: [this.registry],
  });
  readonly digestMismatches = new Counter({
    name: 'regmirror_blob_digest_mismatches_total',
    help: 'Blob downloads whose content did not match its digest (the digest is then refused for a minute without asking the upstream)',
    registers: [this.registry],
  });
  readonly metadataFlushFailures = new Counter({
    name: 'regmirror_metadata_flush_failures_total',
    help: 'Batched metadata writes (access times, roll-ups) that failed and were kept for the next try (database locked by another process, disk full)',
    registers: [this.registry],
  });
  readonly metadataUnavailable = new Counter({
    name: 'regmirror_metadata_unavailable_total',
    help: 'Metadata operations met with an unreachable database: reads answered from memory or as a miss, writes queued, writes dropped (queue full)',
    labelNames: ['what'] as const,
    registers: [this.registry],
  });
  readonly passThrough = new Counter({
    name: 'regmirror_passthrough_total',
    help: 'Blob downloads streamed to clients without caching (store write failed, e.g. disk full)',
    registers: [this.registry],
  });
  readonly uncaught = new Counter({
    name: 'regmirror_uncaught_errors_total',
    help: 'Errors no request handler caught (logged, and the process kept serving), by kind',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly events = new Counter({
    name: 'regmirror_events_total',
    help: 'Events recorded, by kind (every occurrence, also those a flood folded into one stored row)',
    labelNames: ['kind'] as const,
    registers: [this.registry],
  });
  readonly eventsDropped = new Counter({
    name: 'regmirror_events_dropped_total',
    help: 'Events lost: the webhook queue was full (the oldest go first), or the database was unreachable for longer than the recorder keeps rows (where = webhook, store)',
    labelNames: ['where'] as const,
    registers: [this.registry],
  });
  readonly webhookFailures = new Counter({
    name: 'regmirror_events_webhook_failures_total',
    help: 'Webhook deliveries that failed and will be tried again (receiver unreachable, timed out, or answered other than 2xx)',
    registers: [this.registry],
  });
  readonly signatureChecks = new Counter({
    name: 'regmirror_signature_checks_total',
    help: 'Manifests answered under a signature policy, by mode (enforce, warn) and result (verified, refused, unverified: served under warn)',
    labelNames: ['mode', 'result'] as const,
    registers: [this.registry],
  });
  readonly signatureVerifications = new Counter({
    name: 'regmirror_signature_verifications_total',
    help: 'Cryptographic signature verifications run (one per signature and key tried); a warm pull runs none',
    registers: [this.registry],
  });
  readonly rateLimitRemaining = new Gauge({
    name: 'regmirror_upstream_ratelimit_remaining',
    help: 'Pulls left in the upstream rate-limit window, as the upstream last reported',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  readonly rateLimitLimit = new Gauge({
    name: 'regmirror_upstream_ratelimit_limit',
    help: 'Pulls allowed per rate-limit window, as the upstream last reported',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });
  readonly rateLimitFloor = new Gauge({
    name: 'regmirror_upstream_ratelimit_floor',
    help: 'The upstream\'s budgetFloor: at or under it, stale tags are served as cached instead of revalidated (0: no floor)',
    labelNames: ['upstream'] as const,
    registers: [this.registry],
  });

  constructor(opts: { defaultMetrics?: boolean } = {}) {
    if (opts.defaultMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'regmirror_' });
  }

  /** A gauge whose value is read when /metrics is scraped. */
  gauge(name: string, help: string, read: () => number | Promise<number>): void {
    new Gauge({
      name,
      help,
      registers: [this.registry],
      async collect() {
        try {
          this.set(await read());
        } catch {
          // The last value stays: /metrics answers while the database is down.
        }
      },
    });
  }

  /** A gauge per upstream whose values are read when /metrics is scraped. */
  upstreamGauge(name: string, help: string, read: () => Array<[upstream: string, value: number]>): void {
    new Gauge({
      name,
      help,
      labelNames: ['upstream'],
      registers: [this.registry],
      collect() {
        for (const [upstream, value] of read()) this.set({ upstream }, value);
      },
    });
  }
}
