// Guest architectures (src/qemu/arch.ts): the arm64 row's QEMU argv, accelerator choice, firmware from
// descriptors, the template defaults it fills in, and the labels publish targets give the image.
import { writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  acceleratorFits,
  applyArchDefaults,
  archCpuModel,
  hostArch,
  type ArchSettings,
} from '../../../src/qemu/arch.js';
import { chooseAccelerator } from '../../../src/qemu/accel.js';
import { buildQemuArgs, type VmSpec } from '../../../src/qemu/argv.js';
import { createDriver } from '../../../src/qemu/driver.js';
import { resolveFirmware } from '../../../src/qemu/firmware.js';
import { imageFor, ociPlatform } from '../../../src/publish/oci.js';
import { imageProperties } from '../../../src/publish/glance.js';
import { objectMetadata } from '../../../src/publish/s3.js';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import { sourceKey } from '../../../src/cache/layer-keys.js';
import { buildManifest } from '../../../src/artifacts/manifest.js';
import { inspectTemplate } from '../../../src/cli/inspect.js';
import { tempDirMaker } from '../../helpers/temp-dirs.js';

/** A fresh folder in the system temp dir, removed after the file's tests. */
const tempDir = tempDirMaker();

const vm = (over: Partial<VmSpec> = {}): VmSpec => ({
  name: 'arm',
  arch: 'aarch64',
  accelerator: 'tcg',
  cpus: 2,
  memoryMiB: 512,
  machine: 'virt',
  firmware: { type: 'uefi', code: '/usr/share/AAVMF/AAVMF_CODE.fd', vars: '/w/efivars.fd' },
  disks: [{ path: '/w/disk.qcow2', format: 'qcow2', interface: 'virtio', discard: true }],
  net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: 2222, guestPort: 22 }] },
  qmpSocket: '/w/qmp.sock',
  headless: true,
  ...over,
});
const after = (argv: string[], flag: string) => argv.filter((_, i) => argv[i - 1] === flag);

describe('aarch64 QEMU command line', () => {
  it('virt with AAVMF in pflash, cortex-a72 under TCG, virtio over PCI', () => {
    const argv = buildQemuArgs(vm());
    expect(after(argv, '-machine')).toEqual(['virt']);
    expect(after(argv, '-accel')).toEqual(['tcg,thread=multi']);
    expect(after(argv, '-cpu')).toEqual(['cortex-a72']);
    expect(after(argv, '-drive')).toEqual(
      expect.arrayContaining([
        'if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/AAVMF/AAVMF_CODE.fd',
        'if=pflash,format=raw,unit=1,file=/w/efivars.fd',
        expect.stringMatching(/^file=\/w\/disk\.qcow2,.*,if=virtio$/),
      ]),
    );
    expect(after(argv, '-device')).toEqual(expect.arrayContaining(['virtio-net-pci,netdev=net0', 'virtio-rng-pci']));
  });

  it('KVM and HVF (an arm64 host) give the guest the host CPU; a template cpu_model wins', () => {
    expect(after(buildQemuArgs(vm({ accelerator: 'kvm' })), '-cpu')).toEqual(['host']);
    expect(after(buildQemuArgs(vm({ accelerator: 'hvf' })), '-accel')).toEqual(['hvf']);
    expect(after(buildQemuArgs(vm({ accelerator: 'hvf' })), '-cpu')).toEqual(['host']);
    expect(after(buildQemuArgs(vm({ cpuModel: 'max' })), '-cpu')).toEqual(['max']);
    expect(archCpuModel('x86_64', 'tcg')).toBeUndefined(); // argv.ts's x86 default stays
  });

  it('CD-ROMs are SCSI CDs on a virtio-scsi controller (virt has no IDE); x86 keeps its IDE CD', () => {
    const argv = buildQemuArgs(vm({ cdroms: ['/w/a.iso', '/w/b.iso'] }));
    expect(after(argv, '-device')).toEqual(
      expect.arrayContaining([
        'virtio-scsi-pci,id=cdscsi',
        'scsi-cd,drive=cd0,bus=cdscsi.0',
        'scsi-cd,drive=cd1,bus=cdscsi.0',
      ]),
    );
    expect(after(argv, '-drive')).toContain('file=/w/b.iso,media=cdrom,readonly=on,if=none,id=cd1');
    const x86 = buildQemuArgs(vm({ arch: undefined, machine: 'pc', cdroms: ['/w/a.iso'] }));
    expect(after(x86, '-drive')).toContain('file=/w/a.iso,media=cdrom,readonly=on');
    expect(x86).not.toContain('virtio-scsi-pci,id=cdscsi');
  });
});

