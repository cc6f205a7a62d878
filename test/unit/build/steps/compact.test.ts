// The trim step against the fake driver and a fake SSH session: fstrim in the guest, the overlay's
// size read (shared, QEMU holds it) before and after, and a failed fstrim as a warning.
import { afterAll, describe, expect, it } from 'vitest';
import { compactStep } from '../../../../src/build/steps/compact.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';

afterAll(removeStepDirs);

function trimming(reply: ConstructorParameters<typeof FakeSsh>[0]) {
  const h = stepContext({ state: { disk: { path: '/w/disk.qcow2', format: 'qcow2', virtualSize: 1 << 30 } } });
  const sizes = [300 << 20, 120 << 20];
  h.driver.imageInfo = async (file, format, shared) => {
    h.driver.calls.push({ method: 'imageInfo', args: [file, format, shared] });
    return { ...h.driver.defaultInfo, actualSize: sizes.shift()! };
  };
  const ssh = new FakeSsh(reply);
  h.ctx.state.ssh = ssh.session;
  return { h, ssh };
}

describe('trim free space', () => {
  it('trims in the guest and records the overlay before and after', async () => {
    const { h, ssh } = trimming(() => ({ exitCode: 0, stdout: '/: 1 GiB trimmed\n' }));
    expect((await runStep(compactStep, h.ctx)).error).toBeUndefined();
    expect(h.driver.callsTo('imageInfo')).toEqual([
      ['/w/disk.qcow2', 'qcow2', true],
      ['/w/disk.qcow2', 'qcow2', true],
    ]);
    expect(ssh.commands[0]!.command).toMatch(/fstrim -av/);
    expect(h.ctx.state.compaction).toEqual({ beforeBytes: 300 << 20, afterBytes: 120 << 20 });
    expect(h.said('info')[0]).toMatch(/build overlay 300(\.0)? MiB -> 120(\.0)? MiB$/);
  });

  it('a failing fstrim is a warning, not a failure', async () => {
    const { h } = trimming(() => ({ exitCode: 1, stderr: 'fstrim: /: FITRIM ioctl failed\n' }));
    expect((await runStep(compactStep, h.ctx)).error).toBeUndefined();
    expect(h.said('warn')).toEqual([
      'fstrim failed in the guest (exit 1): fstrim: /: FITRIM ioctl failed; artifacts may carry freed blocks',
    ]);
  });

  it('a qemu-img failure fails the step', async () => {
    const { h } = trimming(() => ({ exitCode: 0 }));
    h.driver.imageInfo = async () => {
      throw new Error('reading /w/disk.qcow2 failed: gone');
    };
    expect((await runStep(compactStep, h.ctx)).error).toBe('reading /w/disk.qcow2 failed: gone');
  });
});
