// Publish targets' pure logic: the sectors an Azure page-blob upload sends, AWS credentials files,
// the containerDisk layer's reproducibility, and validate's errors for publish: lists.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { dataRanges } from '../../../src/publish/azure.js';
import { parseAwsCredentialsFile, s3Credentials } from '../../../src/publish/s3.js';
import { containerDiskLayer } from '../../../src/publish/oci.js';
import { buildSchema } from '../../../src/template/schema.js';
import { PublishError } from '../../../src/publish/target.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-publish-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('dataRanges (Azure page blob)', () => {
  it('finds the 512-byte sectors holding data and merges neighbours', () => {
    const buf = Buffer.alloc(512 * 10);
    buf[0] = 1;
    buf[700] = 2;
    buf[512 * 5 + 511] = 3;
    buf[512 * 9] = 4;
    expect(dataRanges(buf)).toEqual([
      [0, 1024],
      [2560, 3072],
      [4608, 5120],
    ]);
  });
  it('an all-zero buffer sends nothing; a full one is one range', () => {
    expect(dataRanges(Buffer.alloc(4096))).toEqual([]);
    expect(dataRanges(Buffer.alloc(4096, 7))).toEqual([[0, 4096]]);
  });
  it('respects a shorter length than the buffer', () => {
    const buf = Buffer.alloc(2048, 1);
    expect(dataRanges(buf, 1024)).toEqual([[0, 1024]]);
  });
});

describe('S3 credentials', () => {
  it('reads a profile of an AWS credentials file', () => {
    const text =
      '[default]\naws_access_key_id = A\naws_secret_access_key = B\n\n[profile ci]\naws_access_key_id=C # comment\naws_secret_access_key=D\n';
    expect(parseAwsCredentialsFile(text, 'default')).toMatchObject({ accessKeyId: 'A', secretAccessKey: 'B' });
    expect(parseAwsCredentialsFile(text, 'ci')).toMatchObject({ accessKeyId: 'C', secretAccessKey: 'D' });
  });
  it('names the missing variable, and never the secret', () => {
    const t = {
      type: 's3',
      bucket: 'b',
      region: 'r',
      force_path_style: true,
      part_size: '8M',
      concurrency: 1,
      profile: 'default',
      format: 'qcow2',
    } as never;
    expect(() => s3Credentials(t, { AWS_ACCESS_KEY_ID: 'x' }, 's3')).toThrow(
      /publish target "s3": AWS_SECRET_ACCESS_KEY is not set/,
    );
    expect(() => s3Credentials(t, {}, 's3')).toThrow(PublishError);
  });
});

describe('containerDisk layer', () => {
  it('is the same bytes every time, with the disk under disk/ owned by 107', async () => {
    const file = path.join(dir, 'disk.qcow2');
    writeFileSync(file, Buffer.alloc(3000, 9));
    const art = { name: 'disk.qcow2', path: file, format: 'qcow2', size: 3000, sha256: 'x' };
    const read = async () => {
      const parts: Buffer[] = [];
      for await (const c of containerDiskLayer(art)) parts.push(c as Buffer);
      return Buffer.concat(parts);
    };
    const [a, b] = [await read(), await read()];
    expect(createHash('sha256').update(a).digest('hex')).toBe(createHash('sha256').update(b).digest('hex'));
    expect(a.subarray(0, 5).toString()).toBe('disk/');
    expect(a.subarray(512, 527).toString()).toBe('disk/disk.qcow2');
    expect(a.subarray(512 + 108, 512 + 114).toString()).toBe('000153'); // uid 107 in octal
  });
});

describe('publish: in a template', () => {
  const base = { name: 'b', source: { base_image: 'x.qcow2', checksum: 'none' } };
  it('refuses a target whose format the build does not produce, naming the output to add', () => {
    const r = buildSchema.safeParse({ ...base, publish: [{ type: 'azure', container: 'vhds' }] });
    expect(r.success).toBe(false);
    const issue = r.error!.issues[0]!;
    expect(issue.path).toEqual(['publish', 0, 'format']);
    expect(issue.message).toMatch(/uploads a vhd artifact, which this build does not produce \(outputs: qcow2\)/);
    expect((issue as { params?: { fix?: string } }).params?.fix).toMatch(/format: vhd/);
  });
  it('refuses two targets with the same name and a secret field', () => {
    const r = buildSchema.safeParse({
      ...base,
      publish: [
        { type: 's3', bucket: 'abc' },
        { type: 's3', bucket: 'def' },
      ],
    });
    expect(r.error!.issues[0]!.message).toMatch(/two publish targets are named "s3"/);
    const s = buildSchema.safeParse({ ...base, publish: [{ type: 's3', bucket: 'abc', secret_access_key: 'x' }] });
    expect(s.success).toBe(false);
  });
  it('accepts the four targets with their defaults', () => {
    const r = buildSchema.parse({
      ...base,
      outputs: [{ format: 'qcow2' }, { format: 'vhd' }],
      publish: [
        { type: 's3', bucket: 'images', endpoint: 'http://127.0.0.1:9000', force_path_style: true },
        { type: 'azure', container: 'vhds' },
        { type: 'glance', endpoint: 'http://127.0.0.1:9292' },
        { type: 'oci', registry: '127.0.0.1:5000', repository: 'kiln/tiny', insecure: true },
      ],
    });
    expect(r.publish.map((p) => p.format)).toEqual(['qcow2', 'vhd', 'qcow2', 'qcow2']);
  });
  it('takes the UEFI variable store (format: efi-vars) to S3 from a UEFI build, and names the firmware fix for a BIOS one', () => {
    const vars = { type: 's3', name: 'vars', bucket: 'images', format: 'efi-vars' };
    const uefi = buildSchema.safeParse({
      ...base,
      source: { ...base.source, firmware: 'uefi' },
      publish: [{ type: 's3', bucket: 'images' }, vars],
    });
    expect(uefi.success).toBe(true);
    const bios = buildSchema.safeParse({ ...base, publish: [vars] });
    expect(bios.success).toBe(false);
    const issue = bios.error!.issues[0]!;
    expect(issue.path).toEqual(['publish', 0, 'format']);
    expect(issue.message).toMatch(/uploads the UEFI variable store \(efi-vars\), which only a UEFI build writes/);
    expect((issue as { params?: { fix?: string } }).params?.fix).toMatch(/firmware: uefi/);
    // The other targets take disks only: their format lists refuse it.
    const glance = buildSchema.safeParse({
      ...base,
      source: { ...base.source, firmware: 'uefi' },
      publish: [{ type: 'glance', endpoint: 'http://127.0.0.1:9292', format: 'efi-vars' }],
    });
    expect(glance.success).toBe(false);
    // A UEFI build's message lists the store among what it produces.
    const missing = buildSchema.safeParse({
      ...base,
      source: { ...base.source, firmware: 'uefi' },
      publish: [{ type: 'azure', container: 'vhds' }],
    });
    expect(missing.error!.issues[0]!.message).toMatch(/\(outputs: qcow2, and efi-vars\)/);
  });
});
