/**
 * Step: shut the guest down cleanly: shutdown_command over SSH (or ACPI power-down through QMP when
 * there is none), then wait for QEMU to exit. A guest that will not stop is killed and the build
 * fails: a disk captured from a VM that did not shut down cleanly is not trustworthy.
 */
import path from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { convertsFromCache, guestReadsDone, need } from '../state.js';
import { queueLayerSave } from '../layer-capture.js';
import { durationSetting, formatDuration } from '../../template/units.js';
import { asRoot } from '../../communicator/as-root.js';
import { KilnError } from '../../util/errors.js';

/**
 * How long a shutdown command that exited non-zero gets to show that the guest is going down anyway
 * (its connection drops, QEMU exits): a command killed as the system stops can exit non-zero too.
 */
const goingDownGraceMs = 3000;

/**
 * `poweroff` for the clean-up's root shell, by its path first: that shell is the image's `sh`, and a
 * busybox ash runs its own applet for a bare `poweroff` (a signal to init that systemd does not take as one).
 */
export const rootShellPoweroff =
  'for p in /sbin/poweroff /usr/sbin/poweroff /bin/poweroff /usr/bin/poweroff; do [ -x "$p" ] && exec "$p"; done; exec poweroff';

export const shutdownStep: Step = {
  name: 'shut down',
  async run(ctx) {
    const st = ctx.state;
    const qemu = need(st, 'qemu');
    const comm = ctx.build.source.communicator;
    const timeoutMs = ctx.build.source.shutdown_timeout;
    await guestReadsDone(st);
    const started = performance.now();
    if (comm.type === 'ssh' && st.ssh?.connected) {
      const ssh = st.ssh;
      // The clean-up's root shell, left open for this when there is no shutdown_command (clean-guest.ts):
      // no new session or sudo in the guest.
      const rootShell = ctx.build.source.shutdown_command === undefined ? st.rootShell : undefined;
      st.rootShell = undefined;
      const command = ctx.build.source.shutdown_command ?? (rootShell ? 'poweroff' : asRoot(comm.username, 'poweroff'));
      ctx.log(`shutting down: ${command}${rootShell ? " (in the clean-up's root shell)" : ''}`, 'debug');
      let output = '';
      const collect = (s: string) => {
        output += s;
      };
      // The connection usually drops as the guest goes down; that is success here, and so is a command
      // that does not return (the wait below tells whether the guest stopped).
      let result;
      if (rootShell) {
        rootShell.finish(rootShellPoweroff);
        // Its status, or the guest gone (the connection drops, QEMU exits), or 15 s as for a command.
        result = await Promise.race([
          rootShell.ended,
          ssh.closed.then(() => undefined),
          qemu.exited.then(() => undefined),
          sleep(15_000, undefined, { ref: false }),
        ]);
        output = rootShell.output();
      } else {
        result = await ssh
          .exec(command, { timeoutMs: 15_000, stdout: collect, stderr: collect })
          .catch(() => undefined);
      }
      if (result && result.exitCode !== null && result.exitCode !== 0) {
        await Promise.race([ssh.closed, qemu.exited, sleep(goingDownGraceMs)]);
        if (ssh.connected && !qemu.hasExited) {
          await qemu.kill(2000);
          throw new Error(
            shutdownCommandFailure(
              command,
              ctx.build.source.shutdown_command !== undefined,
              result.exitCode,
              output,
              comm.username,
            ),
          );
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
        throw new KilnError(
          `the guest did not power off within ${durationSetting(ctx.build.source.shutdown_timeout)}; QEMU was killed and the disk is not captured`,
          { fix: `check shutdown_command, or raise shutdown_timeout` },
        );
      }
    }
    st.timings['shutdown'] = performance.now() - started;
    ctx.log(`guest powered off in ${formatDuration(performance.now() - started)}`, 'debug');
    await saveFinalDisk(ctx);
  },
};

/**
 * With the layer cache, the finished disk (cleaned, listed, trimmed, shut down) goes into the store
 * as the build's final layer, in the background: a later build with the same provisioners that only
 * wants other outputs, post-processors or another output directory converts from it without booting.
 * What the finishing steps found (package list, trim sizes) is kept with it for that build's manifest.
 */
async function saveFinalDisk(ctx: BuildContext): Promise<void> {
  const layers = ctx.state.layers;
  if (!layers?.finalKey || convertsFromCache(ctx)) return;
  const disk = need(ctx.state, 'disk');
  const last = layers.plan.at(-1)?.key;
  queueLayerSave(ctx, {
    key: layers.finalKey,
    frozen: disk.path,
    index: -1,
    what: 'the final disk',
    backing: last ? { name: `${last}.qcow2`, format: 'qcow2' } : layers.rootBacking,
    meta: {
      parent: last ?? layers.rootParent ?? null,
      build: ctx.build.name,
      template: ctx.template.file,
      provisioner: 0,
      description: 'final disk (clean-up, package list, trim)',
      final: { sbom: ctx.state.sbom, compaction: ctx.state.compaction, accelerator: ctx.state.accelerator },
    },
  });
  // The conversion may grow its input (a VHD is a whole number of MiB): never the file being copied.
  if (ctx.build.outputs.some((o) => o.format === 'vhd')) {
    const top = path.join(ctx.state.workDir, 'disk-output.qcow2');
    await ctx.driver.createOverlay(disk.path, disk.format, top, undefined, ctx.signal);
    ctx.state.disk = { ...disk, path: top };
  }
}

/** A shutdown command that failed while the guest kept running: what it said, and a fix for the usual cause. */
export function shutdownCommandFailure(
  command: string,
  configured: boolean,
  exitCode: number,
  output: string,
  username: string,
): string {
  const lines = output
    .split('\n')
    .map((l) => l.trimEnd())
    .filter(Boolean)
    .slice(-10);
  const said = lines.length ? `; its last output:\n${lines.map((l) => `  ${l}`).join('\n')}` : ' and printed nothing';
  const which = configured
    ? `shutdown_command "${command}"`
    : `the shutdown command "${command}" (kiln's default for "${username}")`;
  // sudo asking for a password is the usual cause: nobody can answer it over kiln's connection.
  const fix = /password is required|terminal is required|sudo: .*password/i.test(output)
    ? `run it through "sudo -n", and give "${username}" passwordless sudo in the image (or through cloud_init user_data)`
    : `${configured ? 'correct shutdown_command' : 'set shutdown_command'}: run as "${username}", it must power the guest off (as root, or through "sudo -n" with passwordless sudo)`;
  return `${which} exited with ${exitCode} and the guest kept running; QEMU was killed and the disk is not captured${said}\n  fix: ${fix}`;
}
