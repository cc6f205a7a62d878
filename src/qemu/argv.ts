/**
 * Builds qemu-system-x86_64's argument list from a typed description of the VM. Pure: no I/O, so every
 * combination is unit-tested, and nothing else in kiln assembles QEMU command lines.
 */
import { shellWord } from '../communicator/remote-command.js';
import { buildDiskDevice } from './live-snapshot.js';
import { tpmQemuArgs } from './tpm.js';
import { archCpuModel, type GuestArch } from './arch.js';

export type Accelerator = 'kvm' | 'tcg' | 'hvf' | 'whpx';

export interface DiskSpec {
  path: string;
  format: 'qcow2' | 'raw' | 'vmdk';
  interface: 'virtio' | 'virtio-scsi' | 'ide' | 'sata' | 'scsi';
  /** Pass guest TRIM through and turn zero writes into holes (keeps artifacts small). */
  discard?: boolean;
  readonly?: boolean;
}

export interface VmSpec {
  name: string;
  /** The guest's architecture (default x86_64): its default CPU model and how CD-ROMs attach (src/qemu/arch.ts). */
  arch?: GuestArch;
  accelerator: Accelerator;
  cpus: number;
  memoryMiB: number;
  /** -mem-prealloc: all of memoryMiB is allocated at start, not page by page as the guest touches it. */
  preallocMemory?: boolean;
  machine: string;
  /** QEMU's -cpu value; undefined: defaultCpuModel(accelerator). */
  cpuModel?: string;
  /** smm: the firmware keeps its variables behind SMM (Secure Boot): smm=on and a secure pflash. */
  firmware: { type: 'bios' } | { type: 'uefi'; code: string; vars: string; smm?: boolean };
  /** A TPM 2.0: the control socket of the build's swtpm (src/qemu/tpm.ts). */
  tpmSocket?: string;
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
  /**
   * Extra switches. By default one whose flag kiln also sets replaces kiln's uses of that flag if QEMU
   * takes it once (-m, -boot...), and is added beside kiln's if QEMU takes it many times (-drive...).
   */
  extraArgs?: string[][];
  /** A VM generation ID device (a new GUID each start), so a guest restored from a saved state can tell (src/qemu/vm-state.ts). */
  vmgenid?: boolean;
  /** `-incoming defer`: start paused, waiting for a saved state (QMP migrate-incoming) instead of booting. */
  incoming?: boolean;
  /**
   * Packer's qemuargs rule (source.qemu_args_replace): any switch in extraArgs replaces all of kiln's
   * defaults of that switch, repeatable or not, so a template's own -drive/-device lines are the VM's
   * drives and devices. kiln's controls stay whatever extraArgs say: the QMP socket, the serial console,
   * the user network with the SSH forward and its card, the cloud-init seed drive, -monitor none.
   */
  extraArgsReplace?: boolean;
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
  const id = index === 0 ? buildDiskDevice : `disk${index}`;
  const opts = [`file=${escapeOption(disk.path)}`, `format=${disk.format}`, `id=${id}`, 'cache=unsafe'];
  if (disk.discard) opts.push('discard=unmap', 'detect-zeroes=unmap');
  if (disk.readonly) opts.push('readonly=on');
  switch (disk.interface) {
    case 'virtio':
      return [['-drive', `${opts.join(',')},if=virtio`]];
    case 'ide':
      return [['-drive', `${opts.join(',')},if=ide`]];
    case 'virtio-scsi':
      return [
        ['-device', `virtio-scsi-pci,id=scsi${index}`],
        ['-drive', `${opts.join(',')},if=none`],
        ['-device', `scsi-hd,drive=${id},bus=scsi${index}.0`],
      ];
    case 'sata': // an AHCI controller of its own (QEMU has no if=sata)
      return [
        ['-device', `ahci,id=sata${index}`],
        ['-drive', `${opts.join(',')},if=none`],
        ['-device', `ide-hd,drive=${id},bus=sata${index}.0`],
      ];
    case 'scsi':
      return [
        ['-device', `lsi53c895a,id=scsi${index}`],
        ['-drive', `${opts.join(',')},if=none`],
        ['-device', `scsi-hd,drive=${id},bus=scsi${index}.0`],
      ];
  }
}

