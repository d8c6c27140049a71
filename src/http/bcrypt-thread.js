// The body of the bcrypt worker (see bcrypt-worker.ts): compares a password with an
// htpasswd hash, one message at a time. bcrypt is slow on purpose; here it slows no
// request but the one being checked. Plain JavaScript so a worker loads it as it is.
import bcrypt from 'bcryptjs';
import { parentPort } from 'node:worker_threads';

/** @typedef {{ id: number, password: string, hash: string }} CompareRequest */

parentPort?.on('message', (/** @type {CompareRequest} */ m) => {
  let ok = false;
  try {
    ok = bcrypt.compareSync(m.password, m.hash);
  } catch {
    // A malformed hash matches nothing.
  }
  parentPort?.postMessage({ id: m.id, ok });
});
