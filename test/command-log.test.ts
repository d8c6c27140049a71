// One-shot commands log in the format the config asks for, as the server does: an
// operator who set `log.format: json` for a log collector gets JSON from prewarm, export,
// import and cache too, and `text` gets readable lines. The warning is a real one: a
// stored manifest damaged on disk, found and fetched again by a second prewarm.
import assert from 'node:assert/strict';
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, test } from 'node:test';
import { singleImage, type FixtureImage } from '../fixtures/images.js';
import { FakeUpstream } from '../fixtures/upstream.js';
import { cli } from './helpers.js';

let up: FakeUpstream;
let img: FixtureImage;
let dir: string;

before(async () => {
  up = await FakeUpstream.start();
  img = await singleImage({ name: 'library/logged', tag: '1', seed: 'command-log' });
  up.addImage(img);
  dir = await mkdtemp(join(tmpdir(), 'regmirror-command-log-'));
});

after(async () => {
  await up?.close();
  await rm(dir, { recursive: true, force: true });
});

/** Prewarms the image twice with its stored manifest damaged in between; the second run's stderr. */
async function damagedPrewarm(format: 'text' | 'json'): Promise<string> {
  const dataDir = join(dir, format);
  const config = join(dir, `${format}.yaml`);
  await writeFile(config, `dataDir: ${dataDir}\nlog: { format: ${format} }\nupstreams:\n  docker.io:\n    url: ${up.url}\n`);
  const first = await cli(['prewarm', '--config', config, `${img.name}:${img.tag}`]);
  assert.equal(first.code, 0, first.stderr);
  const hex = img.root.digest.slice('sha256:'.length);
  await writeFile(join(dataDir, 'blobs', 'sha256', hex.slice(0, 2), hex), '{"damaged": true}');
  const second = await cli(['prewarm', '--config', config, `${img.name}:${img.tag}`]);
  assert.equal(second.code, 0, second.stderr);
  return second.stderr;
}

test('18.6 log.format: json makes a one-shot command log JSON lines', async () => {
  const stderr = await damagedPrewarm('json');
  const line = stderr.split('\n').find((l) => l.includes('stored manifest does not match its digest'));
  assert.ok(line, stderr);
  const parsed = JSON.parse(line) as { level: string; msg: string; digest: string };
  assert.deepEqual([parsed.level, parsed.digest], ['warn', img.root.digest]);
});

test('18.6 log.format: text makes a one-shot command log readable lines', async () => {
  const stderr = await damagedPrewarm('text');
  const line = stderr.split('\n').find((l) => l.includes('stored manifest does not match its digest'));
  assert.ok(line, stderr);
  assert.match(line, new RegExp(`^\\d{4}-\\d\\d-\\d\\dT[\\d:.]+Z WARN stored manifest does not match its digest; fetching it again .*digest=${img.root.digest}`));
});
