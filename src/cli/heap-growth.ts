// How far V8 lets the old generation grow past the live heap before its next full GC,
// when an operator bounds it. Left to itself V8 picks a factor of up to 4 when allocation
// is fast next to marking: on a machine with no memory limit, under 256 connections, a
// `serve` process with ~22 MiB live grew its old generation to ~80 MiB, and at 2 (100 %)
// it peaked ~40 MiB lower. That is not the default: in a pod, node sizes V8 from the
// memory limit and V8's own factor then peaked ~10 MiB lower than 100 % (for more CPU
// per request at 256 connections), and with no limit 100 % cost a cold pull 15–30 % more
// CPU (docs/architecture.md, Memory). V8 reads the factor at each GC, so it is set from
// here, after start-up; node does not accept this flag in NODE_OPTIONS.
import { setFlagsFromString } from 'node:v8';

/** A setting from the environment that is not one. */
export class EnvironmentError extends Error {}

/** 0: V8's own factor, unless REGMIRROR_HEAP_GROWING_PERCENT sets one (100 = grow to twice the live heap). */
export const DEFAULT_HEAP_GROWING_PERCENT = 0;
export const HEAP_GROWING_ENV = 'REGMIRROR_HEAP_GROWING_PERCENT';
const MAX_PERCENT = 300;

/** The percent to apply: 0 leaves V8's own heuristic. Throws EnvironmentError naming the variable when it is not a whole number in range. */
export function heapGrowingPercent(env: NodeJS.ProcessEnv = process.env): number {
  const raw = env[HEAP_GROWING_ENV];
  if (raw === undefined || raw === '') return DEFAULT_HEAP_GROWING_PERCENT;
  if (!/^\d+$/.test(raw) || Number(raw) > MAX_PERCENT) throw new EnvironmentError(`${HEAP_GROWING_ENV}=${JSON.stringify(raw)}: expected a whole number from 0 (V8's own choice) to ${MAX_PERCENT}`);
  return Number(raw);
}

export function applyHeapGrowing(env: NodeJS.ProcessEnv = process.env): void {
  const percent = heapGrowingPercent(env);
  if (percent > 0) setFlagsFromString(`--heap-growing-percent=${percent}`);
}
