// The shared remote layer cache end to end, on the tiny guest and real S3 servers on loopback (s3rver,
// and Debian's Swift with s3api for multipart uploads): a cold builder shares its final disk; a second
// builder with an empty local cache pulls it and converts without booting, and its artifact passes
// kiln verify; a blob overwritten in the bucket is caught by its digest and rebuilt; a deleted blob is a
// miss; a read-only builder uploads nothing; a cold builder of a template sharing provisioner 1 pulls that
// intermediate layer by digest and runs only the rest on it; SIGTERM during an upload leaves no record and no
// multipart upload. Facts come from events, the bucket and the files, never from timing.
import { cpSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createHash } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import type { Readable } from 'node:stream';
import {
  CreateBucketCommand,
  DeleteObjectCommand,
  GetObjectCommand,
  ListMultipartUploadsCommand,
  ListObjectsV2Command,
  PutObjectCommand,
  S3Client,
} from '@aws-sdk/client-s3';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln, outputLines, spawnKiln, type KilnRun } from '../helpers/kiln.js';
import { awsEnvFor, startS3, startSwift, type RunningServer } from '../helpers/servers/index.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-remote-'));
const template = path.join(dir, 'remote.yaml');
// 24 MiB of random data in the guest: the shared final disk goes up in several parts (8 MiB each).
writeFileSync(
  template,
  `
variables:
  out: { default: ${path.join(dir, 'out', 'one')} }
builds:
  - name: remote
    output_directory: \${var.out}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['head -c 25165824 /dev/urandom > /root/payload', 'echo shared > /root/marker']
    outputs:
      - format: qcow2
`,
);

type S3Server = RunningServer & { accessKeyId: string; secretAccessKey: string };
let s3: S3Server;
let swift: Promise<S3Server>;
let client: S3Client;
const bucket = 'cache';

const envFor = (server: S3Server, name: string) => ({
  ...awsEnvFor(server),
  KILN_CACHE_DIR: path.join(dir, `cache-${name}`),
});
const build = (server: S3Server, name: string, remote: string, extra: string[] = []) =>
  kiln(
    [
      'build',
      '--events=json',
      '--progress=never',
      '--var',
      `out=${path.join(dir, 'out', name)}`,
      '--cache-remote',
      remote,
      ...extra,
      template,
    ],
    envFor(server, name),
  );

const keys = async (c: S3Client, prefix: string) =>
  ((await c.send(new ListObjectsV2Command({ Bucket: bucket, Prefix: prefix }))).Contents ?? [])
    .map((o) => o.Key!)
    .sort();
const stepsStarted = (r: KilnRun) => r.events.filter((e) => e.type === 'step-start').map((e) => e.step as string);
const logs = (r: KilnRun, level?: string) =>
  r.events.filter((e) => e.type === 'log' && (!level || e.level === level)).map((e) => String(e.message));
const buildMs = (r: KilnRun) => Number(r.events.find((e) => e.type === 'build-end')?.ms);
const bytesOf = async (body: Readable) => Buffer.concat((await body.toArray()) as Buffer[]);
/** The remote cache's records under a prefix, as the bucket holds them. */
const recordsUnder = async (prefix: string) =>
  Promise.all(
    (await keys(client, prefix)).map(
      async (k) =>
        JSON.parse(
          (
            await bytesOf((await client.send(new GetObjectCommand({ Bucket: bucket, Key: k }))).Body as Readable)
          ).toString(),
        ) as { kind: string; parent: string | null; digest: string; base: string },
    ),
  );

beforeAll(async () => {
  swift = startSwift();
  swift.catch(() => undefined);
  s3 = await startS3(bucket);
  client = new S3Client({
    endpoint: s3.url,
    region: 'us-east-1',
    forcePathStyle: true,
    credentials: { accessKeyId: s3.accessKeyId, secretAccessKey: s3.secretAccessKey },
  });
}, 60_000);

afterAll(async () => {
  client?.destroy();
  await Promise.all([
    s3?.stop(),
    swift?.then(
      (s) => s.stop(),
      () => undefined,
    ),
  ]);
  rmSync(dir, { recursive: true, force: true });
});

