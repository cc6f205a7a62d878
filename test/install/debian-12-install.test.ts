// examples/debian-12-install.yaml end to end: the debootstrap installer ISO installs Debian 12 onto a
// blank disk, kiln boots it and provisions it, and the artifact boots to SSH with the changes. Then the
// same example under firmware: uefi-secure with tpm: true: the ISO boots Debian's signed shim and GRUB,
// the installer lays down a UEFI system with them, and inside the installed guest mokutil says Secure
// Boot is on and the TPM's PCRs show measured boot (tpm2_pcrread and the kernel's sysfs files).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, insecureKey, insecurePublicKey, overlayOf, repoRoot } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-'));
// The example, plus the test key in its answers (the build's own key is removed from the artifact)
// and its output moved here; kept beside the example so its relative paths still hold.
const template = path.join(repoRoot, 'examples', `.test-debian-12-install-${process.pid}.yaml`);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(template, { force: true });
});

const replaced = (text: string, from: string, to: string) => {
  if (!text.includes(from)) throw new Error(`examples/debian-12-install.yaml no longer has ${JSON.stringify(from)}`);
  return text.replace(from, to);
};

/** Writes `template`: the example with the test key in its answers, its output in `out`, then `edit`. */
function writeExample(out: string, edit: (yaml: string) => string = (y) => y): void {
  let yaml = readFileSync(path.join(repoRoot, 'examples/debian-12-install.yaml'), 'utf8');
  yaml = replaced(
    yaml,
    '          ssh_authorized_key=${build.ssh_public_key}\n',
    `          ssh_authorized_key=\${build.ssh_public_key}\n          ssh_authorized_key=${insecurePublicKey}\n`,
  );
  yaml = replaced(yaml, 'output_directory: ../output/debian-12-install', `output_directory: ${out}`);
  writeFileSync(template, edit(yaml));
}

describe('examples/debian-12-install.yaml', () => {
  it('installs Debian 12 from the ISO, provisions it, and the artifact boots to SSH with the changes', async () => {
    const out = path.join(dir, 'out');
    writeExample(out);
    const run = await kiln(['build', template, '--events=json'], {}, 3_600_000);
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.sbom.manager).toBe('dpkg');
    expect(manifest.sbom.packages.map((p: { name: string }) => p.name)).toContain('openssh-server');
    const artifact = path.join(out, 'debian-12-install.qcow2');
    expect((await execa('qemu-img', ['check', artifact], { reject: false })).exitCode).toBe(0);

    const guest = await Guest.boot({ disk: await overlayOf(artifact, dir), memoryMiB: 1024 });
    try {
      const ssh = await guest.ssh('root', insecureKey, 300_000);
      expect(await ssh.run('cat /etc/kiln-marker; hostname; . /etc/os-release; echo $VERSION_ID')).toBe(
        'installed from an ISO by kiln\ndebian-12-install\n12\n',
      );
      expect(await ssh.run('cat /etc/kiln-release')).toContain('kiln');
      expect(await guest.poweroff(ssh, 'poweroff', 120_000)).toBe(true);
    } finally {
      await guest.destroy();
    }
  });

  it('under firmware: uefi-secure with tpm: true, the installed Debian boots the signed shim chain with Secure Boot on and reads measured-boot PCRs from its TPM', async () => {
    const out = path.join(dir, 'out-sb');
    writeExample(out, (yaml) => {
      // The ISO's signed GRUB has no boot: prompt: the same line is typed at its grub> command line.
      yaml = replaced(yaml, '<waitFor "boot: " 2m>', '<waitFor "grub> " 3m>');
      yaml = replaced(
        yaml,
        '      install_timeout: 45m\n',
        '      firmware: uefi-secure\n      tpm: true\n      install_timeout: 45m\n',
      );
      yaml = replaced(
        yaml,
        '          finish=poweroff\n',
        '          packages=mokutil tpm2-tools\n          finish=poweroff\n',
      );
      return replaced(
        yaml,
        '          - . /etc/os-release && echo "$PRETTY_NAME, kernel $(uname -r)"\n',
        [
          '          - . /etc/os-release && echo "$PRETTY_NAME, kernel $(uname -r)"',
          '          - mokutil --sb-state',
          `          - echo "esp=$(ls /boot/efi/EFI/BOOT | tr '\\n' ' ')"`,
          '          - tpm2_pcrread sha256:0,7',
          '          - for p in 0 7; do echo "sysfs pcr$p=$(cat /sys/class/tpm/tpm0/pcr-sha256/$p)"; done',
          '',
        ].join('\n'),
      );
    });
    const started = performance.now();
    const run = await kiln(['build', template, '--events=json'], {}, 3_600_000);
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    console.log(`uefi-secure + tpm install and build: ${((performance.now() - started) / 1000).toFixed(0)} s`);
    const lines = run.events.filter((e) => e.type === 'output').map((e) => String(e.line).trim());
    // Secure Boot from inside the installed system, booted from the signed chain the installer put in the ESP.
    expect(lines).toContain('SecureBoot enabled');
    expect(lines.find((l) => l.startsWith('esp='))).toMatch(/^esp=(?=.*\bBOOTX64\.EFI\b)(?=.*\bgrubx64\.efi\b)/);
    // PCR 0 (firmware) and 7 (Secure Boot policy) hold measurements: measured boot happened. The same
    // values through tpm2-tools (the TPM device) and through the kernel's sysfs files.
    const zero = '0'.repeat(64);
    for (const pcr of ['0', '7']) {
      const tools = lines.map((l) => new RegExp(`^${pcr}\\s*:\\s*0x([0-9A-Fa-f]{64})$`).exec(l)?.[1]).find(Boolean);
      const sysfs = lines.find((l) => l.startsWith(`sysfs pcr${pcr}=`))?.split('=')[1];
      expect(tools, `tpm2_pcrread PCR ${pcr}`).toMatch(/^[0-9A-Fa-f]{64}$/);
      expect(tools!.toLowerCase()).not.toBe(zero);
      expect(sysfs?.toLowerCase(), `sysfs PCR ${pcr}`).toBe(tools!.toLowerCase());
    }
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.platform).toMatchObject({ firmware: 'uefi-secure', secure_boot: true, machine: 'q35', tpm: '2.0' });
    expect(manifest.sbom.packages.map((p: { name: string }) => p.name)).toEqual(
      expect.arrayContaining(['shim-signed', 'grub-efi-amd64-signed', 'mokutil', 'tpm2-tools']),
    );
  }, 3_600_000);
});