describe('accelerator for a guest of another architecture', () => {
  const settings = (over: object = {}) => ({
    qemuBinary: '/nonexistent/qemu-system-aarch64',
    memoDir: tempDir('kiln-arch-'),
    forcedSetting: 'KILN_ACCELERATOR',
    guestArch: 'aarch64' as const,
    hostArch: 'x86_64' as const,
    ...over,
  });
  const warnings: string[] = [];
  const warn = (m: string) => {
    warnings.push(m);
  };

  it('auto is TCG without probing KVM (the binary given does not exist: a probe would fail)', async () => {
    await expect(chooseAccelerator('auto', os.tmpdir(), warn, settings())).resolves.toBe('tcg');
    expect(warnings).toEqual([]);
  });

  it('an explicit kvm is refused with the reason and the fix; a forced one (KILN_ACCELERATOR) falls back with a warning', async () => {
    await expect(chooseAccelerator('kvm', os.tmpdir(), warn, settings())).rejects.toThrow(
      /accelerator "kvm" cannot run an aarch64 guest on this x86_64 host[^]*fix: set accelerator: auto or tcg/,
    );
    await expect(chooseAccelerator('auto', os.tmpdir(), warn, settings({ forced: 'kvm' }))).resolves.toBe('tcg');
    expect(warnings.at(-1)).toMatch(/KILN_ACCELERATOR=kvm cannot run this aarch64 guest on a x86_64 host; using TCG/);
  });

  it('on an arm64 host, hvf/kvm are passed through for an arm64 guest, and kvm is refused for an x86 one', async () => {
    await expect(chooseAccelerator('hvf', os.tmpdir(), warn, settings({ hostArch: 'aarch64' }))).resolves.toBe('hvf');
    await expect(chooseAccelerator('kvm', os.tmpdir(), warn, settings({ hostArch: 'aarch64' }))).resolves.toBe('kvm');
    await expect(
      chooseAccelerator('kvm', os.tmpdir(), warn, settings({ hostArch: 'aarch64', guestArch: 'x86_64' })),
    ).rejects.toThrow(/x86_64 guest on this aarch64 host/);
    expect(acceleratorFits('tcg', 'aarch64', 'x86_64')).toBe(true);
    expect(hostArch('x64')).toBe('x86_64');
    expect(hostArch('arm64')).toBe('aarch64');
    expect(hostArch('riscv64')).toBeUndefined();
  });
});

describe('aarch64 firmware and QEMU binary', () => {
  const share = path.resolve(__dirname, '../../fixtures/firmware/share');
  it('firmware: uefi on virt resolves an aarch64 descriptor (virt = virt-7.2 matches "virt-*")', () => {
    const r = resolveFirmware({ kind: 'uefi' }, { arch: 'aarch64', machine: 'virt', dirs: [share] });
    expect(r).toMatchObject({
      code: '/fw/AAVMF_CODE.fd',
      varsTemplate: '/fw/AAVMF_VARS.fd',
      machine: 'virt',
      smm: false,
    });
  });

  it('no aarch64 descriptor: the error names the package that ships them', () => {
    const empty = tempDir('kiln-fw-');
    expect(() => resolveFirmware({ kind: 'uefi' }, { arch: 'aarch64', machine: 'virt', dirs: [empty] })).toThrow(
      /for aarch64 machine virt[^]*apt-get install qemu-efi-aarch64/,
    );
  });

  it('a missing qemu-system-aarch64 names the package and the setting', () => {
    const d = createDriver({
      qemuBinaries: { aarch64: '/nonexistent/qemu-system-aarch64' },
      settingNames: { 'qemuBinaries.aarch64': 'KILN_QEMU_AARCH64' },
    });
    expect(() => d.requireQemu('aarch64')).toThrow(
      /qemu-system-aarch64 not found: .*set by KILN_QEMU_AARCH64[^]*apt-get install qemu-system-arm/,
    );
  });
});

