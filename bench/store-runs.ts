// What bench/startup.ts and bench/evict.ts both do with a filled store: the config that
// points serve, gc and eviction at it, and one eviction pass timed in this process.
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { openCache } from '../src/cli/context.js';
import { loadConfig } from '../src/config.js';
import { createLogger } from '../src/log.js';

/** A config on `dataDir` with the given `storage:` lines and an upstream nothing listens on. */
export function configText(dataDir: string, storage: string, logLevel = 'info'): string {
  return `listen: "127.0.0.1:0"\ndataDir: ${dataDir}\nlog:\n  level: ${logLevel}\nstorage:\n${storage}defaultUpstream: docker.io\nupstreams:\n  docker.io:\n    url: http://127.0.0.1:9\n`;
}

/**
 * One eviction pass, in this process, with a limit that puts the store over its high
 * watermark and the low one at 90 %. `around` wraps the pass (a profiler, say).
 */
export async function evictOnce(
  dir: string,
  dataDir: string,
  bytes: number,
  around: <T>(pass: () => Promise<T>) => Promise<T> = (pass) => pass(),
): Promise<{ s: number; cpu: number; removed: number }> {
  const config = join(dir, 'evict.yaml');
  await writeFile(config, configText(dataDir, `  maxSize: ${bytes}\n  highWatermark: 95\n  lowWatermark: 90\n`));
  const ctx = await openCache(loadConfig(config), { log: createLogger('warn') });
  try {
    const cpu0 = process.cpuUsage();
    const t0 = performance.now();
    const { removed } = await around(() => ctx.evictor!.run());
    const cpu = process.cpuUsage(cpu0);
    return { s: (performance.now() - t0) / 1000, cpu: (cpu.user + cpu.system) / 1e6, removed };
  } finally {
    await ctx.close();
  }
}
