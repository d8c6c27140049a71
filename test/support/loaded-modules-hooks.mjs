// Loader hooks of loaded-modules.mjs: each ES module's URL, written as it loads.
import { appendFileSync } from 'node:fs';

/** @type {string} */
let out = '';

/** @param {{ out: string }} data */
export function initialize(data) {
  out = data.out;
}

/**
 * @param {string} url
 * @param {object} context
 * @param {(url: string, context: object) => Promise<unknown>} next
 */
export async function load(url, context, next) {
  appendFileSync(out, `esm ${url}\n`);
  return next(url, context);
}
