// kiln build with a publish: list to four real servers on loopback (s3rver, Azurite, Debian's
// docker-registry and Glance without Keystone), started in parallel once for this file: every image
// is read back through the server's API and compared by digest; `kiln publish` again sends nothing;
// an upload interrupted half way leaves nothing on the remote side; wrong credentials give one line.
import { createHash } from 'node:crypto';
import { createReadStream, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Readable } from 'node:stream';
import { execa } from 'execa';
import tar from 'tar-stream';
import { CreateBucketCommand, GetObjectCommand, ListMultipartUploadsCommand, ListObjectsV2Command, S3Client } from '@aws-sdk/client-s3';
import { BlobServiceClient } from '@azure/storage-blob';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { startAzurite, startGlance, startRegistry, startS3, startSwift, type RunningServer } from '../helpers/servers/index.js';
import type { Manifest } from '../../src/artifacts/manifest.js';
import { publishManifest } from '../../src/publish/runner.js';
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
type PublishedEvent = { type: 'published'; target: string; ok: boolean; unchanged?: boolean; bytesSent?: number; location?: string; remoteDigest?: string };
const publishedEvents = (r: Awaited<ReturnType<typeof kiln>>) => r.events.filter((e) => e.type === 'published') as PublishedEvent[];

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
const s3Client = () => new S3Client({ endpoint: s3.url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey } });

