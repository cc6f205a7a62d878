/**
 * The driver's two roles: the Hypervisor (QEMU, QMP, ports) and the ImageTool (qemu-img). A build
 * holds both; the code below it takes the role it uses from its caller, never a default of its own.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createDriver } from '../../../src/qemu/driver.js';
import { imageToolOf } from '../../../src/qemu/image-tool.js';
import { QemuImg } from '../../../src/qemu/qemu-img.js';
import { LayerStore } from '../../../src/cache/layers.js';

const imageMethods = [
  'imageInfo',
  'createOverlay',
  'createBlank',
  'resize',
  'convert',
  'check',
  'checkReport',
  'checkBaseImage',
  'rebaseUnsafe',
  'rebase',
  'qemuImgVersion',
  'readStart',
  'writeBytes',
];
const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

describe('driver roles', () => {
  it("makes the image tool from one qemu-img, and the build's driver from the hypervisor and that tool", () => {
    expect(
      Object.keys(imageToolOf(new QemuImg('qemu-img', { setting: 'KILN_QEMU_IMG', setBySetting: false }))).sort(),
    ).toEqual([...imageMethods].sort());
    const driver = createDriver({ qemuImgBinary: '/nonexistent/qemu-img' });
    expect(Object.keys(driver)).toEqual(
      expect.arrayContaining([
        ...imageMethods,
        'startVm',
        'connectQmp',
        'chooseAccelerator',
        'createSnapshotOverlay',
        'snapshotActiveDisk',
      ]),
    );
  });

  it('opens a layer store to read without any image tool, and says so if one is then asked to publish', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-roles-'));
    dirs.push(dir);
    const store = new LayerStore(dir);
    expect(store.meta('0'.repeat(64))).toBeUndefined();
    writeFileSync(path.join(dir, 'frozen.qcow2'), 'x');
    await expect(
      store.publish('1'.repeat(64), path.join(dir, 'frozen.qcow2'), null, {
        parent: null,
        build: 'b',
        template: 't',
        provisioner: 1,
        description: 'shell',
      }),
    ).rejects.toThrow(/opened without an image tool/);
  });
});
