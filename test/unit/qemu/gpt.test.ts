// growRootPartition on partition tables util-linux's sfdisk wrote (a cloud image's layout: BIOS boot
// and ESP first, root last), applied to a larger raw disk and read back by sfdisk: the table is
// valid (sfdisk --verify), the root partition ends at the new last usable sector, nothing else moved.
import {
  closeSync,
  mkdtempSync,
  openSync,
  readFileSync,
  rmSync,
  truncateSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { gptHeadBytes, growRootPartition } from '../../../src/qemu/gpt.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-gpt-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const MiB = 2 ** 20;

interface SfdiskTable {
  partitiontable: {
    lastlba: number;
    partitions: { node: string; start: number; size: number; type: string }[];
  };
}

/** A sparse raw disk of `mib` MiB partitioned by sfdisk from `script`. */
async function disk(name: string, mib: number, script: string): Promise<string> {
  const file = path.join(dir, name);
  writeFileSync(file, '');
  truncateSync(file, mib * MiB);
  await execa('sfdisk', ['--quiet', '--no-reread', '--no-tell-kernel', file], { input: script });
  return file;
}
const table = async (file: string) =>
  (JSON.parse((await execa('sfdisk', ['--json', file])).stdout) as SfdiskTable).partitiontable;
const head = (file: string) => readFileSync(file).subarray(0, gptHeadBytes);

const cloudLayout = [
  'label: gpt',
  'start=2048, size=2048, type=21686148-6449-6E6F-744E-656564454649',
  'size=32M, type=C12A7328-F81F-11D2-BA4B-00A0C93EC93B',
  'type=0FC63DAF-8483-4772-8E79-3D69D8477DE4',
  '',
].join('\n');

describe('growRootPartition', () => {
  it("grows a cloud image's last (root) partition to a larger disk, as sfdisk then reads it", async () => {
    const file = await disk('cloud.raw', 64, cloudLayout);
    const before = await table(file);
    const r = growRootPartition(head(file), 64 * MiB, 256 * MiB);
    if (!('grown' in r)) throw new Error(r.skipped);
    truncateSync(file, 256 * MiB);
    const fd = openSync(file, 'r+');
    for (const w of r.grown.writes) writeSync(fd, w.data, 0, w.data.length, w.offset);
    closeSync(fd);
    const v = await execa('sfdisk', ['--verify', file], { reject: false, all: true });
    expect(v.exitCode, v.all).toBe(0);
    expect(v.all).not.toMatch(/mismatch|corrupt|invalid/i);
    const after = await table(file);
    const newLastUsable = (256 * MiB) / 512 - 34;
    expect(after.lastlba).toBe(newLastUsable);
    expect(r.grown).toMatchObject({ partition: 3, newEndLba: newLastUsable });
    // The first two partitions are as they were; the root starts where it did and ends at the disk's end.
    expect(after.partitions.slice(0, 2)).toEqual(before.partitions.slice(0, 2));
    const root = after.partitions[2]!;
    expect(root.start).toBe(before.partitions[2]!.start);
    expect(root.start + root.size - 1).toBe(newLastUsable);
    // The primary and the backup tables agree: sfdisk reads the backup when told the primary is gone.
    const fd2 = openSync(file, 'r+');
    writeSync(fd2, Buffer.alloc(512), 0, 512, 512);
    closeSync(fd2);
    const fromBackup = await execa('sfdisk', ['--json', file], { reject: false, all: true });
    expect(fromBackup.exitCode, fromBackup.all).toBe(0);
    expect((JSON.parse(fromBackup.stdout) as SfdiskTable).partitiontable.partitions[2]!.size).toBe(root.size);
  });

  it('leaves to cloud-init what it cannot know is the root: an MBR disk, a non-Linux last partition, two Linux partitions, a smaller disk, a damaged table', async () => {
    const skipped = (file: string, oldMiB: number, newMiB: number) => {
      const r = growRootPartition(head(file), oldMiB * MiB, newMiB * MiB);
      return 'skipped' in r ? r.skipped : 'grown';
    };
    const mbr = await disk('mbr.raw', 64, 'label: dos\nstart=2048, type=83\n');
    expect(skipped(mbr, 64, 128)).toMatch(/no GPT/);
    const swapLast = await disk(
      'swap.raw',
      64,
      'label: gpt\nsize=40M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\ntype=0657FD6D-A4AB-43C4-84E5-0933C84B4F4F\n',
    );
    expect(skipped(swapLast, 64, 128)).toMatch(/not the one Linux root partition/);
    const twoLinux = await disk(
      'two.raw',
      64,
      'label: gpt\nsize=20M, type=0FC63DAF-8483-4772-8E79-3D69D8477DE4\ntype=0FC63DAF-8483-4772-8E79-3D69D8477DE4\n',
    );
    expect(skipped(twoLinux, 64, 128)).toMatch(/not the one Linux root partition/);
    const cloud = await disk('cloud2.raw', 64, cloudLayout);
    expect(skipped(cloud, 64, 64)).toMatch(/not larger/);
    // The disk was grown before (its backup is not at the old end): sfdisk's view of 128 MiB is not the base's.
    expect(skipped(cloud, 32, 128)).toMatch(/backup is not at the end/);
    const damaged = Buffer.from(head(cloud));
    damaged[1024 + 40]! ^= 0xff; // a byte of the first entry: the entries' checksum no longer matches
    const r = growRootPartition(damaged, 64 * MiB, 128 * MiB);
    expect('skipped' in r && r.skipped).toMatch(/entries' checksum/);
  });
});
