// Secure Boot keys in the edk2 variable store (kiln's stand-in for virt-fw-vars, which Debian 12 lacks):
// Debian's real OVMF_VARS_4M.ms.fd is read, custom PK/KEK/db certificates are enrolled into a copy and
// read back, the rest of the store and of the file are left as they were; certificate files are checked
// with errors naming the field; the firmware's refusal line on the console becomes the build's error.
import { execFileSync } from 'node:child_process';
import { X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  certFingerprint,
  enrolledCertificates,
  enrollKeys,
  readCertificate,
  readKeys,
  secureBootRefusalCause,
  variableStoreFor,
} from '../../../src/qemu/secure-boot.js';
import { buildManifest } from '../../../src/artifacts/manifest.js';
import { loadTemplate } from '../../../src/template/load.js';
import {
  guidBytes,
  guidText,
  readVariables,
  VarStoreError,
  writeVariables,
} from '../../../src/qemu/secure-boot-vars.js';

const msVars = '/usr/share/OVMF/OVMF_VARS_4M.ms.fd';
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-sb-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** A self-signed certificate made by openssl: PEM file, DER file, key file. */
function makeCert(cn: string): { pem: string; der: string; key: string } {
  const pem = path.join(dir, `${cn}.crt`),
    der = path.join(dir, `${cn}.der`),
    key = path.join(dir, `${cn}.key`);
  execFileSync(
    'openssl',
    [
      'req',
      '-x509',
      '-newkey',
      'rsa:2048',
      '-keyout',
      key,
      '-out',
      pem,
      '-subj',
      `/CN=${cn}/`,
      '-days',
      '30',
      '-nodes',
    ],
    { stdio: 'ignore' },
  );
  execFileSync('openssl', ['x509', '-in', pem, '-outform', 'DER', '-out', der]);
  return { pem, der, key };
}
const pk = makeCert('kiln-test-pk');
const kek = makeCert('kiln-test-kek');
const db1 = makeCert('kiln-test-db1');
const db2 = makeCert('kiln-test-db2');
const der = (f: string) => readFileSync(f);

describe('edk2 variable store', () => {
  it("reads Debian's Microsoft-enrolled store: one PK, Microsoft's KEK and db certificates, Secure Boot on", () => {
    const certs = enrolledCertificates(readFileSync(msVars), msVars);
    expect(certs.pk).toHaveLength(1);
    const subjects = [...certs.kek, ...certs.db].map((c) => new X509Certificate(c).subject).join('\n');
    expect(subjects).toMatch(/Microsoft Corporation KEK CA 2011/);
    expect(subjects).toMatch(/Microsoft Corporation UEFI CA 2011/);
    const sbe = readVariables(readFileSync(msVars)).find((v) => v.name === 'SecureBootEnable');
    expect(sbe?.data).toEqual(Buffer.from([1]));
  });

  it('enrolls custom PK, KEK and db into a copy, keeping dbx, the other variables and the bytes outside the store', () => {
    const template = readFileSync(msVars);
    const keys = readKeys({ pk: pk.pem, kek: [kek.der], db: [db1.pem, db2.der] });
    const out = enrollKeys(template, keys, new Date('2026-12-03T06:00:00Z'), 'test');
    expect(out.length).toBe(template.length);
    const got = enrolledCertificates(out, 'out');
    expect(got.pk).toEqual([der(pk.der)]);
    expect(got.kek).toEqual([der(kek.der)]);
    expect(got.db).toEqual([der(db1.der), der(db2.der)]);
    const before = readVariables(template),
      after = readVariables(out);
    const byName = (vs: typeof before, n: string) => vs.find((v) => v.name === n)!;
    expect(byName(after, 'dbx').data).toEqual(byName(before, 'dbx').data);
    expect(byName(after, 'SecureBootEnable').data).toEqual(Buffer.from([1]));
    expect(byName(after, 'CustomMode').data).toEqual(Buffer.from([0]));
    expect(byName(after, 'VendorKeysNv').data).toEqual(Buffer.from([0]));
    expect(byName(after, 'PK').attributes).toBe(0x27);
    expect(byName(after, 'PK').timestamp.readUInt16LE(0)).toBe(2026);
    // Every variable the firmware had is still there with its data, once each (deleted copies dropped).
    for (const v of before.filter(
      (x) => !['PK', 'KEK', 'db', 'VendorKeysNv', 'SecureBootEnable', 'CustomMode'].includes(x.name),
    )) {
      expect(
        after.filter((x) => x.name === v.name && x.guid === v.guid).map((x) => x.data),
        v.name,
      ).toEqual([v.data]);
    }
    // The firmware volume header and the fault-tolerant-write area after the store are untouched.
    const hdr = template.readUInt16LE(0x30);
    const end = hdr + template.readUInt32LE(hdr + 16);
    expect(out.subarray(0, hdr + 28).equals(template.subarray(0, hdr + 28))).toBe(true);
    expect(out.subarray(end).equals(template.subarray(end))).toBe(true);
  });

  it('variableStoreFor: the template as is without keys, enrolled with them', () => {
    expect(variableStoreFor(msVars, undefined).equals(readFileSync(msVars))).toBe(true);
    const enrolled = variableStoreFor(msVars, { pk: pk.pem, kek: [kek.pem], db: [db1.pem] });
    expect(enrolledCertificates(enrolled, 'x').pk).toEqual([der(pk.der)]);
  });

  it('refuses a file that is not an edk2 authenticated store, and variables that do not fit', () => {
    expect(() => readVariables(Buffer.alloc(4096), 'zeros.fd')).toThrow(VarStoreError);
    expect(() => readVariables(Buffer.alloc(4096), 'zeros.fd')).toThrow(/zeros\.fd is not a UEFI firmware volume/);
    const template = readFileSync(msVars);
    const huge = {
      name: 'big',
      guid: '8be4df61-93ca-11d2-aa0d-00e098032b8c',
      attributes: 7,
      timestamp: Buffer.alloc(16),
      data: Buffer.alloc(300_000),
    };
    expect(() => writeVariables(template, [huge], 'ms.fd')).toThrow(/do not fit/);
  });

  it('writes GUIDs in EFI byte order', () => {
    const g = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
    expect(guidBytes(g).toString('hex')).toBe('61dfe48bca93d211aa0d00e098032b8c');
    expect(guidText(guidBytes(g))).toBe(g);
  });
});

