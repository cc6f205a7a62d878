// The base-image check, on images made here with the real qemu-img: each bad image must be refused
// with its real cause before QEMU would boot it; sound images (and the fixtures) must pass.
import { randomBytes } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it, vi } from 'vitest';
import { BaseImageError, checkBaseImage } from '../../../src/qemu/image-check.js';
import { qemuImgBinary } from '../../../src/qemu/qemu-img.js';
import { imagesDir } from '../../helpers/guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-image-check-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const at = (name: string) => path.join(dir, name);
const qemuImg = (...args: string[]) => execa(qemuImgBinary, args);
const MiB = 1 << 20;

/** A raw disk of `size` bytes: random data (so qcow2 clusters are allocated) behind an MBR boot signature. */
function rawDisk(name: string, size: number): string {
  const disk = randomBytes(size);
  disk[510] = 0x55;
  disk[511] = 0xaa;
  writeFileSync(at(name), disk);
  return at(name);
}

/** The first `bytes` of `src`, as a copy cut short by an interrupted download would hold. */
function cutShort(src: string, name: string, bytes: number): string {
  writeFileSync(at(name), readFileSync(src).subarray(0, bytes));
  return at(name);
}

async function refusal(file: string, bootSectorRequired = true): Promise<string> {
  const e = await checkBaseImage(file, { bootSectorRequired }).then(
    () => undefined,
    (err: unknown) => err,
  );
  expect(e, `${file} was accepted`).toBeInstanceOf(BaseImageError);
  return (e as Error).message;
}

let raw = '';
let qcow2 = '';
beforeAll(async () => {
  raw = rawDisk('disk.raw', 4 * MiB);
  qcow2 = at('disk.qcow2');
  await qemuImg('convert', '-f', 'raw', '-O', 'qcow2', raw, qcow2);
});

describe('sound base images pass', () => {
  it('a raw disk with an MBR, a qcow2 of it, a vdi and a vmdk of it', async () => {
    expect(await checkBaseImage(raw, { bootSectorRequired: true })).toEqual({ format: 'raw', warnings: [] });
    expect(await checkBaseImage(qcow2, { bootSectorRequired: true })).toEqual({ format: 'qcow2', warnings: [] });
    for (const format of ['vdi', 'vmdk']) {
      await qemuImg('convert', '-f', 'raw', '-O', format, raw, at(`disk.${format}`));
      expect(await checkBaseImage(at(`disk.${format}`), { bootSectorRequired: true })).toEqual({
        format,
        warnings: [],
      });
    }
  });

  it('a raw disk with only a GPT header at LBA 1', async () => {
    const disk = Buffer.alloc(2 * MiB);
    disk.write('EFI PART', 512, 'latin1');
    writeFileSync(at('gpt.raw'), disk);
    expect(await checkBaseImage(at('gpt.raw'), { bootSectorRequired: true })).toEqual({ format: 'raw', warnings: [] });
  });

  it('a raw file system image without a boot sector when QEMU boots a kernel directly', async () => {
    writeFileSync(at('rootfs.raw'), Buffer.alloc(2 * MiB));
    expect(await checkBaseImage(at('rootfs.raw'), { bootSectorRequired: false })).toEqual({
      format: 'raw',
      warnings: [],
    });
  });

  it.each(['tiny.qcow2', 'debian-12-cloud.qcow2'])('the fixture %s', async (name) => {
    const fixture = path.join(imagesDir, name);
    if (!existsSync(fixture)) return; // not built on this machine (make fixtures)
    expect(await checkBaseImage(fixture, { bootSectorRequired: true })).toEqual({ format: 'qcow2', warnings: [] });
  });

  it('a qcow2 with a leaked cluster passes with a warning (wasted space, no harm)', async () => {
    // Mark the cluster just past the end of the file as used in the refcount block, then add it: a
    // cluster counted but referenced by nothing, as a crash between two metadata writes leaves.
    const image = Buffer.from(readFileSync(qcow2));
    const clusterSize = 1 << image.readUInt32BE(20);
    const refcountBlock = Number(image.readBigUInt64BE(Number(image.readBigUInt64BE(48))));
    image.writeUInt16BE(1, refcountBlock + 2 * (image.length / clusterSize));
    writeFileSync(at('leak.qcow2'), Buffer.concat([image, Buffer.alloc(clusterSize)]));
    expect(await checkBaseImage(at('leak.qcow2'), { bootSectorRequired: true })).toEqual({
      format: 'qcow2',
      warnings: [
        `base image ${at('leak.qcow2')}: qemu-img check found 1 leaked cluster(s): wasted space in the file, harmless to its data`,
      ],
    });
  });
});

