import { describe, expect, it } from 'vitest';
import {
  buildQemuArgs,
  buildQemuArgGroups,
  cpuModelOf,
  escapeOption,
  shellQuote,
  TCG_DEFAULT_CPU_MODEL,
  type VmSpec,
} from '../../../src/qemu/argv.js';

const vm: VmSpec = {
  name: 'tiny',
  accelerator: 'tcg',
  cpus: 2,
  memoryMiB: 1024,
  machine: 'pc',
  firmware: { type: 'bios' },
  disks: [{ path: '/w/disk.qcow2', format: 'qcow2', interface: 'virtio', discard: true }],
  net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: 2222, guestPort: 22 }] },
  qmpSocket: '/w/qmp.sock',
  serial: { socket: '/w/serial.sock', log: '/w/serial.log' },
  headless: true,
};
const value = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('buildQemuArgs', () => {
  it('builds a TCG VM with the disk, forwarding only on loopback, QMP and a logged serial socket', () => {
    const a = buildQemuArgs(vm);
    expect(value(a, '-accel')).toEqual(['tcg,thread=multi']);
    expect(value(a, '-cpu')).toEqual([TCG_DEFAULT_CPU_MODEL]);
    expect(value(a, '-smp')).toEqual(['2']);
    expect(value(a, '-m')).toEqual(['1024M']);
    expect(value(a, '-drive')).toEqual([
      'file=/w/disk.qcow2,format=qcow2,id=disk0,cache=unsafe,discard=unmap,detect-zeroes=unmap,if=virtio',
    ]);
    expect(value(a, '-netdev')).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22']);
    expect(value(a, '-qmp')).toEqual(['unix:/w/qmp.sock,server=on,wait=off']);
    expect(value(a, '-chardev')[0]).toContain('logfile=/w/serial.log');
    expect(value(a, '-display')).toEqual(['none']);
    expect(a).toContain('virtio-rng-pci');
  });
  it('allocates the guest memory up front only when asked (-mem-prealloc beside -m)', () => {
    expect(buildQemuArgs(vm)).not.toContain('-mem-prealloc');
    const a = buildQemuArgs({ ...vm, preallocMemory: true });
    expect(a.slice(a.indexOf('-m'), a.indexOf('-m') + 3)).toEqual(['-m', '1024M', '-mem-prealloc']);
  });
  it('uses host CPU under KVM', () => {
    const a = buildQemuArgs({ ...vm, accelerator: 'kvm' });
    expect(value(a, '-accel')).toEqual(['kvm']);
    expect(value(a, '-cpu')).toEqual(['host']);
  });
  it('gives a TCG guest x86-64-v2 on qemu64, not max (5-level paging, AVX and nested SVM all cost in emulation)', () => {
    expect(TCG_DEFAULT_CPU_MODEL).toBe('qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt');
    // x86-64-v2 is qemu64's CX16, LAHF_LM and SSE3 plus these four.
    for (const f of ['ssse3', 'sse4.1', 'sse4.2', 'popcnt'])
      expect(TCG_DEFAULT_CPU_MODEL.split(',')).toContain(`+${f}`);
    expect(buildQemuArgs(vm)).not.toContain('max');
  });
  it("takes the template's CPU model under any accelerator, and qemu_args' -cpu over both", () => {
    expect(value(buildQemuArgs({ ...vm, cpuModel: 'max' }), '-cpu')).toEqual(['max']);
    expect(value(buildQemuArgs({ ...vm, accelerator: 'kvm', cpuModel: 'Haswell' }), '-cpu')).toEqual(['Haswell']);
    expect(value(buildQemuArgs({ ...vm, cpuModel: 'max', extraArgs: [['-cpu', 'Nehalem']] }), '-cpu')).toEqual([
      'Nehalem',
    ]);
  });
  it("names the CPU model a command line runs with: the last -cpu, else QEMU's qemu64", () => {
    expect(cpuModelOf(buildQemuArgs(vm))).toBe(TCG_DEFAULT_CPU_MODEL);
    expect(cpuModelOf(buildQemuArgs({ ...vm, accelerator: 'kvm' }))).toBe('host');
    expect(cpuModelOf(['qemu-system-x86_64', '-cpu', 'max', '-cpu', 'qemu64'])).toBe('qemu64');
    expect(cpuModelOf(['qemu-system-x86_64', '-m', '1G'])).toBe('qemu64');
  });
  it('adds UEFI pflash drives', () => {
    const a = buildQemuArgs({ ...vm, firmware: { type: 'uefi', code: '/ovmf/CODE.fd', vars: '/w/VARS.fd' } });
    expect(value(a, '-drive').slice(0, 2)).toEqual([
      'if=pflash,format=raw,unit=0,readonly=on,file=/ovmf/CODE.fd',
      'if=pflash,format=raw,unit=1,file=/w/VARS.fd',
    ]);
  });
  it('escapes commas in paths', () => {
    expect(escapeOption('/a,b/c')).toBe('/a,,b/c');
    expect(
      value(buildQemuArgs({ ...vm, disks: [{ path: '/x,y.qcow2', format: 'qcow2', interface: 'ide' }] }), '-drive')[0],
    ).toMatch(/^file=\/x,,y\.qcow2,.*if=ide$/);
  });
  it('wires virtio-scsi disks through a controller', () => {
    const g = buildQemuArgGroups({ ...vm, disks: [{ path: '/d', format: 'raw', interface: 'virtio-scsi' }] });
    expect(g).toContainEqual(['-device', 'virtio-scsi-pci,id=scsi0']);
    expect(g).toContainEqual(['-device', 'scsi-hd,drive=disk0,bus=scsi0.0']);
  });
  it('gives QEMU the SMBIOS type 1 table as a file, so the seed URL in its serial is not on the command line', () => {
    const a = buildQemuArgs({ ...vm, smbiosType1File: '/w,1/smbios-type1.bin' });
    expect(value(a, '-smbios')).toEqual(['file=/w,,1/smbios-type1.bin']);
    expect(a.join(' ')).not.toMatch(/serial=|nocloud/);
    expect(value(buildQemuArgs(vm), '-smbios')).toEqual([]);
  });
  it('lets qemu_args replace single-valued switches and add repeatable ones', () => {
    const a = buildQemuArgs({
      ...vm,
      extraArgs: [
        ['-cpu', 'qemu64'],
        ['-device', 'e1000'],
        ['-m', '2G'],
      ],
    });
    expect(value(a, '-cpu')).toEqual(['qemu64']);
    expect(value(a, '-m')).toEqual(['2G']);
    expect(value(a, '-device')).toContain('e1000');
    expect(value(a, '-device')).toContain('virtio-rng-pci');
  });
  describe("Packer's rule (extraArgsReplace): a switch in qemu_args replaces all of kiln's defaults of that switch", () => {
    const uefi: VmSpec = {
      ...vm,
      firmware: { type: 'uefi', code: '/ovmf/CODE.fd', vars: '/w/VARS.fd' },
      cdroms: ['/cache/install.iso'],
      floppy: '/w/floppy.img',
      disks: [
        { path: '/w/disk.qcow2', format: 'qcow2', interface: 'virtio-scsi', discard: true },
        { path: '/w/seed.iso', format: 'raw', interface: 'virtio', readonly: true },
      ],
      smbiosType1File: '/w/smbios.bin',
    };
    const own = [
      ['-drive', 'if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd'],
      ['-drive', 'if=pflash,format=raw,file=/t/VARS.fd'],
      ['-device', 'virtio-scsi-pci,id=scsi0'],
      ['-device', 'scsi-hd,bus=scsi0.0,drive=drive0'],
      ['-drive', 'if=none,file=/w/disk.qcow2,id=drive0,cache=writeback,format=qcow2'],
    ];
    const a = buildQemuArgs({ ...uefi, extraArgs: own, extraArgsReplace: true });
    it("drops kiln's drives (disk, pflash, ISO) and devices (controller, virtio-rng) for the template's own", () => {
      expect(value(a, '-drive')).toEqual([
        'file=/w/seed.iso,format=raw,id=disk1,cache=unsafe,readonly=on,if=virtio',
        'file=/w/floppy.img,if=floppy,format=raw',
        own[0]![1],
        own[1]![1],
        'if=none,file=/w/disk.qcow2,cache=writeback,format=qcow2,id=disk0',
      ]);
      expect(value(a, '-device')).toEqual([
        'virtio-net-pci,netdev=net0',
        'virtio-scsi-pci,id=scsi0',
        'scsi-hd,bus=scsi0.0,drive=disk0',
      ]);
      // Without the rule (kiln's own qemu_args), the same -drive lines would be added beside kiln's: two scsi0, the disk twice.
      expect(
        value(buildQemuArgs({ ...uefi, extraArgs: own }), '-device').filter((d) => d.includes('id=scsi0')),
      ).toHaveLength(2);
    });
    it("keeps kiln's controls: QMP, the serial console, the SSH network and card, the seed, -monitor none", () => {
      expect(value(a, '-qmp')).toEqual(['unix:/w/qmp.sock,server=on,wait=off']);
      expect(value(a, '-serial')).toEqual(['chardev:serial0']);
      expect(value(a, '-chardev')[0]).toMatch(/^socket,id=serial0,/);
      expect(value(a, '-netdev')).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22']);
      expect(value(a, '-smbios')).toEqual(['file=/w/smbios.bin']);
      expect(value(a, '-monitor')).toEqual(['none']);
      const more = buildQemuArgs({
        ...uefi,
        extraArgs: [
          ['-netdev', 'user,id=n1'],
          ['-device', 'e1000,netdev=n1'],
          ['-chardev', 'file,id=c1,path=/t/c1'],
        ],
        extraArgsReplace: true,
      });
      expect(value(more, '-netdev')).toEqual(['user,id=net0,hostfwd=tcp:127.0.0.1:2222-:22', 'user,id=n1']);
      expect(value(more, '-device')).toEqual(['virtio-net-pci,netdev=net0', 'e1000,netdev=n1']);
      expect(value(more, '-chardev')).toHaveLength(2);
    });
    it('replaces each single-valued default, leaves switches the template does not give, and keeps the floppy unless -fda is given', () => {
      const b = buildQemuArgs({
        ...vm,
        extraArgs: [
          ['-m', '2048'],
          ['-smp', '2,cores=2'],
          ['-cpu', 'Nehalem'],
          ['-boot', 'c'],
          ['-name', 'packer-x'],
          ['-display', 'gtk'],
        ],
        extraArgsReplace: true,
      });
      for (const [flag, v] of [
        ['-m', '2048'],
        ['-smp', '2,cores=2'],
        ['-cpu', 'Nehalem'],
        ['-boot', 'c'],
        ['-name', 'packer-x'],
        ['-display', 'gtk'],
      ] as const)
        expect(value(b, flag)).toEqual([v]);
      expect(value(b, '-drive')).toHaveLength(1);
      expect(value(b, '-accel')).toEqual(['tcg,thread=multi']);
      expect(
        value(buildQemuArgs({ ...uefi, extraArgs: [['-fda', '/t/f.img']], extraArgsReplace: true }), '-drive').some(
          (d) => d.includes('if=floppy'),
        ),
      ).toBe(false);
    });
    it("drops kiln's -accel for a -machine naming an accelerator (QEMU refuses both)", () => {
      const b = buildQemuArgs({ ...vm, extraArgs: [['-machine', 'type=q35,accel=kvm']], extraArgsReplace: true });
      expect(value(b, '-machine')).toEqual(['type=q35,accel=kvm']);
      expect(value(b, '-accel')).toEqual([]);
      expect(
        value(buildQemuArgs({ ...vm, extraArgs: [['-machine', 'q35']], extraArgsReplace: true }), '-accel'),
      ).toEqual(['tcg,thread=multi']);
    });
    it("gives the template's drive of the build disk kiln's id (live snapshots name it), with or without an id of its own", () => {
      const b = buildQemuArgs({
        ...vm,
        extraArgs: [['-drive', 'file=/w/disk.qcow2,if=virtio,format=qcow2']],
        extraArgsReplace: true,
      });
      expect(value(b, '-drive')).toEqual(['file=/w/disk.qcow2,if=virtio,format=qcow2,id=disk0']);
    });
  });
  it('has no network device without net', () => {
    expect(value(buildQemuArgs({ ...vm, net: undefined }), '-nic')).toEqual(['none']);
  });
  it('quotes for copy-paste', () => {
    expect(shellQuote(['qemu', '-name', 'a b', "it's"])).toBe(`qemu -name 'a b' 'it'\\''s'`);
  });
});
