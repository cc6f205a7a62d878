/** How each output format is produced and named: straight by qemu-img, or packaged (OVA, box, GCE). */
import type { OutputConfig } from '../template/schema.js';

export interface DiskPlan { kind: 'disk'; qemuFormat: string; extension: string; options: string[]; compress: boolean; checkable: boolean }
export interface PackagePlan { kind: 'package'; packageFormat: 'ova' | 'vagrant' | 'gce'; extension: string }
export type FormatPlan = DiskPlan | PackagePlan;

export function planFor(o: OutputConfig): FormatPlan {
  switch (o.format) {
    case 'qcow2':
      // zstd: 4-5x faster than zlib at nearly the same size (measured: 1.8 s vs 8.4 s, 138 vs 142 MiB).
      return { kind: 'disk', qemuFormat: 'qcow2', extension: 'qcow2', options: ['compat=1.1', ...(o.compress ? ['compression_type=zstd'] : [])], compress: o.compress, checkable: true };
    case 'raw':
      // Written sparse by qemu-img; `qemu-img check` has nothing to check in a raw file.
      return { kind: 'disk', qemuFormat: 'raw', extension: 'raw', options: [], compress: false, checkable: false };
    case 'vmdk': {
      const subformat = o.subformat ?? (o.compress ? 'streamOptimized' : 'monolithicSparse');
      return { kind: 'disk', qemuFormat: 'vmdk', extension: 'vmdk', options: [`subformat=${subformat}`, ...(o.adapter_type ? [`adapter_type=${o.adapter_type}`] : [])], compress: false, checkable: true };
    }
    case 'vhdx':
      return { kind: 'disk', qemuFormat: 'vhdx', extension: 'vhdx', options: ['subformat=dynamic'], compress: false, checkable: true };
    case 'vhd':
      // Azure wants a fixed VHD whose size is a whole number of MiB; force_size keeps the exact size
      // instead of rounding to the CHS geometry (the disk is first grown to a whole MiB if needed).
      return { kind: 'disk', qemuFormat: 'vpc', extension: 'vhd', options: ['subformat=fixed', 'force_size=on'], compress: false, checkable: false };
    case 'ova':
      return { kind: 'package', packageFormat: 'ova', extension: 'ova' };
    case 'vagrant':
      return { kind: 'package', packageFormat: 'vagrant', extension: 'box' };
    case 'gce':
      return { kind: 'package', packageFormat: 'gce', extension: 'tar.gz' };
  }
}

export function artifactName(buildName: string, o: OutputConfig): string {
  return o.name ?? `${buildName}.${planFor(o).extension}`;
}
