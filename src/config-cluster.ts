// The cluster section: what makes several regmirror processes one cache. Each replica
// says where the others reach it (advertise) and proves itself to them with the secret
// every replica of the cluster shares.
import { ConfigError, checkUrl, known, listenAddress, obj, secret, str } from './config-values.js';

export interface ClusterConfig {
  /** This replica's URL as the others reach it (the peer endpoint is under it). */
  advertise: string;
  /** Shared by every replica: signs peer requests. */
  secret: string;
  /** A listener of its own for the peer endpoint; unset, it shares the main listener. */
  listen?: { host: string; port: number };
}

/** Below this a shared HMAC key is guessable; 32 random bytes in base64 are 44 characters. */
const MIN_SECRET_LENGTH = 16;

export function parseCluster(v: unknown, env: NodeJS.ProcessEnv): ClusterConfig {
  const o = obj(v, 'cluster');
  known(o, 'cluster.', ['advertise', 'secret', 'listen']);
  if (o.advertise === undefined) throw new ConfigError('cluster.advertise', 'required: this replica\'s URL as the other replicas reach it (http://10.0.0.5:5000)');
  if (o.secret === undefined) throw new ConfigError('cluster.secret', 'required: the secret every replica of the cluster shares (${REGMIRROR_CLUSTER_SECRET} or file:)');
  const advertise = str(o.advertise, 'cluster.advertise', env).replace(/\/+$/, '');
  checkUrl(advertise, 'cluster.advertise');
  const host = new URL(advertise).hostname;
  if (host === '0.0.0.0' || host === '[::]') throw new ConfigError('cluster.advertise', 'must be an address the other replicas can connect to, not a wildcard');
  const key = secret(o.secret, 'cluster.secret', env);
  if (key.length < MIN_SECRET_LENGTH) throw new ConfigError('cluster.secret', `must be at least ${MIN_SECRET_LENGTH} characters (e.g. openssl rand -base64 32)`);
  const out: ClusterConfig = { advertise, secret: key };
  if (o.listen !== undefined && o.listen !== null) out.listen = listenAddress(str(o.listen, 'cluster.listen', env), 'cluster.listen');
  return out;
}
