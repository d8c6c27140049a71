// regmirror registers prom-client's default metrics one module at a time (to leave out the
// OpenTelemetry API, see src/prom-client-core.ts). Dashboards and alerts are written against
// prom-client's names, so the set must stay exactly what collectDefaultMetrics registers, and
// the CPU counters must count this process's CPU time.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import * as prom from 'prom-client';
import { Metrics } from '../src/metrics.js';

/** Metric names (without `# HELP`/`# TYPE` lines) and their sample values, from an exposition. */
function samples(text: string): Map<string, number> {
  const out = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line || line.startsWith('#')) continue;
    const [name, value] = [line.slice(0, line.lastIndexOf(' ')), Number(line.slice(line.lastIndexOf(' ') + 1))];
    out.set(name, value);
  }
  return out;
}

function families(registry: prom.Registry): Promise<string[]> {
  return registry.getMetricsAsJSON().then((ms) => ms.map((m) => m.name).filter((n) => n.startsWith('regmirror_process_') || n.startsWith('regmirror_nodejs_')).sort());
}

test('the default metrics are the ones prom-client collectDefaultMetrics registers', async () => {
  const reference = new prom.Registry();
  prom.collectDefaultMetrics({ register: reference, prefix: 'regmirror_' });
  const ours = new Metrics({ defaultMetrics: true });
  assert.deepEqual(await families(ours.registry), await families(reference));
  assert.ok((await families(ours.registry)).includes('regmirror_process_cpu_seconds_total'));
});

test('the CPU counters grow with the CPU time this process spends', async () => {
  const ours = new Metrics({ defaultMetrics: true });
  const before = samples(await ours.registry.metrics());
  // Busy until this process has spent 300 ms of user CPU (the wall time depends on the load).
  const start = process.cpuUsage().user;
  let x = 0;
  while (process.cpuUsage().user - start < 300_000) for (let i = 0; i < 1e5; i++) x += Math.sqrt(x + 1);
  assert.ok(x > 0);
  const after = samples(await ours.registry.metrics());
  const user = after.get('regmirror_process_cpu_user_seconds_total')! - (before.get('regmirror_process_cpu_user_seconds_total') ?? 0);
  const total = after.get('regmirror_process_cpu_seconds_total')! - (before.get('regmirror_process_cpu_seconds_total') ?? 0);
  const system = after.get('regmirror_process_cpu_system_seconds_total')! - (before.get('regmirror_process_cpu_system_seconds_total') ?? 0);
  assert.ok(user >= 0.2, `user CPU counted: ${user}`);
  assert.ok(Math.abs(total - user - system) < 1e-6, `total = user + system: ${total} vs ${user} + ${system}`);
});