describe('template defaults for aarch64 (applyArchDefaults)', () => {
  const src = (over: Partial<ArchSettings> = {}): ArchSettings => ({
    arch: 'aarch64',
    firmware: 'bios',
    machine: 'pc',
    disk_interface: 'virtio',
    floppy_files: [],
    ...over,
  });
  it("kiln's x86 defaults become virt and UEFI", () => {
    const s = src();
    expect(applyArchDefaults(s, { firmware: false, machine: false })).toEqual([]);
    expect(s).toMatchObject({ machine: 'virt', firmware: 'uefi' });
  });
  it('explicit bios, an x86 machine, IDE and floppies are problems naming the field and the fix', () => {
    const problems = applyArchDefaults(src({ machine: 'q35', disk_interface: 'ide', floppy_files: ['a'] }), {
      firmware: true,
      machine: true,
    });
    expect(problems.map((p) => p.field)).toEqual(['machine', 'firmware', 'disk_interface', 'floppy_files']);
    expect(problems[1]!.message).toMatch(/aarch64 guests boot UEFI only/);
    expect(problems[1]!.fix).toMatch(/uefi or uefi-secure/);
  });
  it('x86_64 (and no arch) is left alone', () => {
    const s = src({ arch: undefined });
    expect(applyArchDefaults(s, { firmware: false, machine: false })).toEqual([]);
    expect(s).toMatchObject({ machine: 'pc', firmware: 'bios' });
  });
});

describe('publish labels', () => {
  const artifact = { name: 'a.qcow2', path: '/x', format: 'qcow2', size: 1, sha256: 'f'.repeat(64) };
  it('OCI: linux/arm64 in the image config; linux/amd64 unchanged for x86 (same manifest digest as before)', () => {
    expect(ociPlatform('aarch64')).toEqual({ architecture: 'arm64', os: 'linux' });
    const cfg = (arch?: 'aarch64') =>
      JSON.parse(imageFor(artifact, { digest: 'sha256:0', size: 1 }, arch).config.toString());
    expect(cfg('aarch64')).toMatchObject({ architecture: 'arm64', os: 'linux' });
    expect(cfg()).toMatchObject({ architecture: 'amd64', os: 'linux' });
  });
  it('Glance: architecture=aarch64 and, for UEFI, hw_machine_type=virt; template properties still win', () => {
    expect(imageProperties(artifact, { properties: {} }, { uefi: true, arch: 'aarch64' })).toMatchObject({
      architecture: 'aarch64',
      hw_firmware_type: 'uefi',
      hw_machine_type: 'virt',
    });
    expect(imageProperties(artifact, { properties: {} }, { uefi: true })).toMatchObject({
      architecture: 'x86_64',
      hw_machine_type: 'q35',
    });
    expect(
      imageProperties(artifact, { properties: { architecture: 'x' } }, { uefi: false, arch: 'aarch64' }).architecture,
    ).toBe('x');
  });
  it('S3: the object metadata carries kiln-arch beside kiln-sha256', () => {
    expect(objectMetadata(artifact, 'aarch64')).toEqual({ 'kiln-sha256': artifact.sha256, 'kiln-arch': 'aarch64' });
    expect(objectMetadata(artifact, undefined)['kiln-arch']).toBe('x86_64');
  });
});