/** Switches QEMU accepts many times: by default a qemu_args one is added beside kiln's. */
const repeatable = new Set([
  '-device',
  '-drive',
  '-netdev',
  '-chardev',
  '-object',
  '-smbios',
  '-fw_cfg',
  '-global',
  '-nic',
]);

/**
 * The flag under which a kiln default is replaced in Packer's rule, where it is not its own: the floppy
 * is Packer's -fda (a template's -drive lines leave it in), and QEMU refuses -accel beside a -machine
 * that names an accelerator, so such a -machine replaces kiln's -accel too.
 */
function replacedBy(extra: readonly string[]): string[] {
  const flag = extra[0]!;
  if (flag === '-machine' && /(?:^|,)accel=/.test(extra[1] ?? '')) return ['-machine', '-accel'];
  return [flag];
}

/** QEMU's option items (`a=b,c=d`; ",," is a literal comma). */
const optionItems = (value: string) => value.split(/(?<!,),(?!,)/);

/**
 * The template's own -drive for the build disk (its file= is the disk kiln made) gets kiln's drive id,
 * which kiln's live snapshots name over QMP; the -device lines that attach it by its old id follow.
 */
function withBuildDiskId(extras: readonly string[][], diskPath: string | undefined): string[][] {
  const out = extras.map((e) => [...e]);
  if (diskPath === undefined) return out;
  const drive = out.find(
    (e) =>
      e[0] === '-drive' &&
      optionItems(e[1] ?? '').some((o) => o === `file=${diskPath}` || o === `file=${escapeOption(diskPath)}`),
  );
  if (!drive) return out;
  const items = optionItems(drive[1]!);
  const old = items.find((o) => o.startsWith('id='))?.slice(3);
  if (old === buildDiskDevice) return out;
  drive[1] = [...items.filter((o) => !o.startsWith('id=')), `id=${buildDiskDevice}`].join(',');
  if (old === undefined) return out;
  for (const e of out) {
    if (e[0] === '-device' && e[1])
      e[1] = optionItems(e[1])
        .map((o) => (o === `drive=${old}` ? `drive=${buildDiskDevice}` : o))
        .join(',');
  }
  return out;
}

