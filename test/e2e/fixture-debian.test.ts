// The debian-12-cloud fixture behaves like a downloaded cloud image: no way in without a cloud-init
// seed, real cloud-init through a cidata ISO (UEFI boot) and through NoCloud-Net (BIOS boot), sudo,
// and what is written on one boot is there on the next.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSeedIso } from '../../src/cloudinit/seed.js';
import { BootConfigServer } from '../../src/http/server.js';
import { Guest, imagesDir, overlayOf } from '../helpers/guest.js';
import { testSeed } from '../helpers/cloud.js';

const base = path.join(imagesDir, 'debian-12-cloud.qcow2');
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-debian-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('debian-12-cloud fixture', () => {
  it('exists (built by make fixtures)', () => expect(existsSync(base), `${base} is missing: run make fixtures`).toBe(true));

  it('boots with a cidata ISO (UEFI) and NoCloud-Net (BIOS), runs cloud-init, keeps data across boots', async () => {
    const disk = await overlayOf(base, dir);

    // First boot: UEFI, NoCloud seed on a cidata ISO.
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
      await ssh.run('echo persisted | sudo tee /var/lib/kiln-marker >/dev/null && sync');
      expect(await a.poweroff(ssh, 'sudo poweroff', 90_000), 'QEMU should exit after poweroff').toBe(true);
    } finally {
      await a.destroy();
    }

    // Second boot: BIOS, a new instance through NoCloud-Net (seed URL in SMBIOS, served on loopback).
    const second = testSeed('other');
    const server = new BootConfigServer({ content: { '/seed/user-data': second.seed.userData, '/seed/meta-data': second.seed.metaData, '/seed/vendor-data': '' } });
    const port = await server.listen();
    const b = await Guest.boot({ disk, memoryMiB: 1024, smbiosSerial: `ds=nocloud-net;s=http://10.0.2.2:${port}/seed/` });
    try {
      const ssh = await b.ssh('other', second.userKey.privateKey, 240_000, second.hostKey.fingerprint);
      expect(await ssh.run('cat /var/lib/kiln-marker')).toBe('persisted\n');
      expect((await ssh.run('cloud-init status --wait >/dev/null; cloud-init query instance-id')).trim()).toBe(second.seed.instanceId);
      expect(await ssh.run('sudo -n passwd -S root | cut -d" " -f2')).toMatch(/^L/); // no root password
      expect(await b.poweroff(ssh, 'sudo poweroff', 90_000)).toBe(true);
    } finally {
      await b.destroy();
      await server.close();
    }
  }, 600_000);
});
