/**
 * Step: shut the guest down cleanly: shutdown_command over SSH (or ACPI power-down through QMP when
 * there is none), then wait for QEMU to exit. A guest that will not stop is killed and the build
 * fails: a disk captured from a VM that did not shut down cleanly is not trustworthy.
 */
import type { Step } from '../step.js';
import { need } from '../state.js';
import { parseDuration, formatDuration } from '../../template/units.js';
import { asRoot } from './wait-ssh.js';

export const shutdownStep: Step = {
  name: 'shut down',
  async run(ctx) {
    const st = ctx.state;
    const qemu = need(st, 'qemu');
    const comm = ctx.build.source.communicator;
    const timeoutMs = parseDuration(ctx.build.source.shutdown_timeout);
    const started = performance.now();
    if (comm.type === 'ssh' && st.ssh?.connected) {
      const command = ctx.build.source.shutdown_command ?? asRoot(comm.username, 'poweroff');
      ctx.log(`shutting down: ${command}`, 'debug');
      // The connection usually drops as the guest goes down; that is success here.
      await st.ssh.exec(command, { timeoutMs: 15_000 }).catch(() => undefined);
      st.ssh.close();
    } else {
      await st.qmp?.execute('system_powerdown').catch(() => undefined);
    }
    // Halfway through the timeout, nudge with ACPI in case the command did not take.
    if (!(await qemu.waitForExit(timeoutMs / 2))) {
      ctx.log('guest still running; sending ACPI power-down', 'warn');
      await st.qmp?.execute('system_powerdown').catch(() => undefined);
      if (!(await qemu.waitForExit(timeoutMs / 2))) {
        await qemu.kill(2000);
        throw new Error(`the guest did not power off within ${ctx.build.source.shutdown_timeout}; QEMU was killed and the disk is not captured\n  fix: check shutdown_command, or raise shutdown_timeout`);
      }
    }
    st.timings['shutdown'] = performance.now() - started;
    ctx.log(`guest powered off in ${formatDuration(performance.now() - started)}`, 'debug');
  },
};
