// How the seed reaches the guest when the template does not say (cloud_init.delivery unset).
import { describe, expect, it } from 'vitest';
import { resolveSeedDelivery } from '../../../src/cloudinit/delivery.js';
import { findExecutable } from '../../../src/qemu/process.js';

const withXorriso = () => true;
const withoutXorriso = () => false;

describe('resolveSeedDelivery', () => {
  it("keeps the template's choice, whatever the host has", () => {
    expect(resolveSeedDelivery('http', [], withXorriso)).toEqual({ delivery: 'http' });
    expect(resolveSeedDelivery('cdrom', [], withoutXorriso)).toEqual({ delivery: 'cdrom' });
  });

  it('unset: a cidata CD where xorriso is installed, and says so', () => {
    const r = resolveSeedDelivery(undefined, [], withXorriso);
    expect(r.delivery).toBe('cdrom');
    expect(r.chosen).toMatch(/cidata CD/);
  });

  it('unset, no xorriso: HTTP, naming the package that would make it faster', () => {
    const r = resolveSeedDelivery(undefined, [['-m', '1024']], withoutXorriso);
    expect(r.delivery).toBe('http');
    expect(r.chosen).toMatch(/xorriso is not installed.*apt-get install xorriso/);
  });

  it("unset, with the template's own SMBIOS type 1 table: the CD (the HTTP seed's URL would need that table)", () => {
    const r = resolveSeedDelivery(undefined, [['-smbios', 'type=1,serial=abc']], withoutXorriso);
    expect(r.delivery).toBe('cdrom');
    expect(r.chosen).toMatch(/SMBIOS type 1/);
  });

  it('looks for xorriso on PATH by default', () => {
    const expected = findExecutable('xorriso') ? 'cdrom' : 'http';
    expect(resolveSeedDelivery(undefined, []).delivery).toBe(expected);
  });
});
