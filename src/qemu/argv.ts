/**
 * Builds qemu-system-x86_64's argument list from a typed description of the VM. Pure: no I/O, so every
 * combination is unit-tested, and nothing else in kiln assembles QEMU command lines.
 */
import { shellWord } from '../communicator/remote-command.js';

export type Accelerator = 'kvm' | 'tcg' | 'hvf' | 'whpx';

export interface DiskSpec {
  path: string;
  format: 'qcow2' | 'raw' | 'vmdk';
  interface: 'virtio' | 'virtio-scsi' | 'ide' | 'scsi';
  /** Pass guest TRIM through and turn zero writes into holes (keeps artifacts small). */
  discard?: boolean;
  readonly?: boolean;
}

export interface VmSpec {
  name: string;
  accelerator: Accelerator;
  cpus: number;
  memoryMiB: number;
  machine: string;
  /** QEMU's -cpu value; undefined: defaultCpuModel(accelerator). */
  cpuModel?: string;
  firmware: { type: 'bios' } | { type: 'uefi'; code: string; vars: string };
  disks: DiskSpec[];
  cdroms?: string[];
  floppy?: string;
  /** Boot the CD once (an installer), then the disk on every later reset. */
  bootCdromOnce?: boolean;
  net?: {
    device: string;
    hostForwards: { hostPort: number; guestPort: number }[];
    /** Air-gapped builds: the guest reaches nothing but hostfwd's and guestForwards' ports (slirp restrict=on). */
    restrict?: boolean;
    /** guestIp:guestPort inside the guest -> 127.0.0.1:hostPort, a connection each (socat per connection). */
    guestForwards?: { guestIp: string; guestPort: number; hostPort: number }[];
  };
  /**
   * A binary SMBIOS type 1 structure (smbios.ts) whose system serial carries cloud-init's NoCloud-Net
   * seed URL. A file, not `-smbios type=1,serial=`: the command line is readable by every local user.
   */
  smbiosType1File?: string;
  qmpSocket: string;
  /** Serial console: a unix socket kiln can type into, mirrored to a log file. */
  serial?: { socket: string; log: string };
  headless: boolean;
  /** Extra switches; one whose flag kiln also sets replaces all of kiln's uses of that flag. */
  extraArgs?: string[][];
}

/**
 * The CPU a TCG guest gets unless the template names one: x86-64-v2 (SSSE3, SSE4.1/4.2, POPCNT on top of
 * qemu64's CX16, LAHF, SSE3), the least that RHEL 9-class systems boot on, with qemu64's AMD identity.
 * Measured against qemu64 (Packer's default), Nehalem and max on the Debian fixture (bench/cpu-models.mjs,
 * README "Benchmarks"): "max" gives the guest 5-level paging (la57), AVX/AVX2 and nested SVM, all paid
 * for in emulation; an Intel identity turns on the Meltdown page-table isolation (every system call then
 * flushes TCG's whole TLB); with an AMD identity and more than one vCPU the guest's kernel distrusts the
 * TSC and reads the HPET instead, whatever the model. Under KVM (and the other hardware accelerators) the
 * guest gets the host's CPU, as before.
 */
export const TCG_DEFAULT_CPU_MODEL = 'qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt';

export function defaultCpuModel(accelerator: Accelerator): string {
  return accelerator === 'tcg' ? TCG_DEFAULT_CPU_MODEL : 'host';
}

/** The CPU model a command line gives the guest: its last -cpu (QEMU takes the last), else QEMU's own default. */
export function cpuModelOf(argv: readonly string[]): string {
  const i = argv.lastIndexOf('-cpu');
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : 'qemu64';
}

/** QEMU's -drive/-device syntax uses ',' as separator; a literal comma is written ',,'. */
export function escapeOption(value: string): string {
  return value.replaceAll(',', ',,');
}