/** The switches as groups ([flag, value?]); overrides work on groups, then they are flattened. */
export function buildQemuArgGroups(vm: VmSpec): string[][] {
  const g: string[][] = [];
  // Groups kiln steers the VM with (never replaced in Packer's rule), and defaults filed under another flag.
  const controls = new Set<string[]>();
  const filedAs = new Map<string[], string>();
  const control = (group: string[]) => {
    controls.add(group);
    g.push(group);
  };
  g.push(['-name', `${escapeOption(vm.name)},process=kiln-${escapeOption(vm.name)}`]);
  const smm = vm.firmware.type === 'uefi' && vm.firmware.smm === true;
  g.push(['-machine', smm ? `${vm.machine},smm=on` : vm.machine]);
  g.push(['-accel', vm.accelerator === 'tcg' ? 'tcg,thread=multi' : vm.accelerator]);
  g.push(['-cpu', vm.cpuModel ?? archCpuModel(vm.arch, vm.accelerator) ?? defaultCpuModel(vm.accelerator)]);
  g.push(['-smp', String(vm.cpus)]);
  g.push(['-m', `${vm.memoryMiB}M`]);
  if (vm.preallocMemory) g.push(['-mem-prealloc']);
  if (vm.firmware.type === 'uefi') {
    g.push(['-drive', `if=pflash,format=raw,unit=0,readonly=on,file=${escapeOption(vm.firmware.code)}`]);
    g.push(['-drive', `if=pflash,format=raw,unit=1,file=${escapeOption(vm.firmware.vars)}`]);
    // Only SMM code may write the variable store: what makes Secure Boot's keys tamper-proof from the OS.
    if (smm) g.push(['-global', 'driver=cfi.pflash01,property=secure,value=on']);
  }
  if (vm.tpmSocket) for (const group of tpmQemuArgs(escapeOption(vm.tpmSocket))) g.push(group);
  vm.disks.forEach((d, i) => {
    // A read-only disk is kiln's cloud-init seed (its SSH key): kept, as the SSH network is.
    for (const group of diskArgs(d, i)) {
      if (d.readonly) control(group);
      else g.push(group);
    }
  });
  // arm64's virt machine has no IDE: its CD-ROMs are SCSI CDs on a virtio-scsi controller of their own.
  const cdScsi = vm.arch !== undefined && vm.arch !== 'x86_64' && (vm.cdroms ?? []).length > 0;
  if (cdScsi) g.push(['-device', 'virtio-scsi-pci,id=cdscsi']);
  (vm.cdroms ?? []).forEach((iso, i) => {
    if (!cdScsi) {
      g.push(['-drive', `file=${escapeOption(iso)},media=cdrom,readonly=on`]);
      return;
    }
    g.push(
      ['-drive', `file=${escapeOption(iso)},media=cdrom,readonly=on,if=none,id=cd${i}`],
      ['-device', `scsi-cd,drive=cd${i},bus=cdscsi.0`],
    );
  });
  if (vm.floppy) {
    const floppy = ['-drive', `file=${escapeOption(vm.floppy)},if=floppy,format=raw`];
    filedAs.set(floppy, '-fda');
    g.push(floppy);
  }
  if (vm.net) {
    const fwd = vm.net.hostForwards.map((f) => `,hostfwd=tcp:127.0.0.1:${f.hostPort}-:${f.guestPort}`).join('');
    const gfwd = (vm.net.guestForwards ?? [])
      .map((f) => `,guestfwd=tcp:${f.guestIp}:${f.guestPort}-cmd:socat - TCP:127.0.0.1:${f.hostPort}`)
      .join('');
    control(['-netdev', `user,id=net0${vm.net.restrict ? ',restrict=on' : ''}${fwd}${gfwd}`]);
    control(['-device', `${vm.net.device},netdev=net0`]);
  } else {
    control(['-nic', 'none']);
  }
  // Guests block on entropy at boot without a source (dropbear waited 1.4 s for it).
  g.push(['-device', 'virtio-rng-pci']);
  if (vm.vmgenid) control(['-device', 'vmgenid,guid=auto']);
  if (vm.smbiosType1File) control(['-smbios', `file=${escapeOption(vm.smbiosType1File)}`]);
  control(['-qmp', `unix:${vm.qmpSocket},server=on,wait=off`]);
  if (vm.serial) {
    control([
      '-chardev',
      `socket,id=serial0,path=${escapeOption(vm.serial.socket)},server=on,wait=off,logfile=${escapeOption(vm.serial.log)},logappend=on`,
    ]);
    control(['-serial', 'chardev:serial0']);
  } else {
    control(['-serial', 'none']);
  }
  if (vm.headless) g.push(['-display', 'none']);
  control(['-monitor', 'none']);
  control(['-no-user-config']);
  g.push(['-boot', vm.bootCdromOnce ? 'order=c,once=d,menu=off' : 'order=cd,menu=off']);

  const extras = vm.extraArgs ?? [];
  if (vm.extraArgsReplace) {
    // Packer's rule: the switches the template gives, minus kiln's controls, are all of kiln's defaults gone.
    const given = new Set(extras.flatMap(replacedBy));
    for (let i = g.length - 1; i >= 0; i--) {
      const group = g[i]!;
      if (!controls.has(group) && given.has(filedAs.get(group) ?? group[0]!)) g.splice(i, 1);
    }
    g.push(...withBuildDiskId(extras, vm.disks[0]?.path));
    return g;
  }
  for (const extra of extras) {
    const flag = extra[0];
    // A switch QEMU accepts many times (-device, -drive...) is added; a single-valued one replaces ours.
    if (flag && !repeatable.has(flag)) {
      for (let i = g.length - 1; i >= 0; i--) if (g[i]![0] === flag) g.splice(i, 1);
    }
    g.push([...extra]);
  }
  return g;
}

export function buildQemuArgs(vm: VmSpec): string[] {
  const argv = buildQemuArgGroups(vm).flat();
  return vm.incoming ? [...argv, '-incoming', 'defer'] : argv;
}

/** A copy-pasteable rendering of a command line, for logs and error messages. */
export function shellQuote(argv: string[]): string {
  return argv.map(shellWord).join(' ');
}
