/**
 * The edk2 (OVMF) variable store file, read and rewritten in place of virt-fw-vars (python3-virt-firmware,
 * which Debian 12 does not ship). Layout, from edk2's MdeModulePkg headers:
 *   firmware volume header ("_FVH" at 0x28, its length at 0x30)
 *   variable store header: format GUID (authenticated variables), size, format 0x5a, state 0xfe
 *   variables, 4-byte aligned: AUTHENTICATED_VARIABLE_HEADER (60 bytes: start id 0x55aa, state,
 *   attributes, monotonic count, EFI_TIME timestamp, public key index, name size, data size, vendor GUID),
 *   then the UTF-16 name and the data; free space is 0xff up to the store's end
 *   (the fault-tolerant-write area after the store is left as it is).
 * Rewriting keeps the live variables in their order, with the changed ones' data replaced, and drops
 * the deleted ones (what edk2's own reclaim does), so the firmware reads it as a freshly compacted store.
 */

export const EFI_GLOBAL_VARIABLE = '8be4df61-93ca-11d2-aa0d-00e098032b8c';
export const EFI_IMAGE_SECURITY_DATABASE = 'd719b2cb-3d3a-4596-a3bc-dad00e67656f';
export const EFI_CERT_X509 = 'a5c059a1-94e4-4aa7-87b5-ab155c2bf072';
const AUTHENTICATED_VARIABLE_STORE = 'aaf32c78-947b-439a-a180-2e144ec37792';

/** EFI_VARIABLE_NON_VOLATILE | BOOTSERVICE_ACCESS | RUNTIME_ACCESS | TIME_BASED_AUTHENTICATED_WRITE_ACCESS: PK, KEK, db. */
export const AUTHENTICATED_NV_BS_RT = 0x27;

const VAR_ADDED = 0x3f;
/** Added, and a newer copy being written (edk2 still reads it when that copy never landed). */
const VAR_ADDED_IN_DELETED_TRANSITION = 0x3e;
const HEADER_SIZE = 60;
const STORE_HEADER_SIZE = 28;

export interface EfiVariable {
  name: string;
  guid: string;
  attributes: number;
  /** EFI_TIME, 16 bytes, as stored (authenticated variables' last write). */
  timestamp: Buffer;
  data: Buffer;
}

export class VarStoreError extends Error {}

/** GUID text <-> the mixed-endian bytes EFI stores (the first three fields little-endian). */
export function guidBytes(guid: string): Buffer {
  const h = guid.replace(/-/g, '');
  if (!/^[0-9a-f]{32}$/i.test(h)) throw new Error(`not a GUID: ${guid}`);
  const b = Buffer.from(h, 'hex');
  return Buffer.concat([
    Buffer.from(b.subarray(0, 4)).reverse(),
    Buffer.from(b.subarray(4, 6)).reverse(),
    Buffer.from(b.subarray(6, 8)).reverse(),
    b.subarray(8),
  ]);
}

export function guidText(b: Buffer): string {
  const r = (s: Buffer) => Buffer.from(s).reverse().toString('hex');
  const rest = b.subarray(8, 16).toString('hex');
  return `${r(b.subarray(0, 4))}-${r(b.subarray(4, 6))}-${r(b.subarray(6, 8))}-${rest.slice(0, 4)}-${rest.slice(4)}`;
}

/** Where the variable store is in the file, after checking that it is one kiln can rewrite. */
function storeBounds(file: Buffer, name: string): { start: number; end: number } {
  if (file.length < 0x48 || file.toString('latin1', 0x28, 0x2c) !== '_FVH')
    throw new VarStoreError(
      `${name} is not a UEFI firmware volume (no "_FVH" signature at 0x28): not an edk2 variable store`,
    );
  const hdr = file.readUInt16LE(0x30);
  if (hdr + STORE_HEADER_SIZE > file.length)
    throw new VarStoreError(`${name}: firmware volume header length ${hdr} runs past the file`);
  const format = guidText(file.subarray(hdr, hdr + 16));
  if (format !== AUTHENTICATED_VARIABLE_STORE)
    throw new VarStoreError(
      `${name}: variable store format ${format} is not edk2's authenticated one (${AUTHENTICATED_VARIABLE_STORE}), which Secure Boot keys need`,
    );
  const size = file.readUInt32LE(hdr + 16);
  if (file[hdr + 20] !== 0x5a || file[hdr + 21] !== 0xfe || hdr + size > file.length)
    throw new VarStoreError(
      `${name}: the variable store header is not formatted and healthy (format 0x${file[hdr + 20]!.toString(16)}, state 0x${file[hdr + 21]!.toString(16)}, size ${size})`,
    );
  return { start: hdr + STORE_HEADER_SIZE, end: hdr + size };
}