describe('remote layer cache (tiny guest, s3rver and Swift s3api)', () => {
  let cold: KilnRun;
  let blobKeys: string[];
  let recordKeys: string[];

  it('a cold build shares its final disk: a blob named by its sha256, then one record naming it; nothing else leaves the machine', async () => {
    cold = await build(s3, 'one', `s3://${bucket}/a`);
    expect(cold.exitCode, cold.stderr).toBe(0);
    expect(stepsStarted(cold)).toContain('launch QEMU');
    expect(
      logs(cold).some((m) => /^remote cache: shared the final disk [0-9a-f]{12} \(blob [0-9a-f]{12}/.test(m)),
      logs(cold).join('\n'),
    ).toBe(true);
    blobKeys = await keys(client, 'a/blobs/');
    recordKeys = await keys(client, 'a/layers/');
    // Only the final disk: one blob, one record (no intermediate layer, no VM state).
    expect(blobKeys).toHaveLength(1);
    expect(recordKeys).toHaveLength(1);
    const digest = blobKeys[0]!.slice('a/blobs/sha256/'.length);
    expect(recordKeys[0]).toMatch(new RegExp(`^a/layers/[0-9a-f]{64}/${digest}\\.json$`));
    const blob = await bytesOf(
      (await client.send(new GetObjectCommand({ Bucket: bucket, Key: blobKeys[0] }))).Body as Readable,
    );
    expect(createHash('sha256').update(blob).digest('hex')).toBe(digest);
    const record = JSON.parse(
      (
        await bytesOf(
          (await client.send(new GetObjectCommand({ Bucket: bucket, Key: recordKeys[0] }))).Body as Readable,
        )
      ).toString(),
    );
    expect(record).toMatchObject({ kind: 'final', digest, size: blob.length, parent: null, epoch: 0 });
    console.log(
      `remote cache: the tiny guest's final disk (with 24 MiB of random data) went up as ${(blob.length / 2 ** 20).toFixed(1)} MiB`,
    );
    expect(record.base).toMatch(/^[0-9a-f]{64}$/);
    // The local layer keys appear nowhere in the bucket (names are keyed hashes of them).
    const localKeys = readFileSync(path.join(dir, 'out', 'one', 'manifest.json'), 'utf8').match(/[0-9a-f]{64}/g) ?? [];
    for (const k of recordKeys) for (const local of localKeys) expect(k).not.toContain(local);
  }, 240_000);

  it('a second builder with an empty cache pulls it and converts without booting; its artifact verifies', async () => {
    const second = await build(s3, 'two', `s3://${bucket}/a`);
    expect(second.exitCode, second.stderr).toBe(0);
    const started = stepsStarted(second);
    expect(started).not.toContain('launch QEMU');
    expect(started).not.toContain('wait for SSH');
    expect(logs(second).some((m) => m.startsWith('remote cache: pulled the final disk'))).toBe(true);
    const verified = await kiln(['verify', path.join(dir, 'out', 'two', 'manifest.json')]);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
    // Nothing new was shared: it holds what the bucket has.
    expect(await keys(client, 'a/')).toEqual([...blobKeys, ...recordKeys].sort());
    console.log(
      `remote cache: builder 1 ${(buildMs(cold) / 1000).toFixed(1)} s, builder 2 (pulled, no boot) ${(buildMs(second) / 1000).toFixed(1)} s`,
    );
    // Set up the next cases: the same shared disk under two more prefixes.
    for (const prefix of ['b', 'c']) {
      for (const key of [...blobKeys, ...recordKeys]) {
        const body = await bytesOf(
          (await client.send(new GetObjectCommand({ Bucket: bucket, Key: key }))).Body as Readable,
        );
        await client.send(new PutObjectCommand({ Bucket: bucket, Key: `${prefix}${key.slice(1)}`, Body: body }));
      }
    }
  }, 240_000);

  it('a blob overwritten with other bytes is caught on pull and rebuilt (sharing its layers when asked); a deleted blob is a miss; a read-only builder uploads nothing', async () => {
    const blobB = `b${blobKeys[0]!.slice(1)}`;
    const original = await bytesOf(
      (await client.send(new GetObjectCommand({ Bucket: bucket, Key: blobB }))).Body as Readable,
    );
    const other = Buffer.from(original);
    other[other.length >> 1] = other[other.length >> 1]! ^ 0xff;
    await client.send(new PutObjectCommand({ Bucket: bucket, Key: blobB, Body: other }));
    await client.send(new DeleteObjectCommand({ Bucket: bucket, Key: `c${blobKeys[0]!.slice(1)}` }));
    const before = await keys(client, 'c/');
    // Both at once: each boots, as neither may use what it found.
    const [damaged, readonly] = await Promise.all([
      build(s3, 'three', `s3://${bucket}/b`, ['--cache-remote-intermediate']),
      build(s3, 'four', `s3://${bucket}/c`, ['--cache-remote-readonly']),
    ]);
    expect(damaged.exitCode, damaged.stderr).toBe(0);
    expect(
      logs(damaged, 'warn').some((m) => /^remote cache: blob [0-9a-f]{12} in s3:\/\/cache\/b is damaged/.test(m)),
      logs(damaged).join('\n'),
    ).toBe(true);
    expect(stepsStarted(damaged)).toContain('launch QEMU');
    // It shared its own final disk beside the damaged one and, asked to, the layer after provisioner 1,
    // which backs onto the base: three records, each naming its own blob.
    const records = await recordsUnder('b/layers/');
    expect(records.map((r) => r.kind).sort()).toEqual(['final', 'final', 'layer']);
    expect(records.find((r) => r.kind === 'layer')!.parent).toBeNull();
    for (const r of records) expect(await keys(client, `b/blobs/sha256/${r.digest}`)).toHaveLength(1);
    expect(
      logs(damaged).some((m) => /^remote cache: shared the layer after provisioner 1 /.test(m)),
      logs(damaged).join('\n'),
    ).toBe(true);

    expect(readonly.exitCode, readonly.stderr).toBe(0);
    expect(
      logs(readonly, 'warn').some((m) => /^remote cache: blob [0-9a-f]{12} is missing from s3:\/\/cache\/c/.test(m)),
      logs(readonly).join('\n'),
    ).toBe(true);
    expect(stepsStarted(readonly)).toContain('launch QEMU');
    expect(await keys(client, 'c/')).toEqual(before);
    expect(logs(readonly).some((m) => m.includes('sharing the final disk'))).toBe(false);
  }, 300_000);

  it('a cold builder of a template sharing provisioner 1 pulls that shared layer by digest and resumes on it', async () => {
    // The same build with a second provisioner: layer 1's key is the one builder "three" shared above
    // (with --cache-remote-intermediate); a cold builder pulls it, checks it by digest, and runs only
    // provisioner 2, on top of what provisioner 1 wrote on the other machine.
    const chained = path.join(dir, 'chained.yaml');
    writeFileSync(
      chained,
      readFileSync(template, 'utf8').replace(
        "'echo shared > /root/marker']",
        "'echo shared > /root/marker']\n      - type: shell\n        inline: ['echo \"under: $(cat /root/marker)\"']",
      ),
    );
    const shared = (await recordsUnder('b/layers/')).find((r) => r.kind === 'layer')!;
    const r = await kiln(
      [
        'build',
        '--events=json',
        '--progress=never',
        '--var',
        `out=${path.join(dir, 'out', 'chain')}`,
        '--cache-remote',
        `s3://${bucket}/b`,
        '--cache-remote-intermediate',
        chained,
      ],
      envFor(s3, 'chain'),
    );
    expect(r.exitCode, r.stderr.slice(-2000)).toBe(0);
    const pulled = logs(r).find((m) => m.startsWith('remote cache: pulled the layers of provisioners 1-1 '));
    expect(pulled, logs(r).join('\n')).toContain(`(${shared.digest.slice(0, 12)})`);
    expect(r.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0]);
    expect(r.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index)).toEqual([1]);
    expect(outputLines(r.events, 'provisioner 2')).toContain('under: shared');
    // The pulled layer backs onto the base image this build used (the record names it by digest).
    const manifest = JSON.parse(readFileSync(path.join(dir, 'out', 'chain', 'manifest.json'), 'utf8')) as {
      base_image: { sha256: string };
    };
    expect(shared.parent).toBeNull();
    expect(shared.base).toBe(manifest.base_image.sha256);
    const disk = path.join(dir, 'out', 'chain', 'remote.qcow2');
    expect((await execa('qemu-img', ['check', disk], { reject: false })).exitCode).toBe(0);
  }, 300_000);

  it('SIGTERM during an upload to Swift s3api: no record, no multipart upload left, exit 143', async () => {
    const server = await swift;
    const sc = new S3Client({
      endpoint: server.url,
      region: 'us-east-1',
      forcePathStyle: true,
      credentials: { accessKeyId: server.accessKeyId, secretAccessKey: server.secretAccessKey },
    });
    try {
      await sc.send(new CreateBucketCommand({ Bucket: bucket }));
      // The first builder's local cache: the final disk is there, the remote lacks it, so it is shared (no boot).
      cpSync(path.join(dir, 'cache-one'), path.join(dir, 'cache-five'), { recursive: true });
      let signalled = false;
      const run = spawnKiln(
        [
          'build',
          '--events=json',
          '--progress=never',
          '--var',
          `out=${path.join(dir, 'out', 'five')}`,
          '--cache-remote',
          `s3://${bucket}/d`,
          template,
        ],
        {
          env: envFor(server, 'five'),
          onEvent: (e, pid) => {
            if (
              !signalled &&
              e.type === 'log' &&
              String(e.message).startsWith('remote cache: sharing the final disk')
            ) {
              signalled = true;
              process.kill(pid, 'SIGTERM');
            }
          },
        },
      );
      const end = await run.done;
      expect(signalled, end.stderr).toBe(true);
      expect(end.exitCode, end.stderr).toBe(143);
      expect(stepsStarted(end)).not.toContain('launch QEMU');
      expect(await keys(sc, 'd/layers/')).toEqual([]);
      expect((await sc.send(new ListMultipartUploadsCommand({ Bucket: bucket }))).Uploads ?? []).toEqual([]);
    } finally {
      sc.destroy();
    }
  }, 180_000);
});
