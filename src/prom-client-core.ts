// The parts of prom-client regmirror uses, loaded from its lib files. The package index also
// loads the Pushgateway client (and with it an HTTP agent stack), the Summary's t-digest and
// the cluster aggregator, none of which a mirror uses. Types still come from 'prom-client'.
import { createRequire } from 'node:module';
import type * as Prom from 'prom-client';

const load = createRequire(import.meta.url);

export const Registry = load('prom-client/lib/registry.js') as typeof Prom.Registry;
export type Registry = Prom.Registry;
export const Counter = load('prom-client/lib/counter.js') as typeof Prom.Counter;
export type Counter<T extends string = string> = Prom.Counter<T>;
export const Gauge = load('prom-client/lib/gauge.js') as typeof Prom.Gauge;
export type Gauge<T extends string = string> = Prom.Gauge<T>;

/**
 * prom-client's default metrics, registered one module at a time. Its collectDefaultMetrics
 * also loads processCpuTotal, which requires the OpenTelemetry API (about 6 MiB resident, for
 * exemplars a mirror never sets); the CPU counters here are the same three without it.
 */
const DEFAULT_METRICS = [
  'processStartTime', 'osMemoryHeap', 'processOpenFileDescriptors', 'processMaxFileDescriptors', 'eventLoopLag',
  'processResources', 'processHandles', 'processRequests', 'heapSizeAndUsed', 'heapSpacesSizeAndUsed', 'version', 'gc',
];

type DefaultMetric = (registry: Prom.Registry, config: Prom.DefaultMetricsCollectorConfiguration<Prom.RegistryContentType>) => void;

export function collectDefaultMetrics(config: { register: Prom.Registry; prefix: string }): void {
  const options = { eventLoopMonitoringPrecision: 10, ...config };
  for (const name of DEFAULT_METRICS) (load(`prom-client/lib/metrics/${name}.js`) as DefaultMetric)(config.register, options);
  processCpu(config.register, config.prefix);
}

/** process_cpu_{user,system}_seconds_total and process_cpu_seconds_total, as prom-client names them. */
function processCpu(registry: Prom.Registry, prefix: string): void {
  let last = process.cpuUsage();
  const counter = (name: string, help: string, collect?: () => void) =>
    new Counter({ name: `${prefix}process_cpu_${name}`, help, registers: [registry], collect });
  const system = counter('system_seconds_total', 'Total system CPU time spent in seconds.');
  const total = counter('seconds_total', 'Total user and system CPU time spent in seconds.');
  // One counter's collect() sets all three, so they come from the same reading.
  const user = counter('user_seconds_total', 'Total user CPU time spent in seconds.', () => {
    const now = process.cpuUsage();
    user.inc((now.user - last.user) / 1e6);
    system.inc((now.system - last.system) / 1e6);
    total.inc((now.user - last.user + now.system - last.system) / 1e6);
    last = now;
  });
}