describe('damaged base images are refused', () => {
  it('a qcow2 cut short inside its data', async () => {
    const file = cutShort(qcow2, 'cut.qcow2', 2 * MiB);
    expect(await refusal(file)).toMatch(
      new RegExp(
        `^base image ${file} is damaged: its qcow2 data reaches byte \\d+ but the file has ${2 * MiB} bytes: it was cut short\\n  fix: copy or download it again`,
      ),
    );
  });

  it('a qcow2 cut short inside its metadata', async () => {
    const file = cutShort(qcow2, 'cut-meta.qcow2', 100_000);
    expect(await refusal(file)).toMatch(
      new RegExp(
        `^base image ${file} is damaged: qemu-img check found \\d+ corruption\\(s\\), the first: ERROR.+\\n  fix: copy or download it again.+; \`qemu-img check -f qcow2 ${file}\` lists every problem$`,
      ),
    );
  });

  it('a qcow2 cut inside its header', async () => {
    const file = cutShort(qcow2, 'cut-header.qcow2', 50);
    expect(await refusal(file)).toMatch(
      new RegExp(
        `^base image ${file} is damaged: qemu-img cannot open it: qcow2 header too short\\n  fix: copy or download it again`,
      ),
    );
  });

  it('a qcow2 left dirty by a QEMU that stopped without closing it', async () => {
    await qemuImg('create', '-q', '-f', 'qcow2', '-o', 'lazy_refcounts=on', at('dirty.qcow2'), '4M');
    // qemu-io's abort command stops it after the write, before it closes the image; cwd: any core file stays in the temp dir.
    await execa('qemu-io', ['-c', 'write 0 1M', '-c', 'abort', at('dirty.qcow2')], { reject: false, cwd: dir });
    expect(await refusal(at('dirty.qcow2'))).toBe(
      `base image ${at('dirty.qcow2')} is damaged: its qcow2 dirty flag is set: the QEMU that last wrote it stopped without closing it, so its reference counts are stale\n  fix: repair it with \`qemu-img check -r all ${at('dirty.qcow2')}\`, or copy it again from its source`,
    );
  });

  it('a vdi cut short (qemu-img check alone passes it)', async () => {
    const file = cutShort(at('disk.vdi'), 'cut.vdi', 2 * MiB);
    expect(await refusal(file)).toMatch(
      new RegExp(
        `^base image ${file} is damaged: its vdi data reaches byte \\d+ but the file has ${2 * MiB} bytes: it was cut short\\n`,
      ),
    );
  });

  it('a vmdk cut short', async () => {
    const file = cutShort(at('disk.vmdk'), 'cut.vmdk', 2 * MiB);
    expect(await refusal(file)).toMatch(
      new RegExp(
        `^base image ${file} is damaged: qemu-img check could not finish: .+\\n  fix: copy or download it again`,
      ),
    );
  });
});

it('an image another process has open for writing is named as in use, not as damaged', async () => {
  const file = at('in-use.qcow2');
  await qemuImg('create', '-q', '-f', 'qcow2', file, '4M');
  const holder = execa('qemu-io', ['-c', 'sleep 600000', file], { reject: false });
  try {
    // QEMU takes its image locks as open file description locks, listed in /proc/locks by inode.
    const inode = statSync(file).ino;
    await vi.waitFor(() => expect(readFileSync('/proc/locks', 'utf8')).toMatch(new RegExp(`:${inode} `)), {
      timeout: 60_000,
    });
    expect(await refusal(file)).toBe(
      `base image ${file} is in use by another process: Failed to get shared "write" lock\n  fix: stop the VM or program that has it open for writing, or give kiln a copy`,
    );
  } finally {
    holder.kill();
    await holder;
  }
});

describe('files that are no bootable disk are refused', () => {
  it('a text file', async () => {
    writeFileSync(at('notes.txt'), '<!DOCTYPE html>\n<title>404 Not Found</title>\n');
    expect(await refusal(at('notes.txt'))).toBe(
      `base image ${at('notes.txt')} is not a bootable disk image: it is a text file, starting "<!DOCTYPE html>"\n  fix: point base_image at a disk image (qcow2, raw, vmdk...); if it was downloaded, the server sent a page or a message instead of the image`,
    );
  });

  it('an empty file', async () => {
    writeFileSync(at('empty.img'), '');
    expect(await refusal(at('empty.img'))).toMatch(
      new RegExp(`^base image ${at('empty.img')} is not a bootable disk image: the file is empty\\n  fix: `),
    );
  });

  it('a raw disk of zeros: no boot sector', async () => {
    writeFileSync(at('zeros.raw'), Buffer.alloc(2 * MiB));
    expect(await refusal(at('zeros.raw'))).toBe(
      `base image ${at('zeros.raw')} is not a bootable disk image: its first sector is blank: no MBR boot signature (0x55AA at byte 510) and no GPT header ("EFI PART" at LBA 1)\n  fix: point base_image at a whole bootable disk (e.g. a distribution's cloud image); a file system image or a blank disk has no boot loader`,
    );
  });

  it('a raw disk smaller than 1 MiB', async () => {
    const file = rawDisk('small.raw', 64 * 1024);
    expect(await refusal(file)).toMatch(
      new RegExp(
        `^base image ${file} is not a bootable disk image: its disk is only 64.0 KiB, too small to hold an operating system\\n`,
      ),
    );
  });

  it('a qcow2 whose disk is smaller than 1 MiB', async () => {
    await qemuImg('create', '-q', '-f', 'qcow2', at('small.qcow2'), '64K');
    expect(await refusal(at('small.qcow2'))).toMatch(/is not a bootable disk image: its disk is only 64.0 KiB/);
  });

  it('an ISO 9660 image without a hybrid boot sector', async () => {
    const iso = Buffer.alloc(2 * MiB);
    iso.write('\x01CD001', 0x8000, 'latin1');
    writeFileSync(at('cd.iso'), iso);
    expect(await refusal(at('cd.iso'))).toBe(
      `base image ${at('cd.iso')} is not a bootable disk image: it is an ISO 9660 CD image without a hybrid boot sector, which boots from a CD drive, not from a disk\n  fix: give it as iso: (an installer to boot from CD) instead of base_image`,
    );
  });

  it('a qcow2 with a backing file', async () => {
    await qemuImg('create', '-q', '-f', 'qcow2', '-b', qcow2, '-F', 'qcow2', at('overlay.qcow2'));
    expect(await refusal(at('overlay.qcow2'))).toBe(
      `base image ${at('overlay.qcow2')} has a backing file (${qcow2}), which kiln does not follow\n  fix: give kiln a self-contained image: qemu-img convert -O qcow2 ${at('overlay.qcow2')} <new file>`,
    );
  });
});
