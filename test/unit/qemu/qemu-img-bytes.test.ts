// QemuImg.readStart / writeBytes on a real qcow2 (qemu-img dd, qemu-io): pieces written at an odd offset
// read back as written, in order, and a write qemu-io refuses is an error, not a quiet exit 0.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { QemuImg } from '../../../src/qemu/qemu-img.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-qemu-io-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('QemuImg bytes in and out', () => {
  it('writes pieces into a qcow2 in order and reads them back from its start, with spaces in every path', async () => {
    // qemu-io splits its commands at spaces: neither the temp directory nor the disk's path may matter.
    const spaced = path.join(dir, 'a dir');
    mkdirSync(spaced);
    const tmpdir = process.env.TMPDIR;
    process.env.TMPDIR = spaced;
    try {
      const disk = path.join(spaced, 'd.qcow2');
      await execa('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '1M']);
      const img = new QemuImg();
      const data = randomBytes(1000);
      const later = randomBytes(10);
      await img.writeBytes(disk, 'qcow2', [
        { offset: 12345, data },
        { offset: 12345, data: later },
      ]);
      const start = await img.readStart(disk, 'qcow2', 17408);
      expect(start.length).toBe(17408);
      expect(start.subarray(12345, 12355).equals(later)).toBe(true);
      expect(start.subarray(12355, 13345).equals(data.subarray(10))).toBe(true);
      expect(start.subarray(0, 12345).every((b) => b === 0)).toBe(true);
      // Past the end of the disk: qemu-io says so (and exits 0), kiln throws.
      await expect(img.writeBytes(disk, 'qcow2', [{ offset: 2 ** 20 - 10, data }])).rejects.toThrow(
        /writing 1000 bytes into .*d\.qcow2 failed/,
      );
    } finally {
      if (tmpdir === undefined) delete process.env.TMPDIR;
      else process.env.TMPDIR = tmpdir;
    }
  });
});
