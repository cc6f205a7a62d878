// The tiny fixture is a real, persistent guest: SSH as root with the insecure test key, a file
// written before poweroff is there after the next boot, and poweroff ends QEMU by itself.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, imagesDir, insecureKey, overlayOf } from '../helpers/guest.js';

const tiny = path.join(imagesDir, 'tiny.qcow2');
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-tiny-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('tiny fixture', () => {
  it('exists (built by make fixtures)', () => {
    expect(existsSync(tiny), `${tiny} is missing: run make fixtures`).toBe(true);
  });

  for (const firmware of ['bios', 'uefi'] as const) {
    it(`boots (${firmware}), keeps what was written across a poweroff, and powers off cleanly`, async () => {
      const disk = await overlayOf(tiny, dir, `${firmware}.qcow2`);
      const first = await Guest.boot({ disk, firmware, memoryMiB: 256, cpus: 1 });
      let ssh;
      try {
        ssh = await first.ssh('root', insecureKey);
        expect((await ssh.run('id -u')).trim()).toBe('0');
        await ssh.run(`echo "kiln-${firmware}" > /root/persist.txt && sync`);
        // SFTP works (dropbear + OpenSSH's sftp-server).
        await ssh.uploadContent('via-sftp\n', '/root/sftp.txt');
        expect(await first.poweroff(ssh), 'QEMU should exit by itself after poweroff').toBe(true);
        expect(first.qemu.hasExited).toBe(true);
      } finally {
        await first.destroy();
      }
      const second = await Guest.boot({ disk, firmware, memoryMiB: 256, cpus: 1 });
      try {
        ssh = await second.ssh('root', insecureKey);
        expect((await ssh.run('cat /root/persist.txt /root/sftp.txt')).trim()).toBe(`kiln-${firmware}\nvia-sftp`);
        // The root filesystem really is the disk, not an initramfs.
        expect(await ssh.run('cat /proc/mounts')).toMatch(/^\/dev\/vda\d+ \/ ext4/m);
        expect(await second.poweroff(ssh)).toBe(true);
      } finally {
        await second.destroy();
      }
    }, 180_000);
  }
});
