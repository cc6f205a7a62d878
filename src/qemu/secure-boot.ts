/**
 * Secure Boot with a site's own keys: PK, KEK and db certificates enrolled into the build's copy of the
 * firmware's variable store (what virt-fw-vars --set-pk/--add-kek/--add-db does), and the firmware's
 * refusal of a boot loader those keys do not sign, read from the serial console.
 */
import { X509Certificate, createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import {
  AUTHENTICATED_NV_BS_RT,
  EFI_GLOBAL_VARIABLE,
  EFI_IMAGE_SECURITY_DATABASE,
  efiTime,
  readVariables,
  writeVariables,
  x509Certificates,
  x509SignatureLists,
  type EfiVariable,
} from './secure-boot-vars.js';
import { KilnError } from '../util/errors.js';

/** The template's secure_boot.keys: certificate files (PEM or DER), one PK, one or more KEK and db. */
export interface SecureBootKeyFiles {
  pk: string;
  kek: string[];
  db: string[];
}

export interface SecureBootKeys {
  pk: Buffer[];
  kek: Buffer[];
  db: Buffer[];
}

/** Owner GUID of the signatures kiln enrolls (EFI_SIGNATURE_DATA.SignatureOwner): kiln's own. */
export const KILN_SIGNATURE_OWNER = '6b696c6e-0000-4b31-8000-736563757265';

const SECURE_BOOT_ENABLE = 'f0a30bc7-af08-4556-99c4-001009c93a44';
const CUSTOM_MODE = 'c076ec0c-7028-4399-a072-71ee5c448b9f';
const VENDOR_KEYS_NV = '9073e4e0-60ec-4b6e-9903-4c223c260f3c';

/** A certificate file as DER, or an error naming the field, the file and the fix. */
export function readCertificate(file: string, field: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    throw new KilnError(
      `${field}: ${file} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
      { fix: `point it at an X.509 certificate file (PEM or DER)` },
    );
  }
  try {
    return new X509Certificate(raw).raw;
  } catch (e) {
    const what = raw.includes('PRIVATE KEY')
      ? 'a private key, not a certificate (the firmware needs only the certificate; keep the key to sign with)'
      : `not an X.509 certificate (${(e as Error).message})`;
    throw new KilnError(`${field}: ${file} is ${what}`, {
      fix: `give the certificate, PEM (-----BEGIN CERTIFICATE-----) or DER, e.g. openssl req -x509 -newkey rsa:2048 -keyout db.key -out db.crt -subj /CN=my-db/ -days 3650 -nodes`,
    });
  }
}

export function readKeys(files: SecureBootKeyFiles): SecureBootKeys {
  return {
    pk: [readCertificate(files.pk, 'secure_boot.keys.pk')],
    kek: files.kek.map((f, i) => readCertificate(f, `secure_boot.keys.kek[${i}]`)),
    db: files.db.map((f, i) => readCertificate(f, `secure_boot.keys.db[${i}]`)),
  };
}

/** SHA-256 of each certificate, as `openssl x509 -fingerprint -sha256` prints it: what the manifest records. */
export const certFingerprint = (der: Buffer) => createHash('sha256').update(der).digest('hex');

/**
 * `template` (a Secure Boot variable store, e.g. OVMF_VARS_4M.ms.fd) with PK, KEK and db replaced by
 * `keys`; the rest kept (dbx, the firmware's own variables). Secure Boot is switched on (SecureBootEnable
 * 1, CustomMode 0) and the keys marked as not the vendor's (VendorKeysNv 0). `name` is for messages.
 */
export function enrollKeys(template: Buffer, keys: SecureBootKeys, now: Date, name: string): Buffer {
  const stamp = efiTime(now);
  const wanted: EfiVariable[] = [
    { name: 'PK', guid: EFI_GLOBAL_VARIABLE, data: x509SignatureLists(keys.pk, KILN_SIGNATURE_OWNER) },
    { name: 'KEK', guid: EFI_GLOBAL_VARIABLE, data: x509SignatureLists(keys.kek, KILN_SIGNATURE_OWNER) },
    { name: 'db', guid: EFI_IMAGE_SECURITY_DATABASE, data: x509SignatureLists(keys.db, KILN_SIGNATURE_OWNER) },
  ].map((v) => ({ ...v, attributes: AUTHENTICATED_NV_BS_RT, timestamp: stamp }));
  const flags: EfiVariable[] = [
    {
      name: 'SecureBootEnable',
      guid: SECURE_BOOT_ENABLE,
      attributes: 0x03,
      timestamp: Buffer.alloc(16),
      data: Buffer.from([1]),
    },
    { name: 'CustomMode', guid: CUSTOM_MODE, attributes: 0x03, timestamp: Buffer.alloc(16), data: Buffer.from([0]) },
  ];
  const same = (a: Pick<EfiVariable, 'name' | 'guid'>, b: Pick<EfiVariable, 'name' | 'guid'>) =>
    a.name === b.name && a.guid === b.guid;
  const vendorKeys = { name: 'VendorKeysNv', guid: VENDOR_KEYS_NV };
  const vars = readVariables(template, name)
    .filter((v) => ![...wanted, ...flags].some((w) => same(v, w)))
    .map((v) => (same(v, vendorKeys) ? { ...v, data: Buffer.from([0]) } : v));
  return writeVariables(template, [...vars, ...wanted, ...flags], name);
}

/** The variable store's certificates of PK, KEK and db (X.509 only), for checks and records. */
export function enrolledCertificates(store: Buffer, name: string): SecureBootKeys {
  const vars = readVariables(store, name);
  const certs = (n: string, guid: string) => {
    const v = vars.find((x) => x.name === n && x.guid === guid);
    return v ? x509Certificates(v.data) : [];
  };
  return {
    pk: certs('PK', EFI_GLOBAL_VARIABLE),
    kek: certs('KEK', EFI_GLOBAL_VARIABLE),
    db: certs('db', EFI_IMAGE_SECURITY_DATABASE),
  };
}

/**
 * The variable store a build's VM starts from: the firmware's template (`varsTemplate`), with `keys`
 * enrolled when the template sets them (secure_boot.keys).
 */
export function variableStoreFor(varsTemplate: string, keys: SecureBootKeyFiles | undefined, now = new Date()): Buffer {
  const template = readFileSync(varsTemplate);
  return keys ? enrollKeys(template, readKeys(keys), now, varsTemplate) : template;
}

/**
 * What edk2 prints on the console when Secure Boot refuses a boot loader: the boot manager's line
 * ("BdsDxe: failed to load Boot0001 "UEFI Misc Device" from ...: Access Denied") or the image
 * verifier's "Security Violation". The line is the build's error: waiting for SSH would only time out.
 */
export function secureBootRefusal(console: string): string | undefined {
  const m = /^.*BdsDxe: failed to load .*: (?:Access Denied|Security Violation).*$/m.exec(console);
  return m?.[0].trim();
}

/** The build's error for a refusal on the console, or undefined; `customKeys`: secure_boot.keys set the db. */
export function secureBootRefusalCause(console: string, customKeys: boolean): string | undefined {
  const line = secureBootRefusal(console);
  if (!line) return undefined;
  const fix = customKeys
    ? "sign the boot loader (and what it loads) with a key whose certificate is in secure_boot.keys.db, or add the certificate it is signed with there (a distribution's shim: Microsoft Corporation UEFI CA 2011)"
    : "boot a chain signed for Microsoft's keys (a distribution's shim and its signed GRUB and kernel), set secure_boot.keys to your own, or use firmware: uefi (Secure Boot off)";
  return `the firmware refused to start the disk's boot loader under Secure Boot: it is not signed by a certificate in the firmware's db (console: "${line}")\n  fix: ${fix}`;
}
