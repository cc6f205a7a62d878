/**
 * Step: pick the accelerator and a free SSH port, start QEMU, connect to QMP. With cache.vm_state and
 * a VM saved with the cached layer, QEMU loads that VM instead of booting (src/build/vm-state.ts).
 */
import { copyFileSync, existsSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { smbiosType1Switch } from '../../template/qemu-args.js';
import { OVMF_CODE, OVMF_VARS, startVm } from '../vm.js';
import { restoreVm } from '../vm-state.js';

/** Test helpers took the free-port helper from here; it lives in qemu/ports.ts. */

export const launchQemuStep: Step = {
  name: 'launch QEMU',
  async run(ctx) {
    const src = ctx.build.source;
    const st = ctx.state;
    ctx.driver.requireQemu();
    const clash = st.seed?.kind === 'http' ? smbiosType1Switch(src.qemu_args) : undefined;
    if (clash) {
      throw new Error(`qemu_args ${clash.join(' ')} sets SMBIOS type 1 fields, where cloud_init delivery http gives the guest its seed URL in a type 1 table of kiln's, and QEMU takes one or the other\n  fix: set cloud_init: { delivery: cdrom }, or drop that -smbios switch`);
    }
    st.accelerator = await ctx.driver.chooseAccelerator(src.accelerator, ctx.options.cacheDir, (m) => ctx.log(m, 'warn'), ctx.signal);
    if (src.firmware === 'uefi') {
      if (!existsSync(OVMF_CODE)) throw new Error(`firmware: uefi needs ${OVMF_CODE}\n  fix: apt-get install ovmf (make setup does it)`);
      copyFileSync(OVMF_VARS, path.join(st.workDir, 'efivars.fd'));
    }
    if (!(await restoreVm(ctx))) await startVm(ctx, true);
    // Whichever QEMU is current when the build ends is the one stopped (a relaunch replaces it).
    return async () => {
      st.qmp?.close();
      await st.qemu?.kill(3000);
    };
  },
};