describe('secure_boot.keys certificate files', () => {
  it('PEM and DER give the same certificate; the manifest fingerprint is its SHA-256', () => {
    expect(readCertificate(pk.pem, 'f')).toEqual(readCertificate(pk.der, 'f'));
    const fp = execFileSync('openssl', ['x509', '-in', pk.pem, '-noout', '-fingerprint', '-sha256'], {
      encoding: 'utf8',
    });
    expect(certFingerprint(readCertificate(pk.pem, 'f'))).toBe(
      fp.split('=')[1]!.trim().replace(/:/g, '').toLowerCase(),
    );
  });

  it('names the field, the file and the fix for a private key, a non-certificate and a missing file', () => {
    expect(() => readKeys({ pk: pk.pem, kek: [kek.pem], db: [db1.key] })).toThrow(
      /secure_boot\.keys\.db\[0\]: .*kiln-test-db1\.key is a private key, not a certificate[\s\S]*fix: give the certificate/,
    );
    const junk = path.join(dir, 'junk.crt');
    writeFileSync(junk, 'hello');
    expect(() => readKeys({ pk: junk, kek: [kek.pem], db: [db1.pem] })).toThrow(
      /secure_boot\.keys\.pk: .*junk\.crt is not an X\.509 certificate/,
    );
    expect(() => readKeys({ pk: pk.pem, kek: [path.join(dir, 'nope.crt')], db: [db1.pem] })).toThrow(
      /secure_boot\.keys\.kek\[0\]: .*nope\.crt cannot be read \(ENOENT\)/,
    );
  });
});

describe('Secure Boot refusal on the console', () => {
  const refused =
    'BdsDxe: loading Boot0002 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x4,0x0)\nBdsDxe: failed to load Boot0002 "UEFI Misc Device" from PciRoot(0x0)/Pci(0x4,0x0): Access Denied\niPXE 1.0.0\n';
  it("turns OVMF's Access Denied into an error naming the console line and a fix for custom or Microsoft keys", () => {
    expect(secureBootRefusalCause(refused, true)).toMatch(
      /^the firmware refused to start the disk's boot loader under Secure Boot: .*\(console: "BdsDxe: failed to load Boot0002 "UEFI Misc Device" from PciRoot\(0x0\)\/Pci\(0x4,0x0\): Access Denied"\)\n  fix: .*secure_boot\.keys\.db/,
    );
    expect(secureBootRefusalCause(refused, false)).toMatch(/fix: boot a chain signed for Microsoft's keys/);
  });
  it('ignores boot options that are only missing (the empty CD drive OVMF tries first)', () => {
    expect(
      secureBootRefusalCause(
        'BdsDxe: failed to load Boot0001 "UEFI QEMU DVD-ROM QM00005 " from PciRoot(0x0)/Pci(0x1F,0x2)/Sata(0x2,0xFFFF,0x0): Not Found\n',
        true,
      ),
    ).toBeUndefined();
  });
});

describe('manifest', () => {
  it("records the custom keys' certificate fingerprints beside Secure Boot on", () => {
    const keys = { pk: pk.pem, kek: [kek.der], db: [db1.pem, db2.pem] };
    const ctx = {
      template: { file: '/t.yaml', digest: '0'.repeat(64), variables: { values: {}, sensitive: new Set<string>() } },
      build: { name: 'b', source: { firmware: 'uefi-secure', machine: 'pc', secure_boot: { keys } } },
      state: { timings: {}, artifacts: [] },
    };
    const platform = buildManifest(ctx as never, new Date(), (p) => p, 'qemu-img 7.2', []).platform!;
    expect(platform).toMatchObject({ firmware: 'uefi-secure', secure_boot: true, enrolled_keys: true, machine: 'q35' });
    const fp = (f: string) => certFingerprint(readCertificate(f, 'f'));
    expect(platform.custom_keys).toEqual({ pk: [fp(pk.pem)], kek: [fp(kek.pem)], db: [fp(db1.pem), fp(db2.pem)] });
  });
});

describe('template', () => {
  const write = (firmware: string) => {
    writeFileSync(path.join(dir, 'base.qcow2'), '');
    const file = path.join(dir, `t-${firmware}.yaml`);
    writeFileSync(
      file,
      `builds:\n  - name: b\n    source:\n      base_image: base.qcow2\n      checksum: none\n      firmware: ${firmware}\n      secure_boot: { keys: { pk: kiln-test-pk.crt, kek: [kiln-test-kek.der], db: [kiln-test-db1.crt] } }\n`,
    );
    return file;
  };
  it('resolves the key files next to the template, and refuses them without Secure Boot', () => {
    const keys = loadTemplate(write('uefi-secure')).template.builds[0]!.source.secure_boot!.keys;
    expect(keys).toEqual({ pk: pk.pem, kek: [kek.der], db: [db1.pem] });
    for (const fw of ['bios', 'uefi']) {
      expect(() => loadTemplate(write(fw))).toThrow(
        new RegExp(`secure_boot[\\s\\S]*firmware: ${fw} has Secure Boot off[\\s\\S]*fix: set firmware: uefi-secure`),
      );
    }
  });
});
