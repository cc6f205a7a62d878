/**
 * Step: trim the guest's free space before capture. The disk is attached with discard=unmap and
 * detect-zeroes=unmap, so `fstrim` in the guest punches holes in the qcow2 and artifacts carry only
 * live data. Sizes before and after go to the log and the manifest.
 */
import type { Step } from '../step.js';
import { need } from '../state.js';
import { sshSession } from '../../provisioners/context.js';
import { formatBytes } from '../../template/units.js';
import { asRoot } from '../../communicator/as-root.js';

export const compactStep: Step = {
  name: 'trim free space',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const disk = need(ctx.state, 'disk');
    const before = (await ctx.driver.imageInfo(disk.path, disk.format, true, ctx.signal)).actualSize;
    const ssh = await sshSession(ctx);
    let out = '';
    // busybox's fstrim has no -a: trim the root file system then.
    const r = await ssh.exec(
      asRoot(
        comm.username,
        'sync; if ! command -v fstrim >/dev/null 2>&1; then echo "no fstrim in the guest"; exit 0; fi; fstrim -av 2>/dev/null || fstrim -v /; rc=$?; sync; exit $rc',
      ),
      {
        stdout: (s) => {
          out += s;
        },
        stderr: (s) => {
          out += s;
        },
        signal: ctx.signal,
      },
    );
    if (r.exitCode !== 0)
      ctx.log(
        `fstrim failed in the guest (exit ${r.exitCode}): ${out.trim().split('\n').slice(-3).join(' ')}; artifacts may carry freed blocks`,
        'warn',
      );
    const after = (await ctx.driver.imageInfo(disk.path, disk.format, true, ctx.signal)).actualSize;
    ctx.state.compaction = { beforeBytes: before, afterBytes: after };
    ctx.log(
      `trimmed free space (trimmed blocks are left out of every artifact); build overlay ${formatBytes(before)} -> ${formatBytes(after)}${/no fstrim/.test(out) ? ' (the guest has no fstrim)' : ''}`,
    );
  },
};
