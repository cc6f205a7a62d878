// firmware: uefi resolved through QEMU's firmware descriptors, with a TPM 2.0 (swtpm): the tiny guest,
// booted by kiln through OVMF and GRUB, sees EFI and a TPM; after kiln exits no swtpm is left.
// firmware: uefi-secure: the tiny guest boots Debian's signed shim -> GRUB -> kernel with Microsoft's keys
// and sees Secure Boot on; the variable store is an artifact, signed with the rest. secure_boot.keys: a
// db without the certificate shim is signed with makes OVMF refuse it, and the build says so; a db that also
// holds Microsoft's UEFI CA boots it, and the guest reads the site's own PK back from its efivars.
import { execFileSync } from 'node:child_process';
import { X509Certificate, createHash } from 'node:crypto';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { certFingerprint, enrolledCertificates } from '../../src/qemu/secure-boot.js';
import { EFI_CERT_X509, guidBytes } from '../../src/qemu/secure-boot-vars.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-fw-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
/** A self-signed certificate made with openssl (its key beside it): the PEM certificate's path. */
const selfSigned = (name: string): string => {
  const crt = path.join(dir, `${name}.crt`);
  if (existsSync(crt)) return crt;
  execFileSync(
    'openssl',
    ['req', '-x509', '-newkey', 'rsa:2048', '-keyout', path.join(dir, `${name}.key`), '-out', crt].concat([
      '-subj',
      `/CN=kiln e2e ${name}/`,
      '-days',
      '30',
      '-nodes',
    ]),
    { stdio: 'ignore' },
  );
  return crt;
};
const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};

