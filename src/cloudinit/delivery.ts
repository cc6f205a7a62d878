/**
 * How the seed reaches the guest. A template may say (cloud_init.delivery); where it does not, kiln
 * attaches a cidata CD when xorriso is there to make one: cloud-init's local stage then finds the
 * seed and its network stage does not search for one over HTTP (8 pairs of bench builds of the Debian
 * fixture run side by side under TCG: SSH up a median 2.7 s sooner, docs/benchmarks.md). Without xorriso kiln serves
 * the seed over HTTP, which needs nothing on the host. A -smbios type=1 switch of the template's takes
 * the SMBIOS table the HTTP seed's URL would ride in, so that also means the CD.
 */
import { findExecutable } from '../qemu/process.js';
import { smbiosType1Switch } from '../template/qemu-args.js';

export type SeedDelivery = 'http' | 'cdrom';

export interface ResolvedDelivery {
  delivery: SeedDelivery;
  /** Why kiln chose, when the template left it to kiln. */
  chosen?: string;
}

export function resolveSeedDelivery(
  delivery: SeedDelivery | undefined,
  qemuArgs: readonly (readonly string[])[],
  hasXorriso: () => boolean = () => findExecutable('xorriso') !== undefined,
): ResolvedDelivery {
  if (delivery) return { delivery };
  if (smbiosType1Switch(qemuArgs))
    return {
      delivery: 'cdrom',
      chosen: "a cidata CD (qemu_args sets SMBIOS type 1, where an HTTP seed's URL would go)",
    };
  if (hasXorriso()) return { delivery: 'cdrom', chosen: 'a cidata CD (xorriso makes it)' };
  return {
    delivery: 'http',
    chosen:
      "kiln's HTTP server, as xorriso is not installed (with it, a cidata CD brings SSH up ~2 s sooner: apt-get install xorriso; make setup installs it)",
  };
}
