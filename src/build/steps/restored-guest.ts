/**
 * Step: a guest restored from a saved VM state (cache.vm_state, or a warm base: cache.boot_snapshot)
 * first gets the host's time (its clock stood still while the state was stored), fresh randomness and
 * a new boot ID, before any provisioner runs.
 */
import { randomBytes, randomUUID } from 'node:crypto';
import type { Step } from '../step.js';
import { need } from '../state.js';
import { asRoot } from '../../communicator/as-root.js';
import { restoredGuestScript } from '../vm-state.js';
import { bootSnapshotSetting, vmStateSetting } from '../saved-vm-rules.js';
import { KilnError } from '../../util/errors.js';

export const restoredGuestStep: Step = {
  name: 'set the restored guest clock',
  // Known before the build starts only as "maybe": run() does nothing unless launch restored a VM.
  enabled: (ctx) =>
    (vmStateSetting(ctx.build) !== false || bootSnapshotSetting(ctx.build)) &&
    ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    if (!ctx.state.restoredVm) return;
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const before = Math.round(Date.now() / 1000);
    let out = '';
    const r = await need(ctx.state, 'ssh').exec(
      asRoot(comm.username, restoredGuestScript(before, randomBytes(64).toString('hex'), randomUUID())),
      {
        stdout: (s) => {
          out += s;
        },
        stderr: (s) => {
          out += s;
        },
      },
    );
    if (r.exitCode !== 0)
      throw new KilnError(`could not set the restored guest's clock (exit ${r.exitCode}): ${out.trim()}`, {
        fix: `the SSH user needs root or passwordless sudo for date(1); or set cache: { vm_state: false, boot_snapshot: false }`,
      });
    ctx.log(
      `restored guest: clock set to the host's, random pool ${/reseeded/.test(out) ? 'reseeded' : 'mixed with host randomness (no perl/python3 in the guest to force a reseed)'}, ${/new-boot-id/.test(out) ? 'a new boot ID' : 'the boot ID of the saved guest (no /run or no mount in the guest)'}`,
      'debug',
    );
  },
};
