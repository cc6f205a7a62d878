// firmware: uefi resolved through QEMU's firmware descriptors, with a TPM 2.0 (swtpm): the tiny guest,
// booted by kiln through OVMF and GRUB, sees EFI and a TPM; after kiln exits no swtpm is left.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-fw-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };

describe('UEFI from descriptors + TPM 2.0', () => {
  it('boots the tiny guest with firmware: uefi (via /usr/share/qemu/firmware) and tpm: true; the guest sees EFI and tpm0; swtpm is gone after', async () => {
    const file = path.join(dir, 'fw.yaml');
    const out = path.join(dir, 'out');
    writeFileSync(file, `
builds:
  - name: fw
    output_directory: ${out}
${tinySourceYaml('    ', { bootloader: true })}
      firmware: uefi
      tpm: true
    provisioners:
      - type: shell
        inline:
          - test -d /sys/firmware/efi
          - test -e /sys/class/tpm/tpm0
          - test -c /dev/tpm0
          - echo "efi=$(ls -d /sys/firmware/efi) tpm=$(cat /sys/class/tpm/tpm0/tpm_version_major)"
    outputs:
      - format: qcow2
`);
    const r = await kiln(['build', file, '--events=json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const logs = r.events.filter((e) => e.type === 'log').map((e) => String(e.message));
    // The firmware came from Debian's plain descriptor (no Secure Boot, no SMM) and its VARS copy.
    expect(logs.find((m) => m.startsWith('firmware: '))).toMatch(/\(60-edk2-x86_64\.json; machine pc\)/);
    const argv = logs.find((m) => m.startsWith('qemu: '))!;
    expect(argv).toContain('if=pflash,format=raw,unit=0,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd');
    expect(argv).toMatch(/-tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0/);
    const lines = r.events.filter((e) => e.type === 'output').map((e) => String(e.line));
    expect(lines).toContain('efi=/sys/firmware/efi tpm=2');
    // swtpm ran, and is gone with the VM (its state too).
    const pid = Number(/swtpm started \(TPM 2\.0, pid (\d+)/.exec(logs.join('\n'))?.[1]);
    expect(pid).toBeGreaterThan(0);
    expect(alive(pid)).toBe(false);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as Record<string, unknown>;
    expect(manifest.platform).toEqual({ firmware: 'uefi', firmware_descriptor: '/usr/share/qemu/firmware/60-edk2-x86_64.json', secure_boot: false, enrolled_keys: false, machine: 'pc', tpm: '2.0' });
  }, 300_000);
});
