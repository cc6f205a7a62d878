// accelerator: hvf (macOS's Hypervisor.framework) is accepted by the template and passed through to QEMU as
// -accel hvf with the host's CPU, like KVM. Only the command line is checked: no macOS host here to boot it.
import { describe, expect, it } from 'vitest';
import { buildQemuArgs, type VmSpec } from '../../../src/qemu/argv.js';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { loadTemplate } from '../../../src/template/load.js';

const vm: VmSpec = {
  name: 'mac',
  accelerator: 'hvf',
  cpus: 2,
  memoryMiB: 1024,
  machine: 'q35',
  firmware: { type: 'bios' },
  disks: [{ path: '/w/disk.qcow2', format: 'qcow2', interface: 'virtio' }],
  net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: 2222, guestPort: 22 }] },
  qmpSocket: '/w/qmp.sock',
  serial: { socket: '/w/serial.sock', log: '/w/serial.log' },
  headless: true,
};
const value = (args: string[], flag: string) => args.filter((_, i) => args[i - 1] === flag);

describe('accelerator: hvf', () => {
  it('passes -accel hvf and the host CPU to QEMU (a template cpu_model still wins)', () => {
    const a = buildQemuArgs(vm);
    expect(value(a, '-accel')).toEqual(['hvf']);
    expect(value(a, '-cpu')).toEqual(['host']);
    expect(value(buildQemuArgs({ ...vm, cpuModel: 'max' }), '-cpu')).toEqual(['max']);
  });
  it('is accepted by the template', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-hvf-'));
    try {
      writeFileSync(path.join(dir, 'base.qcow2'), '');
      writeFileSync(
        path.join(dir, 't.yaml'),
        'builds:\n  - name: m\n    source: { base_image: base.qcow2, checksum: none, accelerator: hvf }\n',
      );
      expect(loadTemplate(path.join(dir, 't.yaml')).template.builds[0]!.source.accelerator).toBe('hvf');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