describe('UEFI from descriptors + TPM 2.0', () => {
  it('boots the tiny guest with firmware: uefi (via /usr/share/qemu/firmware) and tpm: true; the guest sees EFI and tpm0; swtpm is gone after', async () => {
    const file = path.join(dir, 'fw.yaml');
    const out = path.join(dir, 'out');
    writeFileSync(
      file,
      `
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
`,
    );
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
    expect(manifest.platform).toEqual({
      firmware: 'uefi',
      firmware_descriptor: '/usr/share/qemu/firmware/60-edk2-x86_64.json',
      secure_boot: false,
      enrolled_keys: false,
      machine: 'pc',
      tpm: '2.0',
    });
  }, 300_000);

  it('uefi-secure: the tiny guest boots the signed shim chain with Secure Boot on (SecureBoot efivar = 1); the VARS file is a signed artifact', async () => {
    const file = path.join(dir, 'sb.yaml');
    const out = path.join(dir, 'out-sb');
    const signKey = path.join(dir, 'sign-key');
    execFileSync('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'builder', '-f', signKey]);
    writeFileSync(
      file,
      `
builds:
  - name: sb
    output_directory: ${out}
${tinySourceYaml('    ', { bootloader: true }).replace('memory: 256', 'memory: 512') /* 256 MiB: the Secure Boot kernel never comes up on q35 */}
      firmware: uefi-secure
    provisioners:
      - type: shell
        inline:
          - echo "secureboot=$(od -An -tu1 /sys/firmware/efi/efivars/SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c | awk '{print $NF}') lockdown=$(cat /sys/kernel/security/lockdown 2>/dev/null || dmesg | grep -c 'locked down from EFI Secure Boot')"
    outputs:
      - format: qcow2
    sign: { key: ${signKey} }
`,
    );
    const r = await kiln(['build', file, '--events=json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const logs = r.events.filter((e) => e.type === 'log').map((e) => String(e.message));
    expect(logs.find((m) => m.startsWith('firmware: '))).toMatch(
      /\(40-edk2-x86_64-secure-enrolled\.json; machine q35 with SMM\)/,
    );
    const lines = r.events.filter((e) => e.type === 'output').map((e) => String(e.line));
    expect(lines.find((l) => l.startsWith('secureboot='))).toMatch(/^secureboot=1 lockdown=/);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as {
      platform: Record<string, unknown>;
      artifacts: { name: string; format: string; sha256: string; path: string }[];
    };
    expect(manifest.platform).toEqual({
      firmware: 'uefi-secure',
      firmware_descriptor: '/usr/share/qemu/firmware/40-edk2-x86_64-secure-enrolled.json',
      secure_boot: true,
      enrolled_keys: true,
      machine: 'q35',
    });
    // The variable store the VM booted with (Microsoft's keys) beside the disk, digested, in SHA256SUMS, signed.
    const vars = manifest.artifacts.find((a) => a.format === 'efi-vars')!;
    expect(vars.name).toBe('sb.efivars.fd');
    const varsFile = path.join(out, vars.name);
    expect(createHash('sha256').update(readFileSync(varsFile)).digest('hex')).toBe(vars.sha256);
    expect(readFileSync(path.join(out, 'SHA256SUMS'), 'utf8')).toContain(`${vars.sha256}  sb.efivars.fd\n`);
    expect(existsSync(path.join(out, 'SHA256SUMS.sig'))).toBe(true);
    const ms = enrolledCertificates(readFileSync('/usr/share/OVMF/OVMF_VARS_4M.ms.fd'), 'ms.fd');
    expect(enrolledCertificates(readFileSync(varsFile), vars.name)).toEqual(ms);
  }, 300_000);

  it('secure_boot.keys: a db without the certificate shim is signed with enrolls, and the firmware refuses the chain: the build fails naming it', async () => {
    const certs = { pk: selfSigned('pk'), kek: selfSigned('kek'), db: selfSigned('db') };
    const file = path.join(dir, 'custom.yaml');
    const out = path.join(dir, 'out-custom');
    writeFileSync(
      file,
      `
builds:
  - name: custom
    output_directory: ${out}
${tinySourceYaml('    ', { bootloader: true })}
      firmware: uefi-secure
      secure_boot: { keys: { pk: ${certs.pk}, kek: [${certs.kek}], db: [${certs.db}] } }
    outputs:
      - format: qcow2
`,
    );
    const started = performance.now();
    const r = await kiln(['build', file, '--events=json']);
    expect(r.exitCode).not.toBe(0);
    expect(r.stderr).toMatch(
      /the firmware refused to start the disk's boot loader under Secure Boot: it is not signed by a certificate in the firmware's db \(console: "BdsDxe: failed to load Boot\d+ .*: Access Denied"\)/,
    );
    expect(r.stderr).toMatch(/fix: sign the boot loader .* secure_boot\.keys\.db/);
    // Found on the console, not by waiting out communicator.timeout (3m).
    expect(performance.now() - started).toBeLessThan(120_000);
    expect(existsSync(out)).toBe(false);
    const logs = r.events.filter((e) => e.type === 'log').map((e) => String(e.message));
    expect(logs.find((m) => m.startsWith('firmware: '))).toMatch(/Secure Boot keys from secure_boot\.keys/);
  }, 300_000);

  it("secure_boot.keys with Microsoft's UEFI CA in db: the shim chain boots with Secure Boot on, and the guest's PK efivar holds the site's own PK", async () => {
    // Microsoft Corporation UEFI CA 2011, which signs Debian's shim, read out of Debian's MS-enrolled store.
    const msUefiCa = enrolledCertificates(readFileSync('/usr/share/OVMF/OVMF_VARS_4M.ms.fd'), 'ms.fd').db.find((c) =>
      new X509Certificate(c).subject.includes('CN=Microsoft Corporation UEFI CA 2011'),
    )!;
    expect(msUefiCa).toBeDefined();
    const msFile = path.join(dir, 'ms-uefi-ca.der');
    writeFileSync(msFile, msUefiCa);
    const [pk, kek, db] = [selfSigned('pk'), selfSigned('kek'), selfSigned('db')];
    const der = (f: string) => new X509Certificate(readFileSync(f)).raw;
    const efivar = (name: string) => `/sys/firmware/efi/efivars/${name}`;
    const file = path.join(dir, 'custom-ok.yaml');
    const out = path.join(dir, 'out-custom-ok');
    writeFileSync(
      file,
      `
builds:
  - name: custom-ok
    output_directory: ${out}
${tinySourceYaml('    ', { bootloader: true }).replace('memory: 256', 'memory: 512')}
      firmware: uefi-secure
      secure_boot: { keys: { pk: ${pk}, kek: [${kek}], db: [${db}, ${msFile}] } }
    provisioners:
      - type: shell
        inline:
          - echo "secureboot=$(od -An -tu1 ${efivar('SecureBoot-8be4df61-93ca-11d2-aa0d-00e098032b8c')} | awk '{print $NF}')"
          - echo "pk=$(od -An -tx1 -v ${efivar('PK-8be4df61-93ca-11d2-aa0d-00e098032b8c')} | tr -d ' \\n')"
          - echo "db=$(od -An -tx1 -v ${efivar('db-d719b2cb-3d3a-4596-a3bc-dad00e67656f')} | tr -d ' \\n')"
    outputs:
      - format: qcow2
`,
    );
    const r = await kiln(['build', file, '--events=json']);
    expect(r.exitCode, r.stderr).toBe(0);
    const lines = r.events.filter((e) => e.type === 'output').map((e) => String(e.line));
    expect(lines).toContain('secureboot=1');
    // The guest's PK efivar: attributes (4 bytes), one EFI_SIGNATURE_LIST of type X.509 (28-byte header),
    // kiln's owner GUID (16 bytes), then the certificate's DER bytes: exactly the site's PK.
    const pkHex = lines.find((l) => l.startsWith('pk='))!.slice(3);
    expect(pkHex.slice(8, 40)).toBe(guidBytes(EFI_CERT_X509).toString('hex'));
    expect(pkHex.slice(2 * (4 + 28 + 16))).toBe(der(pk).toString('hex'));
    // db holds both certificates, the site's and Microsoft's.
    const dbHex = lines.find((l) => l.startsWith('db='))!.slice(3);
    expect(dbHex).toContain(der(db).toString('hex'));
    expect(dbHex).toContain(msUefiCa.toString('hex'));
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')) as {
      platform: { secure_boot: boolean; custom_keys: { pk: string[]; kek: string[]; db: string[] } };
    };
    expect(manifest.platform.secure_boot).toBe(true);
    expect(manifest.platform.custom_keys).toEqual({
      pk: [certFingerprint(der(pk))],
      kek: [certFingerprint(der(kek))],
      db: [certFingerprint(der(db)), certFingerprint(msUefiCa)],
    });
  }, 300_000);
});
