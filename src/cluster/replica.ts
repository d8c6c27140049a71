// Who this process is to the others sharing its metadata: the holder named in the leases
// it takes, and (in a cluster) the URL where the others reach its peer endpoint.
import { randomBytes } from 'node:crypto';
import { hostname } from 'node:os';

export interface Replica {
  /** Unique to this process's run: a restarted process is a new holder. */
  readonly id: string;
  /** This replica's URL for the others; unset outside a cluster. */
  readonly advertise?: string;
}

export function newReplica(advertise?: string): Replica {
  const id = `${hostname()}/${process.pid}/${randomBytes(4).toString('hex')}`;
  return advertise === undefined ? { id } : { id, advertise };
}
