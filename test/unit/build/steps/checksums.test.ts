import { describe, expect, it } from 'vitest';
import { pickFromSums } from '../../../../src/build/steps/fetch-base.js';

describe('pickFromSums', () => {
  const a = 'a'.repeat(64);
  const b = 'B'.repeat(128);
  const text = `${a}  debian-12-genericcloud-amd64.qcow2\n${b} *other.raw\nSHA256 (bsd.img) = ${'c'.repeat(64)}\n`;
  it('reads GNU lines (text and binary mode)', () => {
    expect(pickFromSums(text, 'debian-12-genericcloud-amd64.qcow2')).toEqual({ algorithm: 'sha256', hex: a });
    expect(pickFromSums(text, 'other.raw')).toEqual({ algorithm: 'sha512', hex: b.toLowerCase() });
  });
  it('reads BSD lines', () =>
    expect(pickFromSums(text, 'bsd.img')).toEqual({ algorithm: 'sha256', hex: 'c'.repeat(64) }));
  it('finds nothing for an unknown name', () => expect(pickFromSums(text, 'x.qcow2')).toBeUndefined());
});