describe('arch in templates, layer keys and the manifest', () => {
  const dir = tempDir('kiln-arch-tpl-');
  const image = path.join(dir, 'base.qcow2');
  writeFileSync(image, '');
  const write = (name: string, sourceExtra: string) => {
    const file = path.join(dir, `${name}.yaml`);
    writeFileSync(
      file,
      `builds:\n  - name: ${name}\n    source:\n      base_image: ${image}\n      checksum: none\n${sourceExtra}`,
    );
    return file;
  };

  it('arch: aarch64 loads with machine virt and firmware uefi; unset stays x86 (pc, bios, no arch)', () => {
    const arm = loadTemplate(write('arm', '      arch: aarch64\n'));
    expect(arm.template.builds[0]!.source).toMatchObject({ arch: 'aarch64', machine: 'virt', firmware: 'uefi' });
    expect(inspectTemplate(arm, false)).toContain('machine: virt (aarch64), 2 vCPU');
    const x86 = loadTemplate(write('x86', '')).template.builds[0]!.source;
    expect(x86).toMatchObject({ machine: 'pc', firmware: 'bios' });
    expect(x86.arch).toBeUndefined();
  });

  it('arch: aarch64 with firmware: bios, or an unknown arch, is refused at the field', () => {
    expect(() => loadTemplate(write('armbios', '      arch: aarch64\n      firmware: bios\n'))).toThrow(TemplateError);
    expect(() => loadTemplate(write('armbios2', '      arch: aarch64\n      firmware: bios\n'))).toThrow(
      /builds\[0\]\.source\.firmware[^]*UEFI only[^]*fix: remove firmware/,
    );
    expect(() => loadTemplate(write('riscv', '      arch: riscv64\n'))).toThrow(/source\.arch/);
  });

  it('the layer key carries the architecture: aarch64 differs from x86 on the same machine/firmware; arch: x86_64 written out keys like unset', async () => {
    const key = async (extra: string) => {
      const file = path.join(dir, 'k.yaml');
      writeFileSync(
        file,
        `builds:\n  - name: k\n    source:\n      base_image: ${image}\n      checksum: none\n${extra}`,
      );
      return sourceKey(loadTemplate(file).template.builds[0]!, 'a'.repeat(64));
    };
    expect(await key('      arch: aarch64\n')).not.toBe(await key('      machine: virt\n      firmware: uefi\n'));
    expect(await key('      arch: x86_64\n')).toBe(await key(''));
  });

  it('the manifest records arch (x86_64 when unset)', () => {
    const ctx = (arch?: 'aarch64') => ({
      template: { file: '/t.yaml', digest: '0'.repeat(64), variables: { values: {}, sensitive: new Set<string>() } },
      build: { name: 'b', source: { firmware: 'bios', machine: 'pc', ...(arch ? { arch } : {}) } },
      state: { timings: {}, artifacts: [] },
    });
    expect(buildManifest(ctx('aarch64') as never, new Date(), (p) => p, 'qemu-img 7.2', []).arch).toBe('aarch64');
    expect(buildManifest(ctx() as never, new Date(), (p) => p, 'qemu-img 7.2', []).arch).toBe('x86_64');
  });

  it('a Packer template naming qemu_binary = "qemu-system-aarch64" becomes arch: aarch64 (virt, UEFI); another emulator is still refused', () => {
    const hcl = (binary: string) => {
      const file = path.join(dir, `p-${binary}.pkr.hcl`);
      writeFileSync(
        file,
        `source "qemu" "a" {\n  iso_url = "${image}"\n  iso_checksum = "none"\n  disk_image = true\n  ssh_username = "root"\n  ssh_password = "root"\n  qemu_binary = "${binary}"\n}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
      );
      return file;
    };
    expect(loadTemplate(hcl('qemu-system-aarch64'), { env: {} }).template.builds[0]!.source).toMatchObject({
      arch: 'aarch64',
      machine: 'virt',
      firmware: 'uefi',
    });
    expect(() => loadTemplate(hcl('qemu-system-riscv64'), { env: {} })).toThrow(
      /kiln runs qemu-system-x86_64 \(qemu-system-aarch64 for arm64 guests\), not qemu-system-riscv64/,
    );
  });
});
