import { describe, expect, it } from 'vitest';
import { SMBIOS_TYPE1_HANDLE, SMBIOS_TYPE1_LENGTH, smbiosType1 } from '../../../src/qemu/smbios.js';

/** Reads a structure back the way a guest's DMI decoder does: formatted area, then numbered strings. */
function parse(blob: Buffer) {
  const length = blob[1]!;
  const strings = blob.subarray(length).toString('utf8').split('\0');
  const str = (offset: number) => (blob[offset] ? strings[blob[offset]! - 1] : undefined);
  return {
    type: blob[0],
    length,
    handle: blob.readUInt16LE(2),
    manufacturer: str(4),
    product: str(5),
    version: str(6),
    serial: str(7),
    uuid: blob.subarray(8, 24),
    wakeUp: blob[24],
    sku: str(25),
    family: str(26),
    // The string set ends with an empty string: two NULs in a row, at the very end.
    terminated: blob.subarray(-2).equals(Buffer.alloc(2)) && blob.subarray(length, -2).indexOf('\0\0') === -1,
  };
}

describe('smbiosType1', () => {
  const serial = 'ds=nocloud-net;s=http://10.0.2.2:34567/kiln-seed-0123456789abcdef/';

  it('lays out a type 1 table: header, string numbers, UUID, wake-up, and a double-NUL string set', () => {
    const blob = smbiosType1({ manufacturer: 'QEMU', product: 'kiln build VM', serial });
    expect(parse(blob)).toEqual({
      type: 1,
      length: 0x1b,
      handle: SMBIOS_TYPE1_HANDLE,
      manufacturer: 'QEMU',
      product: 'kiln build VM',
      version: undefined,
      serial,
      uuid: Buffer.alloc(16),
      wakeUp: 6,
      sku: undefined,
      family: undefined,
      terminated: true,
    });
    expect(blob.length).toBe(SMBIOS_TYPE1_LENGTH + 'QEMU\0kiln build VM\0'.length + serial.length + 2);
    expect([blob[4], blob[5], blob[6], blob[7]]).toEqual([1, 2, 0, 3]);
  });

  it('numbers only the strings that are set, and ends an empty string set with two NULs', () => {
    expect(parse(smbiosType1({ manufacturer: '', product: '', serial }))).toMatchObject({
      manufacturer: undefined,
      product: undefined,
      serial,
      terminated: true,
    });
    expect(smbiosType1({ manufacturer: '', product: '', serial }).subarray(4, 8)).toEqual(Buffer.from([0, 0, 0, 1]));
    const none = smbiosType1({ manufacturer: '', product: '', serial: '' });
    expect(none.length).toBe(SMBIOS_TYPE1_LENGTH + 2);
    expect(parse(none).terminated).toBe(true);
  });

  it('stores a given UUID as is and refuses values the format cannot hold', () => {
    const uuid = Buffer.from('00112233445566778899aabbccddeeff', 'hex');
    expect(parse(smbiosType1({ manufacturer: 'QEMU', product: 'p', serial, uuid })).uuid).toEqual(uuid);
    expect(() => smbiosType1({ manufacturer: 'QEMU', product: 'p', serial, uuid: Buffer.alloc(8) })).toThrow(
      /16 bytes/,
    );
    expect(() => smbiosType1({ manufacturer: 'QEMU', product: 'p', serial: 'a\0b' })).toThrow(/NUL/);
  });
});
