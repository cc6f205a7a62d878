import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import {
  bootSnapshotSetting,
  savedVmUnloadable,
  vmStateSetting,
  warmBaseUnusable,
} from '../../../src/build/saved-vm-rules.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-saved-vm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'a base image');
writeFileSync(path.join(dir, 'boot.iso'), 'an installer');

let n = 0;
function buildOf(source: string, extra = '') {
  const file = path.join(dir, `t${n++}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: b
    output_directory: out${n}
${extra}
    source:
      checksum: none
${source}
`,
  );
  return loadTemplate(file, { vars: [], varFiles: [], env: {} }).template.builds[0]!;
}
const disk = '      base_image: base.qcow2\n      communicator: { username: root, password: x }';
const noShares = { airgap: false, sharesIntermediate: false };

describe('saved VM rules', () => {
  it('a disk image over SSH with BIOS: a saved VM loads again, the warm base applies; vm_state defaults to before-last', () => {
    const b = buildOf(disk);
    expect(savedVmUnloadable(b, false)).toBeUndefined();
    expect(warmBaseUnusable(b, noShares)).toBeUndefined();
    expect(vmStateSetting(b)).toBe('before-last');
    expect(bootSnapshotSetting(b)).toBe(true);
    expect(vmStateSetting(buildOf(disk, '    cache: { vm_state: true }'))).toBe(true);
    expect(bootSnapshotSetting(buildOf(disk, '    cache: { boot_snapshot: false }'))).toBe(false);
  });

  it('UEFI, a TPM or --record/--offline: no saved VM can load, so neither vm_state nor a warm base, saying why', () => {
    expect(savedVmUnloadable(buildOf(`${disk}\n      firmware: uefi`), false)).toBe('firmware: uefi');
    expect(savedVmUnloadable(buildOf(`${disk}\n      tpm: true`), false)).toBe('tpm: true');
    expect(savedVmUnloadable(buildOf(disk), true)).toBe('a --record/--offline build');
    expect(warmBaseUnusable(buildOf(`${disk}\n      tpm: true`), noShares)).toEqual({ why: 'tpm: true' });
  });

  it('no warm base, quietly, when it is off or does not apply (an ISO install); with a reason for remote sharing and ${build.*} in the seed', () => {
    expect(warmBaseUnusable(buildOf(disk, '    cache: { boot_snapshot: false }'), noShares)).toMatchObject({
      quiet: true,
    });
    expect(
      warmBaseUnusable(
        buildOf('      iso: boot.iso\n      disk_size: 2G\n      communicator: { username: root, password: x }'),
        noShares,
      ),
    ).toMatchObject({ quiet: true });
    expect(warmBaseUnusable(buildOf(disk), { airgap: false, sharesIntermediate: true })).toEqual({
      why: 'a build sharing intermediate layers with a remote cache',
    });
    const seeded = buildOf(`${disk}\n      cloud_init: { user_data: { runcmd: ['echo \${build.http_port}'] } }`);
    expect(warmBaseUnusable(seeded, noShares)?.why).toMatch(/\$\{build\.\*\} values/);
  });
});