beforeAll(async () => {
  [s3, azure, registry, glance, authRegistry, swift] = await Promise.all([startS3(), startAzurite(), startRegistry(), startGlance(), startRegistry(registryLogin), startSwift()]);
  // One layer cache for the file's builds, so a second build of the same template is up to date.
  env = { AWS_ACCESS_KEY_ID: s3.accessKeyId, AWS_SECRET_ACCESS_KEY: s3.secretAccessKey, AZURE_STORAGE_CONNECTION_STRING: azure.connectionString, KILN_CACHE_DIR: path.join(dir, 'cache') };
  templateText = `
builds:
  - name: pub
    output_directory: ${out}
${tinySourceYaml()}
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
    expect(m.published!.map((r) => [r.target, r.status])).toEqual([['s3', 'published'], ['azure', 'published'], ['oci', 'published'], ['glance', 'published']]);
    expect(record('s3').location).toBe('s3://images/tiny/pub.qcow2');
    expect(record('oci').id).toMatch(/^sha256:[0-9a-f]{64}$/);
    const text = readFileSync(manifestFile, 'utf8');
    expect(text).not.toContain(s3.secretAccessKey === s3.accessKeyId ? 'AccountKey' : s3.secretAccessKey);
    expect(text).not.toContain('AccountKey');
    expect(built.stdout + built.stderr).not.toContain('AccountKey=');
  }, 120_000);

  it('S3: the object read back has the artifact\'s sha256', async () => {
    const client = s3Client();
    const got = await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'tiny/pub.qcow2' }));
    expect(sha256(await bytesOf(got.Body as Readable))).toBe(artifact('qcow2').sha256);
    client.destroy();
  }, 120_000);

  it('Azure: the page blob read back is the fixed VHD, and far less than its size was sent', async () => {
    const blob = BlobServiceClient.fromConnectionString(azure.connectionString).getContainerClient('vhds').getPageBlobClient(artifact('vhd').name);
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
    await execa('skopeo', ['copy', '--src-tls-verify=false', `docker://${registry.host}/kiln/tiny:v1`, `dir:${layout}`]);
    const raw = readFileSync(path.join(layout, 'manifest.json'));
    expect(`sha256:${sha256(raw)}`).toBe(record('oci').id);
    const m = JSON.parse(raw.toString()) as { layers: { digest: string; mediaType: string }[] };
    expect(m.layers).toHaveLength(1);
    expect(m.layers[0]!.mediaType).toBe('application/vnd.oci.image.layer.v1.tar');
    const extract = tar.extract();
    const files: Record<string, { sha: string; uid: number }> = {};
    extract.on('entry', (h, stream, next) => {
      const hash = createHash('sha256');
      stream.on('data', (d: unknown) => { hash.update(d as Buffer); });
      stream.on('end', () => { files[h.name] = { sha: hash.digest('hex'), uid: h.uid ?? -1 }; next(); });
    });
    const done = new Promise<void>((r, j) => { extract.on('finish', () => r()); extract.on('error', j); });
    createReadStream(path.join(layout, m.layers[0]!.digest.slice(7))).pipe(extract);
    await done;
    expect(files[`disk/${artifact('qcow2').name}`]).toEqual({ sha: artifact('qcow2').sha256, uid: 107 });
  }, 120_000);

  it('Glance: the image is active, with the properties, and its data read back matches', async () => {
    const image = await (await fetch(`${glance.url}/v2/images/${record('glance').id}`)).json() as Record<string, unknown>;
    expect(image).toMatchObject({ status: 'active', name: 'kiln-tiny', disk_format: 'qcow2', os_distro: 'debian', hw_disk_bus: 'virtio', kiln_sha256: artifact('qcow2').sha256 });
    const data = Buffer.from(await (await fetch(`${glance.url}/v2/images/${record('glance').id}/file`)).arrayBuffer());
    expect(sha256(data)).toBe(artifact('qcow2').sha256);
    expect(record('glance').remote_digest).toBe(`sha512:${createHash('sha512').update(data).digest('hex')}`);
  }, 120_000);

  it('kiln publish of the same manifest again sends nothing', async () => {
    const r = await kiln(['publish', manifestFile], env);
    expect(r.exitCode, r.stderr).toBe(0);
    for (const p of manifest().published!) expect([p.target, p.status, p.unchanged, p.bytes_sent]).toEqual([p.target, 'published', true, 0]);
    const images = await (await fetch(`${glance.url}/v2/images?name=kiln-tiny`)).json() as { images: unknown[] };
    expect(images.images).toHaveLength(1);
  }, 120_000);

  it('a rebuild is up to date and only publishes: a no-op per target, and a target added to the list gets the image', async () => {
    // No change at all: no guest boots, each target already holds the same digest and sends nothing.
    const same = await kiln(['build', '--events', 'json', templateFile], env);
    expect(same.exitCode, same.stderr).toBe(0);
    expect(same.events.some((e) => e.type === 'log' && String(e.message).startsWith('up to date'))).toBe(true);
    expect(same.events.some((e) => e.type === 'step-start' && e.step === 'publish')).toBe(true);
    expect(publishedEvents(same).map((e) => [e.target, e.ok, e.unchanged, e.bytesSent])).toEqual(['s3', 'azure', 'oci', 'glance'].map((t) => [t, true, true, 0]));
    // Only the publish list changed: still up to date (publish is not part of the artifact key), and
    // the new target receives the artifact while the others stay no-ops.
    writeFileSync(templateFile, templateText.replace('    publish:\n', `    publish:\n      - type: s3\n        name: s3-copy\n        bucket: images\n        key: tiny/copy.qcow2\n        endpoint: ${s3.url}\n        force_path_style: true\n`));
    const added = await kiln(['build', '--events', 'json', templateFile], env);
    expect(added.exitCode, added.stderr).toBe(0);
    expect(added.events.some((e) => e.type === 'log' && String(e.message).startsWith('up to date'))).toBe(true);
    const events = publishedEvents(added);
    expect(events.map((e) => [e.target, e.ok, e.unchanged])).toEqual([['s3-copy', true, false], ...['s3', 'azure', 'oci', 'glance'].map((t) => [t, true, true])]);
    expect(events[0]!.bytesSent).toBe(artifact('qcow2').size);
    expect(events[0]!.location).toBe('s3://images/tiny/copy.qcow2');
    expect(record('s3-copy')).toMatchObject({ status: 'published', unchanged: false });
    const client = s3Client();
    const got = await client.send(new GetObjectCommand({ Bucket: 'images', Key: 'tiny/copy.qcow2' }));
    expect(sha256(await bytesOf(got.Body as Readable))).toBe(artifact('qcow2').sha256);
    client.destroy();
    // Events and output carry no credential.
    for (const r of [same, added]) {
      expect(r.stdout + r.stderr).not.toContain('AccountKey=');
      expect(JSON.stringify(publishedEvents(r))).not.toMatch(/S3RVER|AccountKey|Eby8vdM0/);
    }
  }, 180_000);

  it('wrong credentials give one clear line naming the target and the variable', async () => {
    const r = await kiln(['publish', manifestFile, '--only', 'azure'], { ...env, AZURE_STORAGE_CONNECTION_STRING: azure.connectionString.replace(/AccountKey=[^;]+/, `AccountKey=${Buffer.from('wrong').toString('base64')}`) });
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/^error: publish target "azure": the storage account refused the key from AZURE_STORAGE_CONNECTION_STRING \(\w+\)$/m);
    expect(r.stderr).not.toContain('AccountKey');
    const s = await kiln(['publish', manifestFile, '--only', 's3'], { ...env, AWS_SECRET_ACCESS_KEY: undefined as never });
    expect(s.exitCode).toBe(1);
    expect(s.stderr).toMatch(/^error: publish target "s3": AWS_SECRET_ACCESS_KEY is not set$/m);
    expect(record('s3').status).toBe('failed');
  }, 120_000);

  it('OCI with htpasswd auth: wrong credentials give one line naming the variables; right ones push in one pass, and again is a no-op', async () => {
    const copy = path.join(dir, 'auth-manifest.json');
    const m = manifest();
    delete m.published;
    writeFileSync(copy, JSON.stringify(m));
    const t = publishTargetSchema.parse({ type: 'oci', registry: authRegistry.host, repository: 'kiln/auth', tags: ['v1'], insecure: true, chunk_size: '5M' });
    const run = (password: string) => publishManifest(copy, [t], {
      signal: new AbortController().signal, progress: 'none', log: () => undefined,
      env: { ...process.env, KILN_REGISTRY_USERNAME: registryLogin.user, KILN_REGISTRY_PASSWORD: password },
    });
    const wrong = await run('not-the-password').then(() => undefined, (e: Error) => e.message);
    expect(wrong!.split('\n')[0]).toBe('publish target "oci": the registry refused the credentials from KILN_REGISTRY_USERNAME / KILN_REGISTRY_PASSWORD (HTTP 401)');
    expect(wrong).not.toContain('not-the-password');
    const [pushed] = await run(registryLogin.password);
    // The layer went up once, hashed on the way: exactly the layer's bytes were sent.
    expect(pushed).toMatchObject({ status: 'published', unchanged: false, bytes_sent: layerSize(artifact('qcow2')) });
    const basic = `Basic ${Buffer.from(`${registryLogin.user}:${registryLogin.password}`).toString('base64')}`;
    const res = await fetch(`${authRegistry.url}/v2/kiln/auth/manifests/v1`, { headers: { authorization: basic, accept: 'application/vnd.oci.image.manifest.v1+json' } });
    const raw = Buffer.from(await res.arrayBuffer());
    expect(`sha256:${sha256(raw)}`).toBe(pushed!.id);
    const layer = (JSON.parse(raw.toString()) as { layers: { digest: string; size: number }[] }).layers[0]!;
    const blob = await fetch(`${authRegistry.url}/v2/kiln/auth/blobs/${layer.digest}`, { method: 'HEAD', headers: { authorization: basic } });
    expect([blob.status, Number(blob.headers.get('content-length'))]).toEqual([200, layer.size]);
    // The layer is the same one the anonymous registry got (and skopeo read back above).
    expect(pushed!.id).toBe(record('oci').id);
    const [again] = await run(registryLogin.password);
    expect(again).toMatchObject({ status: 'published', unchanged: true, bytes_sent: 0, id: pushed!.id });
  }, 180_000);

  it('S3 on Swift s3api: an interrupted multipart upload is aborted (no parts left), a complete one reads back', async () => {
    const client = new S3Client({ endpoint: swift.url, region: 'us-east-1', forcePathStyle: true, credentials: { accessKeyId: swift.accessKeyId, secretAccessKey: swift.secretAccessKey } });
    await client.send(new CreateBucketCommand({ Bucket: 'images' }));
    const copy = path.join(dir, 'swift-manifest.json');
    const m = manifest();
    delete m.published;
    writeFileSync(copy, JSON.stringify(m));
    const t = publishTargetSchema.parse({ type: 's3', name: 'swift', bucket: 'images', key: 'tiny/swift.qcow2', endpoint: swift.url, force_path_style: true, part_size: '5M', concurrency: 1 });
    const swiftEnv = { ...process.env, AWS_ACCESS_KEY_ID: swift.accessKeyId, AWS_SECRET_ACCESS_KEY: swift.secretAccessKey };
    const controller = new AbortController();
    let sawProgress = false;
    const interrupted = publishManifest(copy, [t], {
      signal: controller.signal, env: swiftEnv, progress: 'lines',
      log: (line) => { if (/: 25%/.test(line) && !controller.signal.aborted) { sawProgress = true; controller.abort(new Error('interrupted by the test')); } },
    });
    await expect(interrupted).rejects.toThrow();
    expect(sawProgress).toBe(true);
    // Swift lists multipart uploads in progress (s3rver cannot): the aborted one is gone, parts and all.
    const uploads = await client.send(new ListMultipartUploadsCommand({ Bucket: 'images' }));
    expect(uploads.Uploads ?? []).toEqual([]);
    expect((await client.send(new ListObjectsV2Command({ Bucket: 'images' }))).Contents ?? []).toEqual([]);
    const [done] = await publishManifest(copy, [t], { signal: new AbortController().signal, env: swiftEnv, progress: 'none', log: () => undefined });
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
      { type: 's3', bucket: 'images', key: 'interrupted.qcow2', endpoint: s3.url, force_path_style: true, part_size: '5M', concurrency: 1 },
      { type: 'azure', container: 'vhds', blob: 'interrupted.vhd' },
      { type: 'oci', registry: registry.host, repository: 'kiln/interrupted', tags: ['latest'], insecure: true, chunk_size: '5M' },
      { type: 'glance', endpoint: glance.url, image_name: 'kiln-interrupted' },
    ].map((t) => publishTargetSchema.parse(t));
    for (const t of targets) {
      const controller = new AbortController();
      let sawProgress = false;
      const run = publishManifest(copy, [t], {
        signal: controller.signal, env: { ...process.env, ...env }, progress: 'lines',
        log: (line) => { if (/: 25%/.test(line) && !controller.signal.aborted) { sawProgress = true; controller.abort(new Error('interrupted by the test')); } },
      });
      await expect(run, t.type).rejects.toThrow();
      expect(sawProgress, t.type).toBe(true);
    }
    const client = s3Client();
    const listed = await client.send(new ListObjectsV2Command({ Bucket: 'images' }));
    expect((listed.Contents ?? []).map((o) => o.Key).sort()).toEqual(['tiny/copy.qcow2', 'tiny/pub.qcow2']);
    client.destroy();
    const blobs: string[] = [];
    for await (const b of BlobServiceClient.fromConnectionString(azure.connectionString).getContainerClient('vhds').listBlobsFlat()) blobs.push(b.name);
    expect(blobs).toEqual([artifact('vhd').name]);
    const tags = await fetch(`${registry.url}/v2/kiln/interrupted/tags/list`);
    expect(tags.status).toBe(404);
    const images = await (await fetch(`${glance.url}/v2/images`)).json() as { images: { name: string }[] };
    expect(images.images.map((i) => i.name)).toEqual(['kiln-tiny']);
    expect(readdirSync(path.join(glance.dir, 'images'))).toHaveLength(1);
  }, 180_000);
});
