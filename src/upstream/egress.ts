// Where an upstream may send the mirror. Token realms and redirects come from upstream
// answers, so a hostile upstream could point them inward: cloud metadata on
// 169.254.169.254, an admin port on loopback, a database on 10/8. The rule, checked on
// every address the mirror is about to connect to (after DNS, so a public name that
// resolves inward is caught too): public addresses may be reached; link-local ones never;
// loopback and private ones only when the configured upstream itself is on that address
// or the host is one the operator listed (tokenRealms, redirectHosts).
import { lookup as dnsLookup, type LookupAddress, type LookupOptions } from 'node:dns';
import { BlockList, isIP } from 'node:net';
import type { buildConnector as Connector } from 'undici';
import { buildConnector } from './undici-core.js';
import { EgressRefused, type RestrictedAddress } from '../errors.js';

export type AddressKind = 'public' | RestrictedAddress;

function blockList(v4: Array<[string, number]>, v6: Array<[string, number]>): BlockList {
  const list = new BlockList();
  for (const [net, prefix] of v4) {
    list.addSubnet(net, prefix, 'ipv4');
    // The same addresses written IPv4-mapped (::ffff:169.254.169.254) reach the same hosts.
    list.addSubnet(`::ffff:${net}`, 96 + prefix, 'ipv6');
  }
  for (const [net, prefix] of v6) list.addSubnet(net, prefix, 'ipv6');
  return list;
}

const LINK_LOCAL = blockList([['169.254.0.0', 16]], [['fe80::', 10]]);
// 0.0.0.0 and :: connect to the local host on Linux.
const LOOPBACK = blockList([['127.0.0.0', 8], ['0.0.0.0', 8]], [['::1', 128], ['::', 128]]);
// RFC 1918, carrier-grade NAT (often a cluster's pod or service range) and IPv6 unique-local.
const PRIVATE = blockList([['10.0.0.0', 8], ['172.16.0.0', 12], ['192.168.0.0', 16], ['100.64.0.0', 10]], [['fc00::', 7]]);

/** What kind of network an IP address is on. */
export function classifyAddress(ip: string): AddressKind {
  const family = isIP(ip) === 6 ? 'ipv6' : 'ipv4';
  if (LINK_LOCAL.check(ip, family)) return 'link-local';
  if (LOOPBACK.check(ip, family)) return 'loopback';
  if (PRIVATE.check(ip, family)) return 'private';
  return 'public';
}

export interface EgressPolicyOptions {
  /** The configured upstream: its own addresses may be loopback or private. */
  upstreamUrl: string;
  /** Hosts (`host` or `host:port`) the operator trusts on loopback and private addresses. */
  listed: readonly string[];
  /** Told of every refused connection. */
  onRefused?: (err: EgressRefused) => void;
}

const MAX_UPSTREAM_ADDRESSES = 64;

type LookupCallback = (err: NodeJS.ErrnoException | null, address: string | LookupAddress[], family?: number) => void;

/** The egress rule of one upstream, applied in the connector of its undici Agent. */
export class EgressPolicy {
  readonly #upstreamHost: string;
  /** Addresses the upstream's own name resolved to: other names on them are the upstream too. */
  readonly #upstreamAddresses = new Set<string>();
  readonly #listed: Set<string>;
  readonly #onRefused?: (err: EgressRefused) => void;

  constructor(o: EgressPolicyOptions) {
    this.#upstreamHost = hostOf(o.upstreamUrl);
    if (isIP(this.#upstreamHost)) this.#upstreamAddresses.add(this.#upstreamHost);
    this.#listed = new Set(o.listed.map((h) => hostOf(`http://${h}`)));
    this.#onRefused = o.onRefused;
  }

  /** Why connecting to `address` for `hostname` is not allowed, or undefined when it is. */
  refusal(hostname: string, address: string): EgressRefused | undefined {
    const kind = classifyAddress(address);
    if (kind === 'public') return undefined;
    const host = hostname.toLowerCase().replace(/^\[|\]$/g, '');
    const named = host === address ? address : `${host} (${address})`;
    if (kind === 'link-local') return new EgressRefused(kind, `refused to connect to ${named}: a link-local address is never reached`);
    if (host === this.#upstreamHost) {
      // DNS may rotate the upstream's addresses; remember the recent ones only.
      if (!this.#upstreamAddresses.has(address)) {
        if (this.#upstreamAddresses.size >= MAX_UPSTREAM_ADDRESSES) this.#upstreamAddresses.delete(this.#upstreamAddresses.values().next().value!);
        this.#upstreamAddresses.add(address);
      }
      return undefined;
    }
    if (this.#upstreamAddresses.has(address) || this.#listed.has(host)) return undefined;
    return new EgressRefused(kind, `refused to connect to ${named}: a ${kind} address, which only the upstream's own address or a host listed in its tokenRealms or redirectHosts may have`);
  }

  /** An undici connector that checks literal addresses before connecting and resolved ones in DNS lookup. */
  connector(opts: Connector.BuildOptions): Connector.connector {
    const base = buildConnector({ ...opts, lookup: (hostname: string, options: LookupOptions, cb: LookupCallback) => this.#lookup(hostname, options, cb) });
    return (o, callback) => {
      const refused = isIP(o.hostname) ? this.refusal(o.hostname, o.hostname) : undefined;
      if (!refused) return base(o, callback);
      this.#onRefused?.(refused);
      callback(refused, null);
    };
  }

  /** dns.lookup, keeping only the addresses the rule allows. */
  #lookup(hostname: string, options: LookupOptions, callback: LookupCallback): void {
    dnsLookup(hostname, { ...options, all: true }, (err, addresses) => {
      if (err) return callback(err, '');
      const allowed = addresses.filter((a) => this.refusal(hostname, a.address) === undefined);
      if (allowed.length === 0) {
        const refused = addresses.length > 0 ? this.refusal(hostname, addresses[0].address)! : new EgressRefused('private', `${hostname} resolved to no address`);
        this.#onRefused?.(refused);
        return callback(refused, '');
      }
      if (options.all) callback(null, allowed);
      else callback(null, allowed[0].address, allowed[0].family);
    });
  }
}

/** The lower-case host name of a URL, without IPv6 brackets. */
function hostOf(url: string): string {
  try {
    return new URL(url).hostname.toLowerCase().replace(/^\[|\]$/g, '');
  } catch {
    return url.toLowerCase();
  }
}
