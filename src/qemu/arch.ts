/**
 * The guest architectures kiln builds, one row each: which QEMU runs them, on which machine, with which
 * firmware and CPU, which hardware accelerators can run them on which host, and what they are called
 * where images go (OCI platforms, Glance, S3 metadata). Everything architecture-specific is read from
 * here, so adding an architecture is adding a row.
 */
import type { Accelerator } from './argv.js';

export const guestArches = ['x86_64', 'aarch64'] as const;
export type GuestArch = (typeof guestArches)[number];

export interface ArchProfile {
  arch: GuestArch;
  /** The QEMU system emulator, and the Debian package that has it (named in the missing-binary error). */
  qemuBinary: string;
  qemuPackage: string;
  /** The machine a template gets when it names none (kiln's default `pc` for x86_64). */
  defaultMachine: string;
  /** The machine types of this architecture, where a template's machine: is checked against them (x86's pc/q35 make no sense on arm64). */
  machineFamily?: RegExp;
  /** UEFI only: there is no BIOS for it, so `firmware: bios` (the default) means UEFI. */
  uefiOnly: boolean;
  /** The package with its UEFI firmware and QEMU's descriptors for it. */
  firmwarePackage: string;
  /** Under TCG, unless the template sets cpu_model; undefined: argv.ts's x86 default. */
  tcgCpuModel?: string;
  /** Disk buses the machine has: virt has no IDE or AHCI. */
  diskInterfaces: readonly string[];
  /** The guest's serial console device (for kernel command lines). */
  serialConsole: string;
  /** Names elsewhere: the OCI/Go GOARCH, Glance's `architecture` (libosinfo/Nova's name). */
  ociArchitecture: string;
  glanceArchitecture: string;
}

/**
 * cortex-a72 under TCG: the tiny arm64 guest reached SSH in 15-20 s with it (cortex-a57 14-19 s), and
 * 26-41 s with -cpu max, whose pointer authentication is costly to emulate (max,pauth=off: 16.5 s).
 * Measured with AAVMF, -smp 2, on this project's 2-core hosts under load (docs/platforms.md).
 */
const AARCH64_TCG_CPU = 'cortex-a72';

export const archProfiles: Readonly<Record<GuestArch, ArchProfile>> = {
  x86_64: {
    arch: 'x86_64',
    qemuBinary: 'qemu-system-x86_64',
    qemuPackage: 'qemu-system-x86',
    defaultMachine: 'pc',
    uefiOnly: false,
    firmwarePackage: 'ovmf',
    diskInterfaces: ['virtio', 'virtio-scsi', 'ide', 'sata', 'scsi'],
    serialConsole: 'ttyS0',
    ociArchitecture: 'amd64',
    glanceArchitecture: 'x86_64',
  },
  aarch64: {
    arch: 'aarch64',
    qemuBinary: 'qemu-system-aarch64',
    qemuPackage: 'qemu-system-arm',
    defaultMachine: 'virt',
    machineFamily: /^virt(-.*)?$/,
    uefiOnly: true,
    firmwarePackage: 'qemu-efi-aarch64',
    tcgCpuModel: AARCH64_TCG_CPU,
    diskInterfaces: ['virtio', 'virtio-scsi', 'scsi'],
    serialConsole: 'ttyAMA0',
    ociArchitecture: 'arm64',
    glanceArchitecture: 'aarch64',
  },
};

export function archProfile(arch: GuestArch | undefined): ArchProfile {
  return archProfiles[arch ?? 'x86_64'];
}

/** The host's architecture in QEMU's names (Node's process.arch), or undefined for one kiln does not build. */
export function hostArch(nodeArch: string = process.arch): GuestArch | undefined {
  return nodeArch === 'x64' ? 'x86_64' : nodeArch === 'arm64' ? 'aarch64' : undefined;
}

/**
 * Whether `accel` can run a guest of `guest` on this host at all: hardware accelerators run only the
 * host's own architecture (KVM on an x86 host cannot run an arm64 guest); TCG emulates anything.
 */
export function acceleratorFits(accel: Accelerator, guest: GuestArch, host: GuestArch | undefined): boolean {
  return accel === 'tcg' || guest === host;
}

/** The CPU model for a guest with no cpu_model: the row's TCG model under TCG, the host's CPU under a hardware accelerator. */
export function archCpuModel(arch: GuestArch | undefined, accelerator: Accelerator): string | undefined {
  const p = archProfile(arch);
  if (!p.tcgCpuModel) return undefined;
  return accelerator === 'tcg' ? p.tcgCpuModel : 'host';
}

/** A source's architecture: x86_64 unless the template says otherwise. */
export const archOf = (source: { arch?: GuestArch; machine: string }): GuestArch => source.arch ?? 'x86_64';

/** The source settings an architecture decides defaults for or rules out (a template source's, structurally). */
export interface ArchSettings {
  arch?: GuestArch;
  firmware: string;
  machine: string;
  disk_interface: string;
  floppy_files: readonly string[];
}

export interface ArchProblem {
  field: keyof ArchSettings;
  message: string;
  fix: string;
}

/**
 * Fills in what the architecture decides when the template left it at kiln's (x86) default, and says
 * what it rules out: an arm64 source gets machine virt and UEFI (AAVMF; there is no BIOS for it);
 * `given` says which of the two the template wrote itself, so an explicit `firmware: bios` is an error
 * rather than silently changed; an explicit x86_64 is removed (the default). Mutates `s`; returns the problems.
 */
export function applyArchDefaults(s: ArchSettings, given: { firmware: boolean; machine: boolean }): ArchProblem[] {
  const p = archProfile(s.arch);
  const problems: ArchProblem[] = [];
  // x86_64 written out is the default: dropped, so it keys the same layers as a source that leaves it unset.
  if (p.arch === 'x86_64') {
    delete s.arch;
    return problems;
  }
  if (!given.machine) s.machine = p.defaultMachine;
  else if (p.machineFamily && !p.machineFamily.test(s.machine)) {
    problems.push({
      field: 'machine',
      message: `"${s.machine}" is not a QEMU machine for ${p.arch} guests`,
      fix: `remove machine (${p.arch} gets ${p.defaultMachine}), or name a ${p.defaultMachine} machine type (${p.qemuBinary} -machine help)`,
    });
  }
  if (p.uefiOnly && s.firmware === 'bios') {
    if (given.firmware)
      problems.push({
        field: 'firmware',
        message: `${p.arch} guests boot UEFI only: there is no BIOS for them`,
        fix: 'remove firmware (it defaults to uefi for this arch), or set uefi or uefi-secure',
      });
    else s.firmware = 'uefi';
  }
  if (!p.diskInterfaces.includes(s.disk_interface)) {
    problems.push({
      field: 'disk_interface',
      message: `the ${p.defaultMachine} machine of ${p.arch} guests has no ${s.disk_interface} controller`,
      fix: `use one of ${p.diskInterfaces.join(', ')}`,
    });
  }
  if (s.floppy_files.length > 0) {
    problems.push({
      field: 'floppy_files',
      message: `the ${p.defaultMachine} machine of ${p.arch} guests has no floppy drive`,
      fix: 'put the files on a CD instead (cd_files)',
    });
  }
  return problems;
}
