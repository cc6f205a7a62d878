/**
 * Freezing a running VM's disk without a reboot (Driver.snapshotActiveDisk): a new qcow2 overlay is put
 * on top of the active image (QMP blockdev-add + blockdev-snapshot), QEMU writes only to the overlay
 * from then on, and the image below can be copied while the guest keeps running.
 */

/** The -drive id kiln gives the build disk (argv.ts numbers disks from 0). */
export const buildDiskDevice = 'disk0';