/** The live variables of a store (deleted and half-written ones left out), in the order they are stored. */
export function readVariables(file: Buffer, name = 'variable store'): EfiVariable[] {
  const { start, end } = storeBounds(file, name);
  const vars: EfiVariable[] = [];
  let at = start;
  while (at + HEADER_SIZE <= end && file.readUInt16LE(at) === 0x55aa) {
    const state = file[at + 2]!;
    const nameSize = file.readUInt32LE(at + 36);
    const dataSize = file.readUInt32LE(at + 40);
    const next = at + HEADER_SIZE + nameSize + dataSize;
    if (next > end) throw new VarStoreError(`${name}: the variable at 0x${at.toString(16)} runs past the store's end`);
    if (state === VAR_ADDED || state === VAR_ADDED_IN_DELETED_TRANSITION) {
      const nameAt = at + HEADER_SIZE;
      vars.push({
        name: file.toString('utf16le', nameAt, nameAt + nameSize).replace(/\0+$/, ''),
        guid: guidText(file.subarray(at + 44, at + 60)),
        attributes: file.readUInt32LE(at + 4),
        timestamp: Buffer.from(file.subarray(at + 16, at + 32)),
        data: Buffer.from(file.subarray(nameAt + nameSize, next)),
      });
    }
    at = (next + 3) & ~3;
  }
  // A copy "in deleted transition" counts only when no fully added copy of the same variable exists.
  const key = (v: EfiVariable) => `${v.guid}/${v.name}`;
  const seen = new Set<string>();
  return vars
    .reverse()
    .filter((v) => (seen.has(key(v)) ? false : (seen.add(key(v)), true)))
    .reverse();
}

/** The store with `vars` as its variables (everything else free), the rest of the file unchanged. */
export function writeVariables(file: Buffer, vars: readonly EfiVariable[], name = 'variable store'): Buffer {
  const { start, end } = storeBounds(file, name);
  const out = Buffer.from(file);
  out.fill(0xff, start, end);
  let at = start;
  for (const v of vars) {
    const nameBytes = Buffer.from(`${v.name}\0`, 'utf16le');
    const next = at + HEADER_SIZE + nameBytes.length + v.data.length;
    if (next > end)
      throw new VarStoreError(`${name}: the variables do not fit its ${end - start}-byte store (at ${v.name})`);
    out.writeUInt16LE(0x55aa, at);
    out[at + 2] = VAR_ADDED;
    out[at + 3] = 0;
    out.writeUInt32LE(v.attributes, at + 4);
    out.writeBigUInt64LE(0n, at + 8);
    v.timestamp.copy(out, at + 16, 0, 16);
    out.writeUInt32LE(0, at + 32);
    out.writeUInt32LE(nameBytes.length, at + 36);
    out.writeUInt32LE(v.data.length, at + 40);
    guidBytes(v.guid).copy(out, at + 44);
    nameBytes.copy(out, at + HEADER_SIZE);
    v.data.copy(out, at + HEADER_SIZE + nameBytes.length);
    at = (next + 3) & ~3;
  }
  return out;
}

/** An EFI_SIGNATURE_LIST per certificate (X.509, DER), each owned by `owner`: what PK, KEK and db hold. */
export function x509SignatureLists(certs: readonly Buffer[], owner: string): Buffer {
  return Buffer.concat(
    certs.map((der) => {
      const head = Buffer.alloc(28);
      guidBytes(EFI_CERT_X509).copy(head, 0);
      head.writeUInt32LE(28 + 16 + der.length, 16); // SignatureListSize
      head.writeUInt32LE(0, 20); // SignatureHeaderSize
      head.writeUInt32LE(16 + der.length, 24); // SignatureSize: owner GUID + the certificate
      return Buffer.concat([head, guidBytes(owner), der]);
    }),
  );
}

/** The X.509 certificates (DER) in a variable's signature lists; other signature types (hashes) are skipped. */
export function x509Certificates(data: Buffer): Buffer[] {
  const certs: Buffer[] = [];
  let at = 0;
  while (at + 28 <= data.length) {
    const type = guidText(data.subarray(at, at + 16));
    const listSize = data.readUInt32LE(at + 16);
    const headerSize = data.readUInt32LE(at + 20);
    const sigSize = data.readUInt32LE(at + 24);
    if (listSize < 28 || at + listSize > data.length || sigSize < 16) break;
    if (type === EFI_CERT_X509) {
      for (let s = at + 28 + headerSize; s + sigSize <= at + listSize; s += sigSize)
        certs.push(Buffer.from(data.subarray(s + 16, s + sigSize)));
    }
    at += listSize;
  }
  return certs;
}

/** EFI_TIME for `d` (UTC): year u16, month, day, hour, minute, second, pad, nanosecond u32, time zone, daylight, pad. */
export function efiTime(d: Date): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(d.getUTCFullYear(), 0);
  b[2] = d.getUTCMonth() + 1;
  b[3] = d.getUTCDate();
  b[4] = d.getUTCHours();
  b[5] = d.getUTCMinutes();
  b[6] = d.getUTCSeconds();
  return b;
}
