// `BENCH_ONLY=signatures npm run bench`: warm manifest GETs by tag through a regmirror
// with an enforce signature policy and, at the same time, through one with no policy.
// A warm pull under a policy is one verdict lookup in memory, so the target is ≥ 0.9×.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { request } from 'undici';
import { singleImage } from '../fixtures/images.js';
import { generateKey, signLegacy, writePublicKey } from '../fixtures/signing.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { CONTAINERD_ACCEPT as ACCEPT, requestLoop, type LoopResult } from './load.js';
import { startRegmirror, type Proxy } from './peers.js';

export interface SignatureBenchOptions {
  entry: 'dist' | 'tsx';
  logLevel: string;
  durationMs: number;
  warmupMs: number;
  connections: number;
  rounds: number;
}

export interface SignatureBenchResult {
  enforce: LoopResult[];
  off: LoopResult[];
  /** The median over rounds of enforce req/s ÷ off req/s. */
  ratio: number;
}

export async function signatureScenario(o: SignatureBenchOptions): Promise<SignatureBenchResult> {
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-bench-sig-'));
  const up = await FakeUpstream.start({ auth: 'token', cdn: true });
  const proxies: Proxy[] = [];
  try {
    const img = await singleImage({ name: 'library/signed', tag: 'v1', seed: 'bench-signed' });
    up.addImage(img);
    const key = generateKey('ecdsa');
    signLegacy(up, img, key);
    const keyRef = await writePublicKey(key, join(dir, 'cosign.pub'));
    const policy = `policies:\n  - match: { repositories: ['library/*'] }\n    signatures: { mode: enforce, keys: [${JSON.stringify(keyRef)}] }\n`;
    const enforce = await startRegmirror({ upstreamUrl: up.url, logLevel: o.logLevel, entry: o.entry, extraConfig: () => policy });
    proxies.push(enforce);
    const off = await startRegmirror({ upstreamUrl: up.url, logLevel: o.logLevel, entry: o.entry });
    proxies.push(off);
    const path = `/v2/${img.name}/manifests/${img.tag}`;
    for (const p of proxies) {
      const r = await request(`${p.url}${path}`, { headers: { accept: ACCEPT } });
      await r.body.dump();
      if (r.statusCode !== 200) throw new Error(`${p.url}${path}: ${r.statusCode}`);
    }
    const result: SignatureBenchResult = { enforce: [], off: [], ratio: 0 };
    // Both loops run at the same time, half the connections each: whatever else the machine
    // is doing slows both alike, so their ratio is the per-request cost of the policy.
    const loop = (p: Proxy) => requestLoop(p.url, { connections: Math.max(1, o.connections >> 1), durationMs: o.durationMs, warmupMs: o.warmupMs, path, headers: { accept: ACCEPT } });
    for (let round = 0; round < o.rounds; round++) {
      const [e, f] = await Promise.all([loop(enforce), loop(off)]);
      result.enforce.push(e);
      result.off.push(f);
    }
    const ratios = result.enforce.map((e, i) => e.rps / result.off[i].rps).sort((a, b) => a - b);
    const mid = ratios.length >> 1;
    result.ratio = ratios.length % 2 ? ratios[mid] : (ratios[mid - 1] + ratios[mid]) / 2;
    return result;
  } finally {
    await Promise.all(proxies.map((p) => p.stop()));
    await up.close();
    await rm(dir, { recursive: true, force: true });
  }
}

export function formatSignatureBench(r: SignatureBenchResult): string {
  const line = (name: string, xs: LoopResult[]) => `  ${name.padEnd(22)} ${xs.map((x) => `${Math.round(x.rps)} req/s (p99 ${x.p99.toFixed(2)} ms${x.errors ? `, ${x.errors} errors` : ''})`).join(', ')}`;
  return [
    'warm manifest by tag, enforce vs policies off',
    line('enforce (legacy .sig)', r.enforce),
    line('policies off', r.off),
    `  ratio enforce/off: ${r.ratio.toFixed(3)} (target ≥ 0.9) ${r.ratio >= 0.9 ? 'ok' : 'BELOW TARGET'}`,
  ].join('\n');
}
