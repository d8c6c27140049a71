// HTTPS with a test CA: skopeo (--src-cert-dir) and containerd (ca in hosts.toml) pull
// over TLS, and a reloaded certificate is what new connections get. Client auth: skopeo
// without credentials is refused with a challenge it understands, and with them pulls.
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';
import { after, before, describe, test } from 'node:test';
import { singleImage, type FixtureImage } from '../../fixtures/images.js';
import { FakeUpstream } from '../../fixtures/upstream.js';
import { serveChild, startMirror, type Mirror } from '../helpers.js';
import { haveTool, requireTools, run, skopeo, startContainerd, writeHostsDir } from './harness.js';

/** A CA and a server certificate for 127.0.0.1 signed by it, made with openssl. */
async function makeCerts(dir: string, serial: string): Promise<{ ca: string; cert: string; key: string }> {
  const ca = join(dir, 'ca.crt');
  const caKey = join(dir, 'ca.key');
  if (!haveTool('openssl')) throw new Error('openssl is needed');
  const ok = async (args: string[]) => {
    const r = await run('openssl', args);
    assert.equal(r.code, 0, r.stderr);
  };
  try {
    await readFile(ca);
  } catch {
    await ok(['req', '-x509', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', caKey, '-out', ca, '-days', '2', '-subj', '/CN=regmirror test CA']);
  }
  const key = join(dir, 'server.key');
  const csr = join(dir, 'server.csr');
  const cert = join(dir, 'server.crt');
  const ext = join(dir, 'san.ext');
  await writeFile(ext, 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature\nextendedKeyUsage=serverAuth\n');
  await ok(['req', '-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:P-256', '-nodes', '-keyout', key, '-out', csr, '-subj', '/CN=127.0.0.1']);
  await ok(['x509', '-req', '-in', csr, '-CA', ca, '-CAkey', caKey, '-set_serial', serial, '-days', '2', '-extfile', ext, '-out', cert]);
  return { ca, cert, key };
}

/** The serial number of the certificate a new TLS connection is given. */
function servedSerial(port: number, ca: Buffer): Promise<string> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port, ca, servername: 'localhost' }, () => {
      resolve(s.getPeerCertificate().serialNumber);
      s.end();
    });
    s.on('error', reject);
  });
}

describe('TLS', () => {
  let up: FakeUpstream;
  let m: Mirror | undefined;
  let dir: string;
  let img: FixtureImage;
  let certs: { ca: string; cert: string; key: string };

  before(async () => {
    dir = await mkdtemp(join(tmpdir(), 'regmirror-tls-'));
    up = await FakeUpstream.start();
    img = await singleImage({ name: 'library/secure', tag: 'v1', seed: 'secure' });
    up.addImage(img);
  });
  after(async () => {
    await m?.stop();
    await up.close();
    await rm(dir, { recursive: true, force: true });
  });

  async function mirror(): Promise<Mirror> {
    if (!m) {
      certs = await makeCerts(dir, '0x1001');
      m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', tls: { cert: certs.cert, key: certs.key } });
    }
    return m;
  }

  test('skopeo pulls over https with --src-cert-dir', async (t) => {
    if (!requireTools(t, 'skopeo', 'openssl')) return;
    const mm = await mirror();
    assert.match(mm.url, /^https:/);
    const certDir = join(dir, 'skopeo-certs');
    await mkdir(certDir, { recursive: true });
    await writeFile(join(certDir, 'ca.crt'), await readFile(certs.ca));
    const out = join(dir, 'skopeo-out');
    const r = await skopeo(['copy', '--src-cert-dir', certDir, `docker://127.0.0.1:${mm.port}/library/secure:v1`, `dir:${out}`]);
    assert.equal(r.code, 0, r.stderr);
    const manifest = await readFile(join(out, 'manifest.json'));
    assert.equal('sha256:' + createHash('sha256').update(manifest).digest('hex'), img.root.digest);
  });

  test('containerd pulls over https with ca in hosts.toml', async (t) => {
    if (!requireTools(t, 'containerd', 'ctr', 'openssl')) return;
    const mm = await mirror();
    const ctrd = await startContainerd();
    try {
      const hosts = join(dir, 'hosts');
      await writeHostsDir(hosts, [{ registry: 'docker.io', server: 'https://127.0.0.1:9', mirrorUrl: `https://127.0.0.1:${mm.port}` }]);
      const file = join(hosts, 'docker.io', 'hosts.toml');
      const toml = (await readFile(file, 'utf8')).replace(/(\[host\."https:\/\/127\.0\.0\.1:\d+"\]\n)/, `$1  ca = "${certs.ca}"\n`);
      assert.match(toml, /ca = /);
      await writeFile(file, toml);
      const r = await ctrd.ctr(['images', 'pull', '--hosts-dir', hosts, 'docker.io/library/secure:v1']);
      assert.equal(r.code, 0, r.stderr);
      const ls = await ctrd.ctr(['images', 'ls', '-q']);
      assert.match(ls.stdout, /docker\.io\/library\/secure:v1/);
    } finally {
      await ctrd.close();
    }
  });

  test('a reloaded certificate is served to new connections', async (t) => {
    if (!requireTools(t, 'openssl')) return;
    const mm = await mirror();
    const ca = await readFile(certs.ca);
    assert.equal(await servedSerial(mm.port, ca), '1001');
    await makeCerts(dir, '0x2002');
    await mm.reloadTls();
    assert.equal(await servedSerial(mm.port, ca), '2002');
  });
});

