// The debian-12-cloud fixture behaves like a downloaded cloud image: no way in without a cloud-init
// seed, real cloud-init through a cidata ISO on a UEFI boot, sudo, and a clean poweroff. Its BIOS boot
// through NoCloud-Net, a second instance on a used disk and the locked root password are checked by
// build-debian.test.ts, whose kiln build and artifact boot do exactly that (one Debian boot fewer).
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSeedIso } from '../../src/cloudinit/seed.js';
import { Guest, imagesDir, overlayOf } from '../helpers/guest.js';
import { testSeed } from '../helpers/cloud.js';

const base = path.join(imagesDir, 'debian-12-cloud.qcow2');
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-debian-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('debian-12-cloud fixture', () => {
  it('exists (built by make fixtures)', () => expect(existsSync(base), `${base} is missing: run make fixtures`).toBe(true));

  it('boots with a cidata ISO (UEFI), runs cloud-init, gives sudo, powers off', async () => {
    const disk = await overlayOf(base, dir);

    // UEFI, NoCloud seed on a cidata ISO.
    const first = testSeed('tester');
    const iso = path.join(dir, 'cidata.iso');
    await writeSeedIso(first.seed, dir, iso);
    const a = await Guest.boot({ disk, firmware: 'uefi', memoryMiB: 1024, extraDisks: [{ path: iso, format: 'raw', interface: 'virtio', readonly: true }] });
    try {
      // The host key is the one the seed injected: verified, not trusted on first use.
      const ssh = await a.ssh('tester', first.userKey.privateKey, 240_000, first.hostKey.fingerprint);
      expect((await ssh.run('cloud-init status --wait >/dev/null; cloud-init status')).trim()).toMatch(/status: done/);
      expect((await ssh.run('sudo -n id -u')).trim()).toBe('0');
      expect(await ssh.run('test -d /sys/firmware/efi && echo uefi')).toBe('uefi\n');
      expect(await ssh.run('cat /run/cloud-init/ds-identify.log 2>/dev/null | grep -o "NoCloud" | head -1 || true')).toContain('NoCloud');
      expect(await a.poweroff(ssh, 'sudo poweroff', 90_000), 'QEMU should exit after poweroff').toBe(true);
    } finally {
      await a.destroy();
    }
  }, 600_000);
});
