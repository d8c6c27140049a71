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
export const collectDefaultMetrics = load('prom-client/lib/defaultMetrics.js') as typeof Prom.collectDefaultMetrics;
