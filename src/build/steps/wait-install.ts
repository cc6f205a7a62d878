/**
 * Step (ISO builds without a communicator): the install is the whole build, so wait for the
 * installer to power the VM off, within install_timeout.
 */
import type { Step } from '../step.js';
import { need } from '../state.js';
import { durationSetting } from '../../template/units.js';
import { serialTail } from '../../util/serial-log.js';

export const waitInstallStep: Step = {
  name: 'wait for installer',
  enabled: (ctx) => ctx.build.source.media.kind === 'iso' && ctx.build.source.communicator.type === 'none',
  async run(ctx) {
    const qemu = need(ctx.state, 'qemu');
    if (!(await qemu.waitForExit(ctx.build.source.install_timeout))) {
      throw new Error(
        `the installer did not finish within ${durationSetting(ctx.build.source.install_timeout)}\n--- last lines of the serial console ---\n${serialTail(ctx.state.serialLog)}`,
      );
    }
    const exit = await qemu.exited;
    if (exit.code !== 0)
      throw new Error(`QEMU exited with ${exit.code ?? exit.signal} during the install: ${exit.stderr}`);
    ctx.state.installing = false;
  },
};
