/**
 * Step: trim the guest's free space before capture. The disk is attached with discard=unmap and
 * detect-zeroes=unmap, so `fstrim` in the guest punches holes in the qcow2 and artifacts carry only
 * live data. Sizes before and after go to the log and the manifest.
 *
 * The trim itself normally rides on the clean-up's root shell (clean-guest.ts appends trimShell, from
 * guest-finishing.ts, to its script): under TCG each command kiln starts in the guest costs process
 * starts and sudo's (0.5 s quiet, seconds on a busy host). This step then only measures and reports;
 * it runs the trim itself when the clean-up did not carry it.
 */
import type { Step } from '../step.js';
import { sshSession } from '../../provisioners/context.js';
import { formatBytes } from '../../template/units.js';
import { asRoot } from '../../communicator/as-root.js';
import { overlayBytes, trimResult, trimShell } from '../guest-finishing.js';

export const compactStep: Step = {
  name: 'trim free space',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    let trimmed = ctx.state.trimmedWithCleanUp;
    if (!trimmed) {
      const beforeBytes = await overlayBytes(ctx);
      const ssh = await sshSession(ctx);
      let out = '';
      const r = await ssh.exec(asRoot(comm.username, trimShell), {
        stdout: (s) => {
          out += s;
        },
        stderr: (s) => {
          out += s;
        },
        signal: ctx.signal,
      });
      const result = trimResult(out);
      trimmed = { beforeBytes, exitCode: result?.exitCode ?? r.exitCode ?? -1, output: result?.output ?? out };
    }
    if (trimmed.exitCode !== 0)
      ctx.log(
        `fstrim failed in the guest (exit ${trimmed.exitCode}): ${trimmed.output.trim().split('\n').slice(-3).join(' ')}; artifacts may carry freed blocks`,
        'warn',
      );
    const after = await overlayBytes(ctx);
    ctx.state.compaction = { beforeBytes: trimmed.beforeBytes, afterBytes: after };
    ctx.log(
      `trimmed free space (trimmed blocks are left out of every artifact); build overlay ${formatBytes(trimmed.beforeBytes)} -> ${formatBytes(after)}${/no fstrim/.test(trimmed.output) ? ' (the guest has no fstrim)' : ''}`,
    );
  },
};
