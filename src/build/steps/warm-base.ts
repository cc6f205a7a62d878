/**
 * Step: cache.boot_snapshot. Once the guest of a build that started fresh is ready for provisioning
 * (SSH up, cloud-init done as the build waits for it), its disk is frozen into a layer and its VM saved
 * beside it, the warm base: a later build on the same base and source settings, of this template or
 * another, restores it at launch instead of booting (src/build/vm-state.ts).
 */
import type { Step } from '../step.js';
import { need } from '../state.js';
import { saveWarmBase } from '../vm-state.js';
import { bootSnapshotSetting } from '../saved-vm-rules.js';
import { settleAll } from '../../util/settle.js';

export const warmBaseStep: Step = {
  name: 'save the warm base',
  // Known before the build starts only as "maybe": the layer-cache step decides (warmBase in the plan).
  enabled: (ctx) => bootSnapshotSetting(ctx.build) && ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    // saveWarmBase does nothing unless this build has a warm base to save.
    if (!ctx.state.layers?.warmBase) return;
    // No sync first (it took 3-4 s of a 4.2 s save on the Debian guest under TCG): the frozen disk is
    // only ever used with the RAM saved at the same instant (a restore) or below provisioner 1's layer,
    // which is captured after a sync and so holds whatever the page cache held dirty here.
    const disk = need(ctx.state, 'disk');
    const ssh = need(ctx.state, 'ssh');
    await saveWarmBase(
      ctx,
      async (overlay) => {
        // With cloud_init.wait: false no command has run yet, and the guest sets up its side of the
        // login at the first one (systemd's user manager, ~2 s under TCG): done once here, while the
        // overlay is made, it is in the saved state instead of in every build that restores it.
        await settleAll([
          ctx.driver.createSnapshotOverlay(disk.path, overlay, disk.virtualSize, ctx.signal),
          ssh.commandHasRun ? undefined : ssh.run('true', ctx.signal),
        ]);
      },
      (overlay) => ctx.driver.snapshotActiveDisk(need(ctx.state, 'qmp'), overlay, 'kiln-warm-base'),
    );
  },
};
