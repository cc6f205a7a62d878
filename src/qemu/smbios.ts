/**
 * An SMBIOS type 1 (System Information) structure, for QEMU's `-smbios file=`. kiln gives the guest
 * its NoCloud-Net seed URL as the system serial; a file in the build's private work dir keeps that
 * URL (whose random prefix is all that guards the seed) off QEMU's command line, which every local
 * user can read in `ps` or /proc/<pid>/cmdline. QEMU loads the file as one table of that type and,
 * because one was given, builds no type 1 table of its own (hw/smbios/smbios.c: smbios_entry_add()
 * marks the type in have_binfile_bitmap, smbios_skip_table() then skips it).
 */
import { Buffer } from 'node:buffer';

/** SMBIOS 2.4+ layout of type 1 (DSP0134 7.2): 4-byte header, 4 string numbers, UUID, wake-up, SKU, family. */
export const SMBIOS_TYPE1_LENGTH = 0x1b;
/** The handle QEMU gives its own type 1 table (T1_BASE), so no other table's handle collides with it. */
export const SMBIOS_TYPE1_HANDLE = 0x100;
/** Wake-up type "power switch", as QEMU's own table says. */
const WAKE_UP_POWER_SWITCH = 0x06;

export interface SmbiosSystemInfo {
  manufacturer: string;
  product: string;
  serial: string;
  /** 16 bytes as they are stored; QEMU's own table holds zeros unless -uuid is given. */
  uuid?: Buffer;
}

/**
 * The structure's bytes: the formatted area, then its strings, each NUL-terminated, and one more NUL
 * ending the set. A string field holds the 1-based number of its string; 0 means "no string".
 */
export function smbiosType1(info: SmbiosSystemInfo): Buffer {
  const strings: string[] = [];
  const stringNumber = (value: string): number => {
    // SMBIOS strings are NUL-terminated: a NUL inside would end the string early and shift the rest.
    if (value.includes('\0')) throw new Error('an SMBIOS string cannot contain a NUL byte');
    if (!value) return 0;
    strings.push(value);
    return strings.length;
  };
  const formatted = Buffer.alloc(SMBIOS_TYPE1_LENGTH);
  formatted.writeUInt8(1, 0);
  formatted.writeUInt8(SMBIOS_TYPE1_LENGTH, 1);
  formatted.writeUInt16LE(SMBIOS_TYPE1_HANDLE, 2);
  formatted.writeUInt8(stringNumber(info.manufacturer), 4);
  formatted.writeUInt8(stringNumber(info.product), 5);
  formatted.writeUInt8(0, 6); // version
  formatted.writeUInt8(stringNumber(info.serial), 7);
  const uuid = info.uuid ?? Buffer.alloc(16);
  if (uuid.length !== 16) throw new Error('an SMBIOS UUID is 16 bytes');
  uuid.copy(formatted, 8);
  formatted.writeUInt8(WAKE_UP_POWER_SWITCH, 24);
  formatted.writeUInt8(0, 25); // SKU number
  formatted.writeUInt8(0, 26); // family
  // Without strings the set is still ended by two NULs.
  const stringSet = strings.length ? Buffer.from(`${strings.join('\0')}\0\0`, 'utf8') : Buffer.alloc(2);
  return Buffer.concat([formatted, stringSet]);
}
