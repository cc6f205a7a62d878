#!/usr/bin/env node
// Publish benchmarks (issue 15), figures only: kiln's upload of the Debian image to each local server
// against the tool users run today on the same file and server (skopeo copy for the registry, the
// glance CLI for Glance, rclone for S3 when installed), ratios from one run; and the Azure page-blob
// upload of a 4 GiB fixed VHD holding ~150 MiB of data: bytes sent / data bytes.
// Run alone (`node bench/publish.mjs`) or from bench/run.mjs. Needs `make build` (dist/).
import { execa } from 'execa';
import { createHash } from 'node:crypto';
import {
  createReadStream,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  writeSync,
  closeSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { publishManifest } from '../dist/publish/runner.js';
import { publishTargetSchema } from '../dist/template/schema-publish.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const bin = (n) => path.join(root, 'node_modules/.bin', n);
const fmt = (ms) => `${(ms / 1000).toFixed(2)} s`;
const time = async (fn) => {
  const t = performance.now();
  await fn();
  return performance.now() - t;
};

function freePort() {
  return new Promise((resolve) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}
async function waitFor(url) {
  for (let i = 0; i < 600; i++) {
    try {
      const r = await fetch(url);
      await r.body?.cancel();
      if (r.status < 500) return;
    } catch {
      /* not yet */
    }
    await new Promise((r) => setTimeout(r, 100));
  }
  throw new Error(`${url} did not answer`);
}
async function sha256(file) {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c);
  return h.digest('hex');
}

export async function publishBench(image = path.join(root, 'fixtures/images/debian-12-cloud.qcow2')) {
  if (!existsSync(image)) {
    console.log(`publish bench: ${image} missing (make fixtures)`);
    return;
  }
  const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-bench-publish-'));
  const children = [];
  const start = (cmd, args, opts = {}) => {
    const c = execa(cmd, args, { reject: false, buffer: false, ...opts });
    children.push(c);
    return c;
  };
  try {
    const [s3Port, regPort, glancePort, azPort] = await Promise.all([freePort(), freePort(), freePort(), freePort()]);
    mkdirSync(path.join(dir, 's3'));
    start(bin('s3rver'), [
      '-d',
      path.join(dir, 's3'),
      '-a',
      '127.0.0.1',
      '-p',
      String(s3Port),
      '--configure-bucket',
      'images',
      '--silent',
    ]);
    writeFileSync(
      path.join(dir, 'registry.yml'),
      `version: 0.1\nlog: { level: warn }\nstorage: { filesystem: { rootdirectory: ${dir}/registry } }\nhttp: { addr: 127.0.0.1:${regPort} }\n`,
    );
    start('docker-registry', ['serve', path.join(dir, 'registry.yml')]);
    start(bin('azurite-blob'), [
      '-l',
      path.join(dir, 'azurite'),
      '--blobHost',
      '127.0.0.1',
      '--blobPort',
      String(azPort),
      '--skipApiVersionCheck',
      '--silent',
    ]);
    const g = path.join(dir, 'glance');
    for (const d of ['images', 'staging', 'tasks', 'lock']) mkdirSync(path.join(g, d), { recursive: true });
    writeFileSync(
      path.join(g, 'glance-api.conf'),
      `[DEFAULT]\nbind_host = 127.0.0.1\nbind_port = ${glancePort}\nworkers = 1\nlog_file = ${g}/glance.log\nenabled_backends = fs:file\n[database]\nconnection = sqlite:///${g}/glance.sqlite\n[glance_store]\ndefault_backend = fs\n[fs]\nfilesystem_store_datadir = ${g}/images/\n[os_glance_staging_store]\nfilesystem_store_datadir = ${g}/staging/\n[os_glance_tasks_store]\nfilesystem_store_datadir = ${g}/tasks/\n[paste_deploy]\nflavor =\n[oslo_concurrency]\nlock_path = ${g}/lock\n`,
    );
    await execa('glance-manage', ['--config-file', path.join(g, 'glance-api.conf'), 'db_sync'], { cwd: g });
    start('glance-api', ['--config-file', path.join(g, 'glance-api.conf')], { cwd: g });
    await Promise.all([
      waitFor(`http://127.0.0.1:${s3Port}/`),
      waitFor(`http://127.0.0.1:${regPort}/v2/`),
      waitFor(`http://127.0.0.1:${azPort}/`),
      waitFor(`http://127.0.0.1:${glancePort}/versions`),
    ]);

    const size = statSync(image).size;
    const manifest = path.join(dir, 'manifest.json');
    writeFileSync(
      manifest,
      JSON.stringify({
        build: 'bench',
        template: { file: 'bench' },
        artifacts: [{ name: path.basename(image), path: image, format: 'qcow2', size, sha256: await sha256(image) }],
      }),
    );
    const env = { ...process.env, AWS_ACCESS_KEY_ID: 'S3RVER', AWS_SECRET_ACCESS_KEY: 'S3RVER' };
    const kiln = (t) =>
      time(() =>
        publishManifest(manifest, [publishTargetSchema.parse(t)], {
          signal: new AbortController().signal,
          env,
          log: () => {},
          progress: 'none',
        }),
      );
    const rows = [];

    const kOci = await kiln({
      type: 'oci',
      registry: `127.0.0.1:${regPort}`,
      repository: 'bench/kiln',
      insecure: true,
    });
    // skopeo pushes the same file as a one-layer image (the containerDisk's tar, made by kiln's code, is pushed by skopeo from an OCI layout).
    const layout = path.join(dir, 'layout');
    await execa('skopeo', [
      'copy',
      '--src-tls-verify=false',
      `docker://127.0.0.1:${regPort}/bench/kiln:latest`,
      `dir:${layout}`,
    ]);
    const sOci = await time(() =>
      execa('skopeo', [
        'copy',
        '--dest-tls-verify=false',
        `dir:${layout}`,
        `docker://127.0.0.1:${regPort}/bench/skopeo:latest`,
      ]),
    );
    rows.push(['OCI registry (skopeo copy)', kOci, sOci]);

    const kGlance = await kiln({
      type: 'glance',
      endpoint: `http://127.0.0.1:${glancePort}`,
      image_name: 'bench-kiln',
    });
    let sGlance;
    try {
      sGlance = await time(() =>
        execa('glance', [
          '--os-image-url',
          `http://127.0.0.1:${glancePort}`,
          '--os-auth-token',
          'noauth',
          '--os-password',
          'unused',
          'image-create',
          '--name',
          'bench-cli',
          '--disk-format',
          'qcow2',
          '--container-format',
          'bare',
          '--file',
          image,
        ]),
      );
    } catch (e) {
      console.log(`  glance CLI failed: ${e.stderr ?? e.message}`);
    }
    rows.push(['Glance (glance image-create)', kGlance, sGlance]);

    const kS3 = await kiln({
      type: 's3',
      bucket: 'images',
      key: 'kiln.qcow2',
      endpoint: `http://127.0.0.1:${s3Port}`,
      force_path_style: true,
    });
    let sS3;
    try {
      await execa('rclone', ['version']);
      writeFileSync(
        path.join(dir, 'rclone.conf'),
        `[s3]\ntype = s3\nprovider = Other\naccess_key_id = S3RVER\nsecret_access_key = S3RVER\nendpoint = http://127.0.0.1:${s3Port}\n`,
      );
      sS3 = await time(() =>
        execa('rclone', ['--config', path.join(dir, 'rclone.conf'), 'copyto', image, 's3:images/rclone.qcow2']),
      );
    } catch {
      sS3 = undefined;
    }
    rows.push(['S3 (rclone copyto)', kS3, sS3]);

    console.log(`\npublish: ${path.basename(image)} (${(size / 2 ** 20).toFixed(0)} MiB) to local servers`);
    for (const [what, k, other] of rows)
      console.log(
        `  ${what.padEnd(30)} kiln ${fmt(k).padStart(8)}  tool ${other === undefined ? '(not installed)' : fmt(other).padStart(8)}  ratio ${other === undefined ? '-' : (k / other).toFixed(2)}`,
      );

    // Azure: a 4 GiB fixed VHD holding ~150 MiB of data in 64 KiB runs spread over the disk.
    const raw = path.join(dir, 'sparse.raw');
    const fd = openSync(raw, 'w');
    const block = Buffer.alloc(64 * 1024, 0xab);
    const count = 2400; // 2400 × 64 KiB = 150 MiB
    for (let i = 0; i < count; i++)
      writeSync(fd, block, 0, block.length, Math.floor((i * 4 * 2 ** 30) / count / 65536) * 65536);
    closeSync(fd);
    await execa('truncate', ['-s', '4G', raw]);
    const vhd = path.join(dir, 'sparse.vhd');
    await execa('qemu-img', ['convert', '-O', 'vpc', '-o', 'subformat=fixed,force_size=on', raw, vhd]);
    rmSync(raw);
    writeFileSync(
      manifest,
      JSON.stringify({
        build: 'bench',
        template: { file: 'bench' },
        artifacts: [
          { name: 'sparse.vhd', path: vhd, format: 'vhd', size: statSync(vhd).size, sha256: await sha256(vhd) },
        ],
      }),
    );
    const conn = `DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;AccountKey=Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw==;BlobEndpoint=http://127.0.0.1:${azPort}/devstoreaccount1;`;
    env.AZURE_STORAGE_CONNECTION_STRING = conn;
    const records = [];
    const ms = await time(async () =>
      records.push(
        ...(await publishManifest(manifest, [publishTargetSchema.parse({ type: 'azure', container: 'vhds' })], {
          signal: new AbortController().signal,
          env,
          log: () => {},
          progress: 'none',
        })),
      ),
    );
    const data = count * block.length;
    console.log(
      `  Azure page blob, 4 GiB fixed VHD with ${(data / 2 ** 20).toFixed(0)} MiB data: sent ${(records[0].bytes_sent / 2 ** 20).toFixed(1)} MiB = ${(records[0].bytes_sent / data).toFixed(3)}× the data, in ${fmt(ms)}`,
    );
  } finally {
    for (const c of children) c.kill('SIGTERM');
    await Promise.allSettled(children);
    rmSync(dir, { recursive: true, force: true });
  }
}

if (process.argv[1] === fileURLToPath(import.meta.url)) await publishBench(process.argv[2]);
