// QemuImg.readStart / writeAt on a real qcow2 (qemu-img dd, qemu-io): bytes written at an odd offset
// read back as written, and a write qemu-io refuses is an error, not a quiet exit 0.
import { mkdtempSync, rmSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { QemuImg } from '../../../src/qemu/qemu-img.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-qemu-io-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('QemuImg bytes in and out', () => {
  it('writes bytes into a qcow2 and reads them back from its start', async () => {
    const disk = path.join(dir, 'd.qcow2');
    await execa('qemu-img', ['create', '-q', '-f', 'qcow2', disk, '1M']);
    const img = new QemuImg();
    const data = randomBytes(1000);
    await img.writeAt(disk, 'qcow2', 12345, data);
    const start = await img.readStart(disk, 'qcow2', 17408);
    expect(start.length).toBe(17408);
    expect(start.subarray(12345, 13345).equals(data)).toBe(true);
    expect(start.subarray(0, 12345).every((b) => b === 0)).toBe(true);
    // Past the end of the disk: qemu-io says so (and exits 0), kiln throws.
    await expect(img.writeAt(disk, 'qcow2', 2 ** 20 - 10, data)).rejects.toThrow(
      /writing 1000 bytes into .*d\.qcow2 failed/,
    );
  });
});