test('kill -HUP makes a running regmirror serve the renewed certificate', async (t) => {
  if (!requireTools(t, 'openssl')) return;
  const dir = await mkdtemp(join(tmpdir(), 'regmirror-hup-'));
  const certs = await makeCerts(dir, '0x3003');
  await writeFile(join(dir, 'mirror.yaml'), `listen: "127.0.0.1:0"\ndataDir: ${join(dir, 'data')}\ntls:\n  cert: ${certs.cert}\n  key: ${certs.key}\n`);
  const s = serveChild(join(dir, 'mirror.yaml'));
  try {
    const port = Number(new URL(await s.url).port);
    const ca = await readFile(certs.ca);
    assert.equal(await servedSerial(port, ca), '3003');
    await makeCerts(dir, '0x4004');
    s.kill('SIGHUP');
    const deadline = Date.now() + 5000;
    let serial = '';
    while (Date.now() < deadline && (serial = await servedSerial(port, ca)) !== '4004') await new Promise((r) => setTimeout(r, 100));
    assert.equal(serial, '4004');
  } finally {
    s.kill('SIGTERM');
    await s.exited;
    await rm(dir, { recursive: true, force: true });
  }
});

describe('client auth with skopeo', () => {
  test('refused without credentials (with a challenge skopeo follows), pulls with them', async (t) => {
    if (!requireTools(t, 'skopeo')) return;
    const up = await FakeUpstream.start();
    const img = await singleImage({ name: 'library/locked', tag: 'v1', seed: 'locked' });
    up.addImage(img);
    const m = await startMirror({ upstreams: [{ name: 'docker.io', url: up.url }], defaultUpstream: 'docker.io', auth: { tokens: ['s3cret-token'] } });
    const dir = await mkdtemp(join(tmpdir(), 'regmirror-auth-'));
    try {
      const src = `docker://127.0.0.1:${m.port}/library/locked:v1`;
      const denied = await skopeo(['copy', '--src-tls-verify=false', src, `dir:${join(dir, 'a')}`]);
      assert.notEqual(denied.code, 0);
      assert.match(denied.stderr, /unauthorized|authentication required/i);
      const ok = await skopeo(['copy', '--src-tls-verify=false', '--src-creds', 'ci:s3cret-token', src, `dir:${join(dir, 'b')}`]);
      assert.equal(ok.code, 0, ok.stderr);
      const manifest = await readFile(join(dir, 'b', 'manifest.json'));
      assert.equal('sha256:' + createHash('sha256').update(manifest).digest('hex'), img.root.digest);
    } finally {
      await m.stop();
      await up.close();
      await rm(dir, { recursive: true, force: true });
    }
  });
});
