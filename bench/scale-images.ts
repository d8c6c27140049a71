// The images of the scale scenario, built in the upstream child: image i is repository
// `scale/app-<i>` tag `v1`, an OCI manifest over a unique ~1 KB config, one base layer
// shared by every image and a unique ~9 KB layer. Distinct repositories, so that a proxy
// needs a token scope per image as it would for real distinct images.
import { gunzipSync } from 'node:zlib';
import { MediaTypes, sha256, tarLayer, type FixtureImage, type StoredManifest } from '../fixtures/images.js';

export const SCALE_TAG = 'v1';
/** File size inside each image's own layer: with the tar framing ~9.4 KB, ~11 KB with the config and manifest. */
const UNIQUE_LAYER_BYTES = 9 * 1024;

export interface ScaleImageInfo {
  name: string;
  /** The manifest the tag points at. */
  digest: string;
  size: number;
  /** The image's own small layer, for the warm small-blob GETs. */
  layer: { digest: string; size: number };
  /** Manifest + config + own layer: what this image adds to a store beyond the base layer. */
  bytes: number;
}

export interface ScaleInfo {
  tag: string;
  base: { digest: string; size: number };
  images: ScaleImageInfo[];
  /** Every image's own bytes plus the base layer once: what a store must hold at least. */
  contentBytes: number;
}

function json(value: unknown): Buffer {
  return Buffer.from(JSON.stringify(value, null, 2));
}

/** Deterministic (same digests every run): the seeds are the image index. */
export async function scaleImages(count: number, baseBytes: number): Promise<{ images: FixtureImage[]; info: ScaleInfo }> {
  const base = await tarLayer('rootfs/base.bin', baseBytes, 'bench-scale-base');
  const baseDigest = sha256(base);
  // The base layer's diff id is the same for every image: gunzip it once, not once per image.
  const baseDiffId = sha256(gunzipSync(base));
  const images: FixtureImage[] = [];
  const infos: ScaleImageInfo[] = [];
  let contentBytes = base.length;
  for (let i = 0; i < count; i++) {
    const name = `scale/app-${i}`;
    const layer = await tarLayer(`app/app-${i}.bin`, UNIQUE_LAYER_BYTES, `bench-scale/${i}`);
    const layerDigest = sha256(layer);
    // About 1 KB, as a small real image's config is (env, labels, history).
    const config = json({
      architecture: 'amd64',
      os: 'linux',
      created: '2024-01-01T00:00:00Z',
      config: {
        Env: ['PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin', `APP_INDEX=${i}`],
        Cmd: [`/app/app-${i}`],
        WorkingDir: '/app',
        Labels: { 'org.opencontainers.image.title': name, 'org.opencontainers.image.version': SCALE_TAG },
      },
      rootfs: { type: 'layers', diff_ids: [baseDiffId, sha256(gunzipSync(layer))] },
      history: [
        { created: '2024-01-01T00:00:00Z', created_by: '/bin/sh -c #(nop) ADD file:base in / ' },
        { created: '2024-01-01T00:00:00Z', created_by: `/bin/sh -c #(nop) COPY app-${i}.bin /app/ # buildkit` },
      ],
    });
    const manifestBytes = json({
      schemaVersion: 2,
      mediaType: MediaTypes.ociManifest,
      config: { mediaType: MediaTypes.ociConfig, digest: sha256(config), size: config.length },
      layers: [
        { mediaType: MediaTypes.ociLayer, digest: baseDigest, size: base.length },
        { mediaType: MediaTypes.ociLayer, digest: layerDigest, size: layer.length },
      ],
    });
    const root: StoredManifest = { digest: sha256(manifestBytes), mediaType: MediaTypes.ociManifest, bytes: manifestBytes };
    images.push({
      name,
      tag: SCALE_TAG,
      root,
      manifests: new Map([[root.digest, root]]),
      // The same Buffer for the base in every repository: the upstream holds it once.
      blobs: new Map([
        [sha256(config), config],
        [baseDigest, base],
        [layerDigest, layer],
      ]),
    });
    const bytes = manifestBytes.length + config.length + layer.length;
    contentBytes += bytes;
    infos.push({ name, digest: root.digest, size: manifestBytes.length, layer: { digest: layerDigest, size: layer.length }, bytes });
  }
  return { images, info: { tag: SCALE_TAG, base: { digest: baseDigest, size: base.length }, images: infos, contentBytes } };
}
