// The body of the hashing worker (see hash-worker.ts). It hashes temp files by reading
// them back from the page cache as they grow, plus any bytes sent to it that exist only
// in memory, and answers with the digest and size once told the blob is complete. Jobs
// interleave; each is handled in message order. Synchronous file reads are fine here:
// this thread does nothing else. Plain JavaScript (type-checked through JSDoc) so that
// a worker can load it as it is, from src/ under tsx as from dist/.
import { createHash } from 'node:crypto';
import { closeSync, openSync, readSync } from 'node:fs';
import { parentPort } from 'node:worker_threads';

/** @typedef {import('./hash-worker.js').HashRequest} HashRequest */
/** @typedef {import('./hash-worker.js').HashReply} HashReply */
/** @typedef {{ fd?: number, pos: number, size: number, hash: import('node:crypto').Hash, error?: string }} Job */

/** @type {Map<number, Job>} */
const jobs = new Map();
const buf = Buffer.allocUnsafe(1024 * 1024);

/** @param {Job} job @param {number} upTo */
function fromFile(job, upTo) {
  if (job.fd === undefined) throw new Error('no file to hash');
  while (job.pos < upTo) {
    const n = readSync(job.fd, buf, 0, Math.min(buf.length, upTo - job.pos), job.pos);
    if (n === 0) throw new Error(`temp file ends at ${job.pos}, expected ${upTo} bytes`);
    job.hash.update(n === buf.length ? buf : buf.subarray(0, n));
    job.pos += n;
    job.size += n;
  }
}

/** @param {number} id */
function release(id) {
  const job = jobs.get(id);
  jobs.delete(id);
  if (job?.fd !== undefined) closeSync(job.fd);
}

/** @param {HashRequest} msg */
function handle(msg) {
  if (msg.op === 'open') {
    /** @type {Job} */
    const job = { pos: 0, size: 0, hash: createHash('sha256') };
    jobs.set(msg.id, job);
    try {
      job.fd = openSync(msg.path, 'r');
    } catch (err) {
      job.error = /** @type {Error} */ (err).message;
    }
    return;
  }
  const job = jobs.get(msg.id);
  if (!job) return;
  if (msg.op === 'drop') return release(msg.id);
  if (msg.op === 'end') {
    /** @type {HashReply} */
    const reply = job.error ? { id: msg.id, error: job.error } : { id: msg.id, digest: `sha256:${job.hash.digest('hex')}`, size: job.size };
    release(msg.id);
    parentPort?.postMessage(reply);
    return;
  }
  if (job.error) return;
  try {
    if (msg.op === 'file') fromFile(job, msg.upTo);
    else {
      job.hash.update(msg.bytes);
      job.size += msg.bytes.byteLength;
    }
  } catch (err) {
    job.error = /** @type {Error} */ (err).message;
  }
}

parentPort?.on('message', handle);
