// Packer's qemuargs with Packer's semantics (packer-plugin-qemu builder/qemu/step_run.go): the builder's
// defaults only for switches qemuargs do not give; -m/-smp/-cpu as kiln's memory/cpus/cpu_model (what
// `kiln inspect` shows; cpu_model outside the layer key); {{ .OutputDir }}/{{ .Name }} as the disk kiln
// builds; iso_target_path as kiln's copy of the ISO; the SSH network and -serial stdio dropped with a note.
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../../src/template/load.js';
import { inspectTemplate } from '../../../../src/cli/inspect.js';
import { repoRoot } from '../../../helpers/guest.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-packer-qemuargs-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
const fixtures = path.join(repoRoot, 'test/fixtures/packer/qemuargs');
const load = (file: string) => loadTemplate(file, { env: {} });
function write(name: string, fields: string): string {
  const f = path.join(dir, name);
  writeFileSync(
    f,
    `source "qemu" "a" {\n  iso_url = "${dir}/base.qcow2"\n  iso_checksum = "none"\n  disk_image = true\n  ssh_username = "root"\n  ssh_password = "x"\n${fields}\n}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
  );
  return f;
}

describe('Packer qemuargs', () => {
  it("a UEFI template with its own -drive lines: its drives replace kiln's, on the disk kiln builds; -m/-smp/-cpu are memory/cpus/cpu_model", () => {
    const t = load(path.join(fixtures, 'uefi.pkr.hcl'));
    const s = t.template.builds[0]!.source;
    expect(s.qemu_args_replace).toBe(true);
    expect(s.qemu_args).toEqual([
      ['-drive', 'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd'],
      ['-drive', 'if=pflash,format=raw,unit=1,file=OVMF_VARS_4M.fd'],
      ['-device', 'virtio-scsi-pci,id=scsi0'],
      ['-device', 'scsi-hd,bus=scsi0.0,drive=drive0'],
      ['-drive', 'if=none,file=${build.disk},id=drive0,cache=writeback,discard=unmap,format=qcow2'],
    ]);
    expect([s.memory, s.cpus, s.cpu_model, s.firmware, s.net_device]).toEqual([
      320,
      2,
      'qemu64',
      'uefi',
      'virtio-net-pci',
    ]);
    const notes = (t.notes ?? []).join('\n');
    expect(notes).toMatch(/uefi\.pkr\.hcl:\d+: qemuargs: -serial stdio: ignored: kiln logs the serial console itself/);
    expect(notes).toMatch(
      /qemuargs: -netdev user,id=user\.0,hostfwd=tcp::\$\{build\.ssh_port\}-:22: ignored: kiln makes the guest's user network/,
    );
    expect(notes).toMatch(
      /qemuargs: -device virtio-net,netdev=user\.0: ignored: kiln plugs this card \(net_device virtio-net-pci\) into its own network/,
    );
    // One line says which of kiln's defaults the template's switches displaced.
    expect(notes).toMatch(
      /uefi\.pkr\.hcl:\d+: qemuargs: -drive, -device replace kiln's defaults \(its drives \(disk, UEFI firmware, install ISO, cd_files\); its devices \(disk controller, virtio-rng\)\) as they replace Packer's; kiln keeps its QMP socket, serial console, SSH network and card/,
    );
    expect(notes).not.toMatch(/no -drive names the disk/);
    // kiln inspect shows what applies: 2 vCPUs and 320 MiB, not Packer's 1 / 512 defaults.
    expect(inspectTemplate(t, false)).toContain('machine: pc, 2 vCPU, 320 MiB, firmware uefi');
  });

  it("legacy JSON: the ISO at iso_target_path is kiln's copy, {{ .OutputDir }}/{{ .Name }} the disk (raw in the template, kiln's qcow2 overlay), -smp with a topology kept", () => {
    const t = load(path.join(fixtures, 'iso-target.json'));
    const s = t.template.builds[0]!.source;
    expect(s.qemu_args).toEqual([
      ['-smp', 'cpus=2,sockets=1,cores=2,threads=1'],
      ['-drive', 'file=${build.disk},if=virtio,cache=writeback,format=qcow2'],
      ['-drive', 'file=${build.iso},media=cdrom'],
    ]);
    expect([s.memory, s.cpus, s.net_device, s.qemu_args_replace]).toEqual([1024, 2, 'e1000', true]);
    expect((t.notes ?? []).join('\n')).not.toMatch(/iso_target_path/);
  });

  it('maps cpu_model and qemuargs -cpu onto cpu_model (not qemu_args: cpu_model is not in the layer key); qemuargs win', () => {
    expect(load(write('cpu.pkr.hcl', '  cpu_model = "Nehalem"')).template.builds[0]!.source).toMatchObject({
      cpu_model: 'Nehalem',
      qemu_args: [],
    });
    const both = load(write('cpu2.pkr.hcl', '  cpu_model = "Nehalem"\n  qemuargs = [["-cpu", "max"]]')).template
      .builds[0]!.source;
    expect(both).toMatchObject({ cpu_model: 'max', qemu_args: [] });
    expect(both.qemu_args_replace).toBeUndefined();
  });

  it("reads -m in QEMU's spellings (MiB by default, M, G, size=), and leaves what it cannot read to QEMU", () => {
    const mem = (v: string) => load(write('m.pkr.hcl', `  qemuargs = [["-m", "${v}"]]`)).template.builds[0]!.source;
    expect(mem('2048').memory).toBe(2048);
    expect(mem('2G').memory).toBe(2048);
    expect(mem('size=768M').memory).toBe(768);
    expect(mem('1G,slots=2,maxmem=4G')).toMatchObject({
      memory: 512,
      qemu_args: [['-m', '1G,slots=2,maxmem=4G']],
      qemu_args_replace: true,
    });
  });

  it('warns when the template gives -drive lines but none is the disk being built (Packer would boot without it)', () => {
    const t = load(
      write('nodisk.pkr.hcl', '  vm_name = "x.qcow2"\n  qemuargs = [["-drive", "file=/tmp/other.qcow2,if=virtio"]]'),
    );
    expect((t.notes ?? []).join('\n')).toMatch(
      /qemuargs: warning: no -drive names the disk being built \(\{\{ \.OutputDir \}\}\/x\.qcow2\): as in Packer, the VM boots without it/,
    );
    // A path written out (HCL templates often write var.output_directory/var.vm_name) is the disk too.
    const lit = load(
      write(
        'lit.pkr.hcl',
        `  vm_name = "x.qcow2"\n  output_directory = "${dir}/out"\n  qemuargs = [["-drive", "file=${dir}/out/x.qcow2,if=virtio"]]`,
      ),
    );
    expect(lit.template.builds[0]!.source.qemu_args).toEqual([['-drive', 'file=${build.disk},if=virtio']]);
  });

  it("-device lines on Packer's default disk and network (drive0, user.0, as windows-vagrant writes them) name kiln's; -bios OVMF is UEFI", () => {
    const s = load(
      write(
        'dev.pkr.hcl',
        `  disk_interface = "virtio-scsi"
  qemuargs = [
    ["-bios", "/usr/share/ovmf/OVMF.fd"],
    ["-machine", "type=q35,accel=kvm,hpet=off"],
    ["-device", "virtio-scsi-pci,id=scsi0"],
    ["-device", "scsi-hd,bus=scsi0.0,drive=drive0,discard_granularity=8K"],
    ["-device", "e1000,netdev=user.0"],
    ["-chardev", "socket,path=/tmp/{{ .Name }}-qga.sock,server=on,wait=off,id=qga0"],
  ]`,
      ),
    ).template.builds[0]!.source;
    expect(s.qemu_args).toEqual([
      ['-bios', '/usr/share/ovmf/OVMF.fd'],
      ['-machine', 'type=q35,accel=kvm,hpet=off'],
      ['-device', 'virtio-scsi-pci,id=scsi0'],
      ['-device', 'scsi-hd,bus=scsi0.0,drive=disk0,discard_granularity=8K'],
      // {{ .Name }} is vm_name in qemuargs (Packer's default: packer-<source>).
      ['-chardev', 'socket,path=/tmp/packer-a-qga.sock,server=on,wait=off,id=qga0'],
    ]);
    expect([s.net_device, s.firmware, s.qemu_args_replace]).toEqual(['e1000', 'uefi', true]);
    expect((load(path.join(dir, 'dev.pkr.hcl')).notes ?? []).join('\n')).toMatch(
      /qemuargs: -machine, -accel, -device replace kiln's defaults \(its -machine; its -accel; its devices/,
    );
  });

  it('accepts qemuargs = null and [] (no-ops), and refuses a base image at iso_target_path attached by qemuargs', () => {
    expect(load(write('null.pkr.hcl', '  qemuargs = null')).template.builds[0]!.source.qemu_args).toEqual([]);
    expect(load(write('empty.pkr.hcl', '  qemuargs = []')).template.builds[0]!.source.qemu_args).toEqual([]);
    const f = write(
      'base-target.pkr.hcl',
      `  iso_target_path = "${dir}/dl.qcow2"\n  qemuargs = [["-drive", "file=${dir}/dl.qcow2,if=virtio"]]`,
    );
    expect(() => load(f)).toThrow(
      /base-target\.pkr\.hcl:\d+: qemu\.a: iso_target_path: qemuargs attach .*dl\.qcow2, the downloaded base image: in kiln that file is its cache/,
    );
    // Unused, it is one note (kiln keeps downloads in its own cache), no longer a cosmetic entry of mapping.ts.
    expect(load(write('unused.pkr.hcl', '  iso_target_path = "dl.iso"')).notes).toEqual([
      expect.stringMatching(/unused\.pkr\.hcl:\d+: iso_target_path: ignored: kiln keeps downloads in its own cache/),
    ]);
  });

  it("a template's own -netdev user,id=net0 without a forward: with communicator none it is kiln's user network (Packer adds none of its own); with SSH Packer could not connect, refused", () => {
    const own = `  qemuargs = [["-device", "e1000,netdev=net0"], ["-netdev", "user,id=net0"], ["-device", "qemu-xhci"]]`;
    const t = load(write('own-net-none.pkr.hcl', `  communicator = "none"\n${own}`));
    const s = t.template.builds[0]!.source;
    expect(s.qemu_args).toEqual([['-device', 'qemu-xhci']]);
    expect(s.net_device).toBe('e1000');
    expect((t.notes ?? []).join('\n')).toMatch(
      /own-net-none\.pkr\.hcl:\d+: qemuargs: -netdev user,id=net0: ignored: kiln makes the guest's user network/,
    );
    // A second, plain network beside the SSH one: Packer connects through the forward; it passes through.
    const two = load(
      write(
        'own-net-two.pkr.hcl',
        `  qemuargs = [["-netdev", "user,id=user.0,hostfwd=tcp::{{ .SSHHostPort }}-:22"], ["-device", "virtio-net,netdev=user.0"], ["-netdev", "user,id=lan"], ["-device", "e1000,netdev=lan"]]`,
      ),
    );
    expect(two.template.builds[0]!.source.qemu_args).toEqual([
      ['-netdev', 'user,id=lan'],
      ['-device', 'e1000,netdev=lan'],
    ]);
    expect(() => load(write('own-net-ssh.pkr.hcl', own))).toThrow(
      /own-net-ssh\.pkr\.hcl:\d+: qemu\.a: qemuargs: -netdev user,id=net0: Packer adds no network of its own when qemuargs give a -netdev, and this one forwards no port to the guest's SSH: Packer could not connect either[\s\S]*hostfwd=tcp::\{\{ \.SSHHostPort \}\}-:22/,
    );
  });

  it('cdrom_interface: a no-op when qemuargs give their own -drive (Packer then adds no ISO drive to shape); refused otherwise', () => {
    const t = load(
      write(
        'cdrom-own.pkr.hcl',
        `  cdrom_interface = "virtio-scsi"\n  qemuargs = [["-drive", "file={{ .OutputDir }}/{{ .Name }},if=virtio"]]`,
      ),
    );
    expect((t.notes ?? []).join('\n')).toMatch(
      /cdrom-own\.pkr\.hcl:\d+: cdrom_interface: ignored: qemuargs give their own -drive, so Packer attaches no install ISO drive/,
    );
    expect(() => load(write('cdrom-alone.pkr.hcl', '  cdrom_interface = "virtio-scsi"'))).toThrow(
      /cdrom-alone\.pkr\.hcl:\d+: qemu\.a: cdrom_interface: kiln has no equivalent/,
    );
  });
});
