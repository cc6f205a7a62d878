/**
 * Freezes a running VM's disk without a reboot: a new qcow2 overlay is put on top of the active image
 * (QMP blockdev-add + blockdev-snapshot), QEMU writes only to the overlay from then on, and the image
 * below can be copied while the guest keeps running.
 */
import { execa } from 'execa';
import type { QmpClient } from './qmp.js';
import { buildDiskCreateOptions, qemuImgBinary } from './qemu-img.js';
import { diesWithKiln } from './process.js';

/** The -drive id kiln gives the build disk (argv.ts numbers disks from 0). */
export const buildDiskDevice = 'disk0';

export async function snapshotActiveDisk(qmp: QmpClient, active: string, overlay: string, virtualSize: number, nodeName: string): Promise<void> {
  // -u: the active image is locked by QEMU, so qemu-img must not open it; the size is given instead.
  await execa(...diesWithKiln(qemuImgBinary, ['create', '-q', '-f', 'qcow2', ...buildDiskCreateOptions, '-u', '-b', active, '-F', 'qcow2', overlay, String(virtualSize)]));
  // The overlay keeps the build disk's discard/zero handling, or fstrim later would not shrink it.
  await qmp.execute('blockdev-add', {
    driver: 'qcow2', 'node-name': nodeName, file: { driver: 'file', filename: overlay },
    backing: null, discard: 'unmap', 'detect-zeroes': 'unmap', cache: { 'no-flush': true },
  });
  await qmp.execute('blockdev-snapshot', { node: buildDiskDevice, overlay: nodeName });
}
