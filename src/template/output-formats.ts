/**
 * The output format table, the one place that says how each format is produced and named: straight
 * by qemu-img (with which qemu-img format, and whether `qemu-img check` applies), or packaged (OVA,
 * box, GCE). The build's convert step, `kiln verify` and validation all read it.
 */
import type { OutputConfig } from './schema.js';

/** The disk formats qemu-img writes itself: its name for each, and whether `qemu-img check` can check it. */
export const diskFormats = {
  qcow2: { qemuFormat: 'qcow2', extension: 'qcow2', checkable: true },
  // Written sparse by qemu-img; `qemu-img check` has nothing to check in a raw file.
  raw: { qemuFormat: 'raw', extension: 'raw', checkable: false },
  vmdk: { qemuFormat: 'vmdk', extension: 'vmdk', checkable: true },
  vhdx: { qemuFormat: 'vhdx', extension: 'vhdx', checkable: true },
  vhd: { qemuFormat: 'vpc', extension: 'vhd', checkable: false },
} as const satisfies Record<string, { qemuFormat: string; extension: string; checkable: boolean }>;

export type DiskFormat = keyof typeof diskFormats;

/** What a Vagrant box holds of kiln's own (src/artifacts/vagrant.ts); `include` adds files beside them. */
export const vagrantBoxEntries = ['metadata.json', 'Vagrantfile', 'box.img'] as const;

/** The table's entry for a format name read back from a manifest; undefined for a packaged format. */
export function diskFormat(format: string): (typeof diskFormats)[DiskFormat] | undefined {
  return Object.hasOwn(diskFormats, format) ? diskFormats[format as DiskFormat] : undefined;
}

export interface DiskPlan {
  kind: 'disk';
  qemuFormat: string;
  extension: string;
  options: string[];
  compress: boolean;
  checkable: boolean;
}
export interface PackagePlan {
  kind: 'package';
  packageFormat: 'ova' | 'vagrant' | 'gce';
  extension: string;
}
export type FormatPlan = DiskPlan | PackagePlan;

function disk(format: DiskFormat, options: string[], compress: boolean): DiskPlan {
  const { qemuFormat, extension, checkable } = diskFormats[format];
  return { kind: 'disk', qemuFormat, extension, options, compress, checkable };
}

export function planFor(o: OutputConfig): FormatPlan {
  switch (o.format) {
    case 'qcow2':
      // zstd: 4-5x faster than zlib at nearly the same size (measured: 1.8 s vs 8.4 s, 138 vs 142 MiB).
      return disk('qcow2', ['compat=1.1', ...(o.compress ? ['compression_type=zstd'] : [])], o.compress);
    case 'raw':
      return disk('raw', [], false);
    case 'vmdk': {
      const subformat = o.subformat ?? (o.compress ? 'streamOptimized' : 'monolithicSparse');
      return disk(
        'vmdk',
        [`subformat=${subformat}`, ...(o.adapter_type ? [`adapter_type=${o.adapter_type}`] : [])],
        false,
      );
    }
    case 'vhdx':
      return disk('vhdx', ['subformat=dynamic'], false);
    case 'vhd':
      // Azure wants a fixed VHD whose size is a whole number of MiB; force_size keeps the exact size
      // instead of rounding to the CHS geometry (the disk is first grown to a whole MiB if needed).
      return disk('vhd', ['subformat=fixed', 'force_size=on'], false);
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
