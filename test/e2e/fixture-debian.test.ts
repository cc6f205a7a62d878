// The debian-12-cloud fixture behaves like a downloaded cloud image: no way in without a cloud-init
// seed. Its boots are checked by build-debian.test.ts, which builds from it (BIOS, NoCloud-Net seed over
// HTTP, a second instance on a used disk, the locked root password) and boots the artifact under UEFI
// with a cidata ISO (cloud-init done, NoCloud, sudo, a clean poweroff): one Debian boot per path.
import { existsSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import { describe, expect, it } from 'vitest';
import { imagesDir } from '../helpers/guest.js';

const base = path.join(imagesDir, 'debian-12-cloud.qcow2');

describe('debian-12-cloud fixture', () => {
  it('exists (built by make fixtures) and is a sound qcow2', async () => {
    expect(existsSync(base), `${base} is missing: run make fixtures`).toBe(true);
    const check = await execa('qemu-img', ['check', base], { reject: false });
    expect(check.exitCode, check.stdout + check.stderr).toBe(0);
  });
});
