// Asks another replica of the cluster for a download it is running: its size (HEAD), and
// its bytes (GET, from any offset) as they arrive there. Requests are signed with the
// cluster's secret; the holder holds back each body's last byte until the digest is
// verified, so a body that ends early or is cut never passes for a complete one here.
import { Agent, request } from '../upstream/undici-core.js';
import { PeerUnavailable } from '../errors.js';
import type { Digest } from '../oci/digest.js';
import type { BodySource } from '../store/body-source.js';
import type { ByteRange } from '../store/content-store.js';
import { PEER_HEADER, signPeerRequest } from './peer-auth.js';

export const PEER_PREFIX = '/_regmirror/peer';

/** A replica holding a download, as its lease names it. */
export interface PeerLocation {
  id: string;
  advertise: string;
}

export interface PeerClientOptions {
  secret: string;
  /** A holder is on the same network: a slow connect means it is gone. */
  connectTimeoutMs?: number;
  /** The holder answers once its upstream has: as long as an upstream's headers may take. */
  headersTimeoutMs?: number;
  /** No byte for this long: the holder (or its upstream) stalled. */
  idleTimeoutMs?: number;
}

const CONNECTION_CODES = new Set(['ECONNREFUSED', 'ECONNRESET', 'EHOSTUNREACH', 'ENETUNREACH', 'ETIMEDOUT', 'UND_ERR_CONNECT_TIMEOUT', 'UND_ERR_SOCKET', 'ENOTFOUND', 'EAI_AGAIN']);

export class PeerClient {
  readonly #secret: string;
  readonly #agent: Agent;

  constructor(opts: PeerClientOptions) {
    this.#secret = opts.secret;
    this.#agent = new Agent({
      connect: { timeout: opts.connectTimeoutMs ?? 2_000 },
      headersTimeout: opts.headersTimeoutMs ?? 30_000,
      bodyTimeout: opts.idleTimeoutMs ?? 60_000,
    });
  }

  /** The blob's size as the holder's upstream gave it; throws PeerUnavailable. */
  async size(peer: PeerLocation, digest: Digest): Promise<number | undefined> {
    const res = await this.#request(peer, 'HEAD', digest);
    await res.body.dump().catch(() => undefined);
    const length = res.headers['content-length'];
    return typeof length === 'string' ? Number(length) : undefined;
  }

  /** The bytes of `range` (or all), read as the holder receives them; opened at the first read. */
  open(peer: PeerLocation, digest: Digest, expected: number, range?: ByteRange): BodySource {
    return new PeerBody(() => this.#request(peer, 'GET', digest, range), range ? range.end - range.start + 1 : expected);
  }

  async #request(peer: PeerLocation, method: 'GET' | 'HEAD', digest: Digest, range?: ByteRange): Promise<Awaited<ReturnType<typeof request>>> {
    const path = `${PEER_PREFIX}/blobs/${digest}`;
    const headers: Record<string, string> = { [PEER_HEADER]: signPeerRequest(this.#secret, method, path) };
    if (range) headers.range = `bytes=${range.start}-${range.end}`;
    let res: Awaited<ReturnType<typeof request>>;
    try {
      res = await request(`${peer.advertise}${path}`, { method, headers, dispatcher: this.#agent });
    } catch (err) {
      const code = (err as { code?: unknown }).code;
      const kind = typeof code === 'string' && CONNECTION_CODES.has(code) ? 'unreachable' : 'refused';
      throw new PeerUnavailable(kind, `replica ${peer.advertise} holding ${digest}: ${(err as Error).message}`);
    }
    if (res.statusCode === 200 || res.statusCode === 206) return res;
    await res.body.dump().catch(() => undefined);
    if (res.statusCode === 404) throw new PeerUnavailable('gone', `replica ${peer.advertise} no longer downloads ${digest}`);
    throw new PeerUnavailable('refused', `replica ${peer.advertise} answered ${res.statusCode} for ${digest}`);
  }

  close(): Promise<void> {
    return this.#agent.close();
  }
}

type Response = Awaited<ReturnType<typeof request>>;

/** A peer response's body as a BodySource; one that ends short of its length is an error, not an end. */
class PeerBody implements BodySource {
  readonly #open: () => Promise<Response>;
  #expected: number;
  #body?: Promise<Response>;
  #chunks?: AsyncIterator<Buffer>;
  #left?: Buffer;
  #closed = false;

  constructor(open: () => Promise<Response>, expected: number) {
    this.#open = open;
    this.#expected = expected;
  }

  async readInto(buf: Buffer): Promise<number> {
    if (this.#closed) throw new Error('read after close');
    this.#body ??= this.#open();
    const res = await this.#body;
    this.#chunks ??= (res.body as AsyncIterable<Buffer>)[Symbol.asyncIterator]();
    let chunk = this.#left;
    this.#left = undefined;
    if (!chunk) {
      const next = await this.#chunks.next();
      if (next.done) {
        if (this.#expected > 0) throw new PeerUnavailable('refused', `the holder's body ended ${this.#expected} bytes short`);
        return 0;
      }
      chunk = next.value;
    }
    const n = Math.min(chunk.length, buf.length);
    chunk.copy(buf, 0, 0, n);
    if (n < chunk.length) this.#left = chunk.subarray(n);
    this.#expected -= n;
    return n;
  }

  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const body = this.#body;
    if (!body) return;
    const res = await body.catch(() => undefined);
    res?.body.destroy();
  }
}
