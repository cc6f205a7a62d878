import { describe, expect, it } from 'vitest';
import { cpuTooSmallCause } from '../../../src/qemu/cpu-needs.js';

const model = 'qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt';

describe('cpuTooSmallCause', () => {
  it('names the x86-64 level glibc asked for, the model the guest had, and the fix', () => {
    const cause = cpuTooSmallCause(
      '[  OK  ] Reached target ...\nFatal glibc error: CPU does not support x86-64-v3\n[    2.1] Kernel panic - not syncing: Attempted to kill init!',
      model,
    );
    expect(cause).toContain('the guest needs x86-64-v3');
    expect(cause).toContain(`its CPU model "${model}"`);
    expect(cause).toContain('(its console: "Fatal glibc error: CPU does not support x86-64-v3")');
    expect(cause).toMatch(/\n {2}fix: set cpu_model: max in the source/);
  });
  it("reads the features Linux's boot code lists on the line after its complaint", () => {
    const cause = cpuTooSmallCause(
      'Probing EDD\nThis kernel requires the following features not present on the CPU:\nsse4_2 popcnt\nUnable to boot - please use a kernel appropriate for your CPU.\n',
      'qemu64',
    );
    expect(cause).toContain('the guest needs the features sse4_2 popcnt, which its CPU model "qemu64" does not offer');
  });
  it("knows ld.so's ISA-level refusal", () => {
    expect(cpuTooSmallCause('/sbin/init: CPU ISA level is lower than required', 'qemu64')).toContain(
      'needs a newer x86-64 level',
    );
  });
  it('says nothing about a console without such a message', () => {
    expect(
      cpuTooSmallCause('Debian GNU/Linux 12 bench ttyS0\nCloud-init v. 22.4.2 finished at ...', model),
    ).toBeUndefined();
  });
});
