// The installer wait (ISO builds without a communicator) against the fake driver.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitInstallStep } from '../../../../src/build/steps/wait-install.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

function installing() {
  const h = stepContext({
    source: {
      base_image: undefined,
      iso: '$base',
      disk_size: '1G',
      communicator: { type: 'none' },
      install_timeout: '1s',
    },
  });
  const vm = h.driver.startVm([], {});
  h.ctx.state.qemu = vm;
  h.ctx.state.installing = true;
  h.ctx.state.serialLog = path.join(h.ctx.state.workDir, 'serial.log');
  writeFileSync(h.ctx.state.serialLog, 'Booting installer\n\x1b[1mPartitioning\x1b[0m\r\n');
  return { h, vm };
}

describe('wait for installer', () => {
  it('applies to ISO builds without a communicator only', () => {
    expect(waitInstallStep.enabled!(installing().h.ctx)).toBe(true);
    expect(waitInstallStep.enabled!(stepContext().ctx)).toBe(false);
  });

  it('an installer that powers off ends the wait; installing is over', async () => {
    const { h, vm } = installing();
    setTimeout(() => vm.exit(0), 1);
    expect((await runStep(waitInstallStep, h.ctx)).error).toBeUndefined();
    expect(h.ctx.state.installing).toBe(false);
  });

  it('an installer still running at install_timeout fails with the end of its console', async () => {
    const { h } = installing();
    expect((await runStep(waitInstallStep, h.ctx)).error).toBe(
      'the installer did not finish within 1s\n--- last lines of the serial console ---\nBooting installer\nPartitioning',
    );
  });

  it('QEMU failing during the install fails the step with its exit and message', async () => {
    const { h, vm } = installing();
    vm.exit(1, null, 'qemu: disk full');
    expect((await runStep(waitInstallStep, h.ctx)).error).toBe(
      'QEMU exited with 1 during the install: qemu: disk full',
    );
    expect(h.ctx.state.installing).toBe(true);
  });
});
