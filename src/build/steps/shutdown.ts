/**
 * Step: shut the guest down cleanly: shutdown_command over SSH (or ACPI power-down through QMP when
 * there is none), then wait for QEMU to exit. A guest that will not stop is killed and the build
 * fails: a disk captured from a VM that did not shut down cleanly is not trustworthy.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Step } from '../step.js';
import { need } from '../state.js';
import { parseDuration, formatDuration } from '../../template/units.js';
import { asRoot } from '../../communicator/as-root.js';

/**
 * How long a shutdown command that exited non-zero gets to show that the guest is going down anyway
 * (its connection drops, QEMU exits): a command killed as the system stops can exit non-zero too.
 */
const goingDownGraceMs = 3000;

export const shutdownStep: Step = {
  name: 'shut down',
  async run(ctx) {
    const st = ctx.state;
    const qemu = need(st, 'qemu');
    const comm = ctx.build.source.communicator;
    const timeoutMs = parseDuration(ctx.build.source.shutdown_timeout);
    const started = performance.now();
    if (comm.type === 'ssh' && st.ssh?.connected) {
      const ssh = st.ssh;
      const command = ctx.build.source.shutdown_command ?? asRoot(comm.username, 'poweroff');
      ctx.log(`shutting down: ${command}`, 'debug');
      let output = '';
      const collect = (s: string) => { output += s; };
      // The connection usually drops as the guest goes down; that is success here, and so is a command
      // that does not return (the wait below tells whether the guest stopped).
      const result = await ssh.exec(command, { timeoutMs: 15_000, stdout: collect, stderr: collect }).catch(() => undefined);
      if (result && result.exitCode !== null && result.exitCode !== 0) {
        await Promise.race([ssh.closed, qemu.exited, sleep(goingDownGraceMs)]);
        if (ssh.connected && !qemu.hasExited) {
          await qemu.kill(2000);
          throw new Error(shutdownCommandFailure(command, ctx.build.source.shutdown_command !== undefined, result.exitCode, output, comm.username));
        }
      }
      ssh.close();
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

/** A shutdown command that failed while the guest kept running: what it said, and a fix for the usual cause. */
export function shutdownCommandFailure(command: string, configured: boolean, exitCode: number, output: string, username: string): string {
  const lines = output.split('\n').map((l) => l.trimEnd()).filter(Boolean).slice(-10);
  const said = lines.length ? `; its last output:\n${lines.map((l) => `  ${l}`).join('\n')}` : ' and printed nothing';
  const which = configured ? `shutdown_command "${command}"` : `the shutdown command "${command}" (kiln's default for "${username}")`;
  // sudo asking for a password is the usual cause: nobody can answer it over kiln's connection.
  const fix = /password is required|terminal is required|sudo: .*password/i.test(output)
    ? `run it through "sudo -n", and give "${username}" passwordless sudo in the image (or through cloud_init user_data)`
    : `${configured ? 'correct shutdown_command' : 'set shutdown_command'}: run as "${username}", it must power the guest off (as root, or through "sudo -n" with passwordless sudo)`;
  return `${which} exited with ${exitCode} and the guest kept running; QEMU was killed and the disk is not captured${said}\n  fix: ${fix}`;
}
