// Replicas announce themselves in the shared database, so that a process that shares it
// without being configured as a replica is refused at start-up instead of quietly
// downloading, evicting and revalidating beside the others as if it were alone.
import { hostname } from 'node:os';
import type { Logger } from '../log.js';
import type { Lease, LeaseStore } from '../store/leases.js';
import type { Replica } from './replica.js';

/** A replica that stopped announcing itself for this long is gone. */
const MEMBER_TTL_MS = 15_000;
const PREFIX = 'replica:';

interface Announcement {
  clustered: boolean;
  advertise?: string;
  host: string;
  pid: number;
}

export class ClusterConflict extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'ClusterConflict';
  }
}

/**
 * Announces this server and keeps announcing it until stop(). Throws ClusterConflict when
 * a live process already shares the database and either side has no `cluster` section.
 */
export async function joinMembers(leases: LeaseStore, replica: Replica, log: Logger): Promise<{ stop(): Promise<void> }> {
  const me: Announcement = { clustered: replica.advertise !== undefined, host: hostname(), pid: process.pid, ...(replica.advertise ? { advertise: replica.advertise } : {}) };
  const others = (await leases.list(PREFIX)).filter((l) => l.holder !== replica.id && !previousRun(l));
  const clash = others.find((l) => !me.clustered || !announcement(l)?.clustered);
  if (clash) {
    const other = announcement(clash);
    const who = other?.advertise ?? `a regmirror without cluster: on ${other?.host ?? 'another host'}`;
    throw new ClusterConflict(
      `another regmirror (${who}) shares this metadata database; replicas must all set cluster: (advertise, secret), or use a database of their own`,
    );
  }
  const key = `${PREFIX}${replica.id}`;
  const announce = () => leases.acquire(key, replica.id, MEMBER_TTL_MS, JSON.stringify(me));
  await announce();
  const timer = setInterval(() => announce().catch((err: Error) => log.warn('could not announce this replica', { err })), MEMBER_TTL_MS / 3);
  timer.unref();
  return {
    stop: async () => {
      clearInterval(timer);
      await leases.release(key, replica.id).catch(() => undefined);
    },
  };
}

function announcement(l: Lease): Announcement | undefined {
  try {
    return l.data ? (JSON.parse(l.data) as Announcement) : undefined;
  } catch {
    return undefined;
  }
}

/**
 * A process of this host that is no longer running (a container restarted in its pod has
 * the same host name, and often the same pid): its announcement outlives it by up to the TTL.
 */
function previousRun(l: Lease): boolean {
  const a = announcement(l);
  if (!a || a.host !== hostname()) return false;
  if (a.pid === process.pid) return true;
  try {
    process.kill(a.pid, 0);
    return false;
  } catch (err) {
    return (err as NodeJS.ErrnoException).code === 'ESRCH';
  }
}
