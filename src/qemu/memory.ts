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

/** What the host keeps for itself beside a guest whose memory is allocated up front. */
export const preallocHeadroomMiB = 1024;

/**
 * source.memory_prealloc: whether QEMU allocates the guest's RAM at start (-mem-prealloc), and why not
 * when auto declines. Up front, the guest's first touch of each page costs no host page fault (in a
 * nested or busy host each is dear: the Debian fixture's boot and its first state save were measured
 * slower without), and the first VM save reads populated memory instead of faulting in every untouched
 * page. The price is the whole of `memory` taken at once, so auto asks for it only when it is free now
 * with headroom to spare; an explicit true is the user's call.
 */
export function preallocDecision(
  setting: boolean | 'auto',
  mib: number,
  host: HostMemory = hostMemory(),
  promisedMiB = preallocPromisedMiB(),
): { prealloc: boolean; why?: string } {
  if (setting !== 'auto') return { prealloc: setting };
  const needed = (mib + preallocHeadroomMiB + promisedMiB) * 2 ** 20;
  if (host.freeBytes >= needed) return { prealloc: true };
  const others = promisedMiB > 0 ? `, of which ${promisedMiB} MiB is promised to other builds' starting VMs` : '';
  return {
    prealloc: false,
    why: `not giving the guest its ${mib} MiB up front (memory_prealloc: auto): the host has ${formatBytes(host.freeBytes)} free${others}, less than that and ${preallocHeadroomMiB} MiB to spare; it gets pages as it touches them`,
  };
}

/**
 * Memory that builds in this process (--parallel-builds) decided to allocate up front and whose QEMU
 * has not taken it yet: the host's free memory does not show it, so builds starting together would
 * each count the same free memory.
 */
let promised = 0;
export const preallocPromisedMiB = (): number => promised;

/** Counts `mib` as promised until the returned function is called (once QEMU took it, or the build ended); calling it again does nothing. */
export function promisePrealloc(mib: number): () => void {
  promised += mib;
  let kept = false;
  return () => {
    if (kept) return;
    kept = true;
    promised -= mib;
  };
}
