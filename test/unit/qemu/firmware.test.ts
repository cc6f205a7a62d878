import { describe, expect, it } from 'vitest';
import path from 'node:path';
import {
  defaultDescriptorDirs,
  listDescriptors,
  parseDescriptor,
  resolveFirmware,
} from '../../../src/qemu/firmware.js';
import { buildQemuArgs, type VmSpec } from '../../../src/qemu/argv.js';

// Descriptors with the structure of Debian 12's ovmf package (40 secure+enrolled, 50 secure, 60 plain), plus
// an aarch64 and a BIOS one; etc/ overrides 60 and masks 40 with an empty file, as /etc/qemu/firmware does.
const fx = path.resolve(__dirname, '../../fixtures/firmware');
const share = path.join(fx, 'share');
const etc = path.join(fx, 'etc');

describe('firmware descriptors', () => {
  it('lists *.json by file name, a later directory replacing or (empty file) masking an earlier one', () => {
    expect(listDescriptors([share]).map((f) => path.relative(fx, f))).toEqual([
      'share/40-edk2-x86_64-secure-enrolled.json',
      'share/50-edk2-x86_64-secure.json',
      'share/60-edk2-x86_64.json',
      'share/70-edk2-aarch64.json',
      'share/80-seabios.json',
    ]);
    expect(listDescriptors([share, etc, '/nonexistent']).map((f) => path.relative(fx, f))).toEqual([
      'share/50-edk2-x86_64-secure.json',
      'etc/60-edk2-x86_64.json',
      'share/70-edk2-aarch64.json',
      'share/80-seabios.json',
    ]);
  });

  it("searches /usr/share, then /etc, then the user's config dir", () => {
    expect(defaultDescriptorDirs({ HOME: '/home/u' })).toEqual([
      '/usr/share/qemu/firmware',
      '/etc/qemu/firmware',
      '/home/u/.config/qemu/firmware',
    ]);
    expect(defaultDescriptorDirs({ XDG_CONFIG_HOME: '/x' }).at(-1)).toBe('/x/qemu/firmware');
  });

  it('firmware: uefi on pc takes the plain one (no Secure Boot, no SMM), the highest-priority that fits', () => {
    const r = resolveFirmware({ kind: 'uefi' }, { arch: 'x86_64', machine: 'pc', dirs: [share] });
    expect(r).toMatchObject({
      code: '/fw/CODE.fd',
      varsTemplate: '/fw/VARS.fd',
      machine: 'pc',
      smm: false,
      secureBoot: false,
    });
    expect(path.basename(r.descriptor)).toBe('60-edk2-x86_64.json');
    // On q35 too: 40 and 50 fit q35 but turn Secure Boot on, which an unsigned bootloader cannot pass.
    expect(resolveFirmware({ kind: 'uefi' }, { arch: 'x86_64', machine: 'q35', dirs: [share] }).code).toBe(
      '/fw/CODE.fd',
    );
    // /etc's file of the same name wins.
    expect(resolveFirmware({ kind: 'uefi' }, { arch: 'x86_64', machine: 'pc', dirs: [share, etc] }).code).toBe(
      '/site/CODE.fd',
    );
  });

  it('firmware: uefi-secure takes secure-boot + enrolled-keys, with SMM, moving the default pc machine to q35', () => {
    const r = resolveFirmware({ kind: 'uefi-secure' }, { arch: 'x86_64', machine: 'pc', dirs: [share] });
    expect(r).toMatchObject({
      code: '/fw/CODE.ms.fd',
      varsTemplate: '/fw/VARS.ms.fd',
      machine: 'q35',
      smm: true,
      secureBoot: true,
      enrolledKeys: true,
    });
    expect(
      resolveFirmware({ kind: 'uefi-secure' }, { arch: 'x86_64', machine: 'pc-q35-7.2', dirs: [share] }).machine,
    ).toBe('pc-q35-7.2');
  });

  it('names what it looked for, where, and why each descriptor did not fit', () => {
    // etc masks the enrolled one: 50 has Secure Boot but no keys.
    expect(() =>
      resolveFirmware({ kind: 'uefi-secure' }, { arch: 'x86_64', machine: 'q35', dirs: [share, etc] }),
    ).toThrow(
      /firmware: uefi-secure: no QEMU firmware descriptor in .*share, .*etc offers UEFI with Secure Boot and enrolled keys for x86_64 machine q35:\n    50-edk2-x86_64-secure\.json: lacks secure-boot with enrolled-keys\n    60-edk2-x86_64\.json: lacks .*\n    70-edk2-aarch64\.json: targets aarch64 virt-\*, not x86_64 q35\n    80-seabios\.json: interface bios, not uefi\n  fix: /,
    );
    expect(() =>
      resolveFirmware({ kind: 'uefi' }, { arch: 'x86_64', machine: 'microvm', dirs: ['/nonexistent'] }),
    ).toThrow(
      /no QEMU firmware descriptor in \/nonexistent offers UEFI without Secure Boot for x86_64 machine microvm \(none found\)\n  fix: apt-get install ovmf/,
    );
  });

  it('an explicit descriptor is taken as it is (its features decide SMM), and must fit the machine', () => {
    const r = resolveFirmware(
      { kind: 'descriptor', file: path.join(share, '50-edk2-x86_64-secure.json') },
      { arch: 'x86_64', machine: 'pc' },
    );
    expect(r).toMatchObject({
      code: '/fw/CODE.secboot.fd',
      varsTemplate: '/fw/VARS.fd',
      machine: 'q35',
      smm: true,
      secureBoot: true,
      enrolledKeys: false,
    });
    expect(() =>
      resolveFirmware(
        { kind: 'descriptor', file: path.join(share, '70-edk2-aarch64.json') },
        { arch: 'x86_64', machine: 'pc' },
      ),
    ).toThrow(/70-edk2-aarch64\.json: targets aarch64 virt-\*, not x86_64 pc/);
    expect(() =>
      resolveFirmware({ kind: 'descriptor', file: '/nope.json' }, { arch: 'x86_64', machine: 'pc' }),
    ).toThrow(/firmware: \/nope\.json: cannot read it \(ENOENT\)/);
  });

  it('a malformed descriptor is named with its field', () => {
    expect(() => parseDescriptor('/d/x.json', '{')).toThrow(/^\/d\/x\.json: JSON: /);
    expect(() =>
      parseDescriptor(
        '/d/x.json',
        JSON.stringify({ 'interface-types': ['uefi'], mapping: { device: 'flash' }, targets: [] }),
      ),
    ).toThrow(/x\.json: mapping\.executable\.filename: missing/);
    expect(() =>
      parseDescriptor(
        '/d/x.json',
        JSON.stringify({
          'interface-types': 'uefi',
          mapping: { device: 'flash', executable: { filename: '/c' } },
          targets: [],
        }),
      ),
    ).toThrow(/interface-types: expected a list of strings/);
  });

  it("resolves this machine's real descriptors (Debian's ovmf) to files that exist", () => {
    const plain = resolveFirmware({ kind: 'uefi' }, { arch: 'x86_64', machine: 'pc' });
    expect(plain.code).toMatch(/OVMF_CODE_4M\.fd$/);
    const secure = resolveFirmware({ kind: 'uefi-secure' }, { arch: 'x86_64', machine: 'pc' });
    expect(secure.varsTemplate).toMatch(/OVMF_VARS_4M\.ms\.fd$/);
  });
});

describe('QEMU arguments for SMM firmware', () => {
  const vm: VmSpec = {
    name: 't',
    accelerator: 'tcg',
    cpus: 1,
    memoryMiB: 256,
    machine: 'q35',
    firmware: { type: 'uefi', code: '/c.fd', vars: '/w/vars.fd', smm: true },
    disks: [],
    qmpSocket: '/w/q.sock',
    headless: true,
  };
  it('turns SMM on and makes the variable flash secure', () => {
    const a = buildQemuArgs(vm).join(' ');
    expect(a).toContain('-machine q35,smm=on');
    expect(a).toContain('-global driver=cfi.pflash01,property=secure,value=on');
    expect(a).toContain('-drive if=pflash,format=raw,unit=1,file=/w/vars.fd');
  });
  it('leaves both out for firmware without SMM', () => {
    const a = buildQemuArgs({
      ...vm,
      machine: 'pc',
      firmware: { type: 'uefi', code: '/c.fd', vars: '/w/vars.fd' },
    }).join(' ');
    expect(a).toContain('-machine pc ');
    expect(a).not.toContain('cfi.pflash01');
  });
});
