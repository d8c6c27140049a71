// How far V8 lets the old generation grow past the live heap before its next full GC.
// Left to itself V8 picks a factor of up to 4 when allocation is fast next to marking:
// under 256 connections a `serve` process with ~22 MiB live grew its old generation to
// ~80 MiB, and that slack was the largest part of its peak RSS. At 2 the same load
// peaked ~40 MiB lower for the same CPU per request; at 1.5, 50 MiB lower, but a warm
// pull of 2,000 images then ran 30 % slower, since a heap still filling with rows and
// manifests is marked each time it grows by half (docs/architecture.md, Memory). V8
// reads the factor at each GC, so it is set from here, after start-up; node does not
// accept this flag in NODE_OPTIONS.
import { setFlagsFromString } from 'node:v8';

/** A setting from the environment that is not one. */
export class EnvironmentError extends Error {}

/** `serve`'s factor as V8's percent (2 ×) unless REGMIRROR_HEAP_GROWING_PERCENT says otherwise. */
export const DEFAULT_HEAP_GROWING_PERCENT = 100;
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
