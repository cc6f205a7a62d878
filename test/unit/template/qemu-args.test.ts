import { describe, expect, it } from 'vitest';
import { smbiosType1Switch } from '../../../src/template/qemu-args.js';

describe('smbiosType1Switch', () => {
  it('finds the qemu_args switch that sets SMBIOS type 1 fields, however the type is written', () => {
    expect(smbiosType1Switch([['-smbios', 'type=1,manufacturer=ACME']])).toEqual([
      '-smbios',
      'type=1,manufacturer=ACME',
    ]);
    expect(
      smbiosType1Switch([
        ['-m', '2G'],
        ['-smbios', 'serial=x,type=0x1'],
      ]),
    ).toEqual(['-smbios', 'serial=x,type=0x1']);
  });
  it('leaves other SMBIOS types and other switches alone', () => {
    expect(
      smbiosType1Switch([
        ['-smbios', 'type=11,value=x'],
        ['-smbios', 'type=0,vendor=v'],
        ['-smbios', 'file=/t.bin'],
        ['-device', 'type=1'],
      ]),
    ).toBeUndefined();
  });
});
