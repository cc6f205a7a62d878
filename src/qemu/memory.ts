/** Whether a VM's memory (MiB, as the template's loader resolved it) fits this host. */
import os from 'node:os';
import { formatBytes } from '../util/units.js';

export interface HostMemory {
  totalBytes: number;
  freeBytes: number;
}

/** This machine's RAM and what is free of it now (Linux: MemAvailable). */
export const hostMemory = (): HostMemory => ({ totalBytes: os.totalmem(), freeBytes: os.freemem() });

/**
 * Whether a guest of `memory` fits this host. More than the host's RAM cannot work: QEMU fails at start
 * with "Cannot allocate memory" (or the guest is swapped to a crawl), so it is an error at validate time.
 * More than what is free now usually starts (Linux gives pages as the guest touches them) but may push
 * the host into swap or the OOM killer mid-build: a warning.
 */
export function memoryFit(
  mib: number,
  host: HostMemory = hostMemory(),
): { error?: { message: string; fix: string }; warning?: string } {
  const bytes = mib * 2 ** 20;
  const suggested = Math.max(64, Math.floor(host.totalBytes / 2 / 2 ** 20 / 64) * 64);
  const asked = `${mib} MiB (${formatBytes(bytes)})`;
  if (bytes > host.totalBytes) {
    return {
      error: {
        message: `${asked} is more than this host's RAM (${formatBytes(host.totalBytes)}); QEMU would fail to start with "Cannot allocate memory"`,
        fix: `give the guest less than the host has, e.g. memory: ${suggested} (half of it), or build on a larger machine`,
      },
    };
  }
  if (bytes > host.freeBytes) {
    return {
      warning: `${asked} is more than this host's free memory now (${formatBytes(host.freeBytes)} of ${formatBytes(host.totalBytes)}): the build may swap or be killed; lower memory (e.g. ${Math.max(64, Math.floor(host.freeBytes / 2 ** 20 / 64) * 64)}) or free memory first`,
    };
  }
  return {};
}
