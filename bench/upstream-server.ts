// Child process for the benchmark: runs the Docker-Hub-like FakeUpstream (token auth,
// 307 to a CDN origin) on loopback, with the bench images, so that serving the upstream
// does not share an event loop with the load generator. Talks to the parent over IPC:
//   parent → { id, cmd: 'counters' | 'reset' }            child → { id, counters }
//   parent → { id, cmd: 'fresh', bytes, seed }            child → { id, blob }  (a new large layer)
//   parent → { id, cmd: 'throttle', bytesPerSecond? }     child → { id }        (blob bodies' pace)
// and announces itself once with { ready: UpstreamInfo }.
import { writeFile } from 'node:fs/promises';
import { largeBlobImage, multiPlatformImage, singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { scaleImages, type ScaleInfo } from './scale-images.js';

export interface UpstreamSpec {
  largeBytes: number;
  /** Where the large layer's bytes are written, for the nginx and fs references. */
  largeFile: string;
  manyLayers: number;
  manyLayerBytes: number;
  /** Images of the scale scenario (default none). */
  scaleImages?: number;
  /** Size of the file inside the base layer they all share (default 256 KiB). */
  scaleBaseBytes?: number;
  /** Layers of the replicas scenario's many-layer image (default none). */
  replicaLayers?: number;
  replicaLayerBytes?: number;
}

export interface BlobInfo {
  name: string;
  digest: string;
  size: number;
}

export interface UpstreamInfo {
  url: string;
  cdnUrl: string;
  large: { name: string; digest: string; size: number };
  many: { name: string; layers: Array<{ digest: string; size: number }> };
  /** A multi-platform index (tag) and one of its platform manifests (digest), as containerd resolves them. */
  index: { name: string; tag: string; digest: string; childDigest: string; childMediaType: string };
  /** The scale scenario's images, when the spec asked for any. */
  scale?: ScaleInfo;
  /** The replicas scenario's many-layer image, when the spec asked for one. */
  replicaMany?: { name: string; layers: Array<{ digest: string; size: number }> };
}

/** Counters as plain JSON (the Map becomes an object). */
export interface CountersJson {
  manifestGet: number; manifestHead: number; blobGet: number; blobHead: number;
  cdnGet: number; token: number; tagsList: number; referrers: number; total: number;
  blobGetByDigest: Record<string, number>;
}

export type Request =
  | { id: number; cmd: 'counters' | 'reset' }
  | { id: number; cmd: 'fresh'; bytes: number; seed: string }
  | { id: number; cmd: 'throttle'; bytesPerSecond?: number };

export interface Reply {
  id: number;
  counters?: CountersJson;
  blob?: BlobInfo;
}

function biggestBlob(img: FixtureImage): { digest: string; size: number } {
  const [digest, bytes] = [...img.blobs].sort((a, b) => b[1].length - a[1].length)[0];
  return { digest, size: bytes.length };
}

async function main(): Promise<void> {
  const spec = JSON.parse(process.argv[2] ?? '') as UpstreamSpec;
  const up = await FakeUpstream.start();

  const large = largeBlobImage('library/large', 'latest', spec.largeBytes, 'bench-large');
  const layer = biggestBlob(large);
  await writeFile(spec.largeFile, large.blobs.get(layer.digest)!);
  up.addImage(large);

  const many = await singleImage({
    name: 'library/many',
    tag: 'latest',
    seed: 'bench-many',
    layerSizes: Array.from({ length: spec.manyLayers }, () => spec.manyLayerBytes),
  });
  up.addImage(many);
  const manifest = JSON.parse(many.root.bytes.toString()) as { layers: Array<{ digest: string; size: number }> };
  const replicaMany = spec.replicaLayers ? await layeredImage(up, 'replicas/many', spec.replicaLayers, spec.replicaLayerBytes ?? 1024 * 1024) : undefined;

  const platforms = ['amd64', 'arm64', 'ppc64le', 's390x', '386', 'riscv64'].map((architecture) => ({ os: 'linux', architecture }));
  const index = await multiPlatformImage({ name: 'library/alpine', tag: '3', seed: 'bench-alpine', platforms });
  up.addImage(index);
  const child = [...index.manifests.values()].find((m) => m.digest !== index.root.digest)!;

  let scale: ScaleInfo | undefined;
  if (spec.scaleImages) {
    const built = await scaleImages(spec.scaleImages, spec.scaleBaseBytes ?? 256 * 1024);
    for (const img of built.images) up.addImage(img);
    scale = built.info;
  }

  const info: UpstreamInfo = {
    url: up.url,
    cdnUrl: up.cdnUrl,
    large: { name: large.name, ...layer },
    many: { name: many.name, layers: manifest.layers.map((l) => ({ digest: l.digest, size: l.size })) },
    index: { name: index.name, tag: index.tag, digest: index.root.digest, childDigest: child.digest, childMediaType: child.mediaType },
    scale,
    replicaMany,
  };

  process.on('message', (msg: Request) => process.send!(answer(up, msg)));
  process.on('disconnect', () => void up.close().then(() => process.exit(0)));
  process.on('SIGTERM', () => void up.close().then(() => process.exit(0)));
  process.send!({ ready: info });
}

function answer(up: FakeUpstream, msg: Request): Reply {
  if (msg.cmd === 'fresh') {
    // Each image gets a repository of its own: one layer's bytes, a digest never seen before.
    const img = largeBlobImage(`replicas/${msg.seed}`, 'latest', msg.bytes, msg.seed);
    up.addImage(img);
    return { id: msg.id, blob: { name: img.name, ...biggestBlob(img) } };
  }
  if (msg.cmd === 'throttle') {
    up.faults = msg.bytesPerSecond ? { blobBytesPerSecond: msg.bytesPerSecond } : {};
    return { id: msg.id };
  }
  if (msg.cmd === 'reset') up.resetCounters();
  const { blobGetByDigest, cdnAuthorization: _ignored, ...rest } = up.counters;
  return { id: msg.id, counters: { ...rest, blobGetByDigest: Object.fromEntries(blobGetByDigest) } };
}

async function layeredImage(up: FakeUpstream, name: string, layers: number, bytes: number): Promise<UpstreamInfo['replicaMany']> {
  const img = await singleImage({ name, tag: 'latest', seed: `bench-${name}`, layerSizes: Array.from({ length: layers }, () => bytes) });
  up.addImage(img);
  const manifest = JSON.parse(img.root.bytes.toString()) as { layers: Array<{ digest: string; size: number }> };
  return { name, layers: manifest.layers.map((l) => ({ digest: l.digest, size: l.size })) };
}

main().catch((err: unknown) => {
  console.error('bench upstream:', err);
  process.exit(1);
});