function diskArgs(disk: DiskSpec, index: number): string[][] {
  const id = `disk${index}`;
  const opts = [`file=${escapeOption(disk.path)}`, `format=${disk.format}`, `id=${id}`, 'cache=unsafe'];
  if (disk.discard) opts.push('discard=unmap', 'detect-zeroes=unmap');
  if (disk.readonly) opts.push('readonly=on');
  switch (disk.interface) {
    case 'virtio':
      return [['-drive', `${opts.join(',')},if=virtio`]];
    case 'ide':
      return [['-drive', `${opts.join(',')},if=ide`]];
    case 'virtio-scsi':
      return [['-device', `virtio-scsi-pci,id=scsi${index}`], ['-drive', `${opts.join(',')},if=none`], ['-device', `scsi-hd,drive=${id},bus=scsi${index}.0`]];
    case 'scsi':
      return [['-device', `lsi53c895a,id=scsi${index}`], ['-drive', `${opts.join(',')},if=none`], ['-device', `scsi-hd,drive=${id},bus=scsi${index}.0`]];
  }
}

/** The switches as groups ([flag, value?]); overrides work on groups, then they are flattened. */
export function buildQemuArgGroups(vm: VmSpec): string[][] {
  const g: string[][] = [];
  g.push(['-name', `${escapeOption(vm.name)},process=kiln-${escapeOption(vm.name)}`]);
  g.push(['-machine', `${vm.machine}`]);
  g.push(['-accel', vm.accelerator === 'tcg' ? 'tcg,thread=multi' : vm.accelerator]);
  g.push(['-cpu', vm.cpuModel ?? defaultCpuModel(vm.accelerator)]);
  g.push(['-smp', String(vm.cpus)]);
  g.push(['-m', `${vm.memoryMiB}M`]);
  if (vm.firmware.type === 'uefi') {
    g.push(['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${escapeOption(vm.firmware.code)}`]);
    g.push(['-drive', `if=pflash,format=raw,unit=1,file=${escapeOption(vm.firmware.vars)}`]);
  }
  vm.disks.forEach((d, i) => g.push(...diskArgs(d, i)));
  for (const iso of vm.cdroms ?? []) g.push(['-drive', `file=${escapeOption(iso)},media=cdrom,readonly=on`]);
  if (vm.floppy) g.push(['-drive', `file=${escapeOption(vm.floppy)},if=floppy,format=raw`]);
  if (vm.net) {
    const fwd = vm.net.hostForwards.map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`).join('');
    const gfwd = (vm.net.guestForwards ?? []).map((f) => `,guestfwd=tcp:${f.guestIp}:${f.guestPort}-cmd:socat - TCP:127.0.0.1:${f.hostPort}`).join('');
    g.push(['-netdev', `user,id=net0${vm.net.restrict ? ',restrict=on' : ''}${fwd}${gfwd}`]);
    g.push(['-device', `${vm.net.device},netdev=net0`]);
  } else {
    g.push(['-nic', 'none']);
  }
  // Guests block on entropy at boot without a source (dropbear waited 1.4 s for it).
  g.push(['-device', 'virtio-rng-pci']);
  if (vm.smbiosType1File) g.push(['-smbios', `file=${escapeOption(vm.smbiosType1File)}`]);
  g.push(['-qmp', `unix:${vm.qmpSocket},server=on,wait=off`]);
  if (vm.serial) {
    g.push(['-chardev', `socket,id=serial0,path=${escapeOption(vm.serial.socket)},server=on,wait=off,logfile=${escapeOption(vm.serial.log)},logappend=on`]);
    g.push(['-serial', 'chardev:serial0']);
  } else {
    g.push(['-serial', 'none']);
  }
  if (vm.headless) g.push(['-display', 'none']);
  g.push(['-monitor', 'none']);
  g.push(['-no-user-config']);
  g.push(['-boot', vm.bootCdromOnce ? 'order=c,once=d,menu=off' : 'order=cd,menu=off']);

  for (const extra of vm.extraArgs ?? []) {
    const flag = extra[0];
    // A switch QEMU accepts many times (-device, -drive...) is added; a single-valued one replaces ours.
    const repeatable = new Set(['-device', '-drive', '-netdev', '-chardev', '-object', '-smbios', '-fw_cfg', '-global', '-nic']);
    if (flag && !repeatable.has(flag)) {
      for (let i = g.length - 1; i >= 0; i--) if (g[i]![0] === flag) g.splice(i, 1);
    }
    g.push([...extra]);
  }
  return g;
}

export function buildQemuArgs(vm: VmSpec): string[] {
  return buildQemuArgGroups(vm).flat();
}

/** A copy-pasteable rendering of a command line, for logs and error messages. */
export function shellQuote(argv: string[]): string {
  return argv.map(shellWord).join(' ');
}
