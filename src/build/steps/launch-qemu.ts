/**
 * Step: pick the accelerator and a free SSH port, start QEMU, connect to QMP. With cache.vm_state and
 * a VM saved with the cached layer, or cache.boot_snapshot and a warm base saved for this base, QEMU
 * loads that VM instead of booting (src/build/vm-state.ts).
 */
import { existsSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { smbiosType1Switch } from '../../template/qemu-args.js';
import { efiVarsFile, firmwareFor, startVm, stopTpm } from '../vm.js';
import { restoreVm, restoreWarmBase } from '../vm-state.js';
import { archOf, archProfile } from '../../qemu/arch.js';
import { variableStoreFor } from '../../qemu/secure-boot.js';
import { KilnError } from '../../util/errors.js';

/** Test helpers took the free-port helper from here; it lives in qemu/ports.ts. */

export const launchQemuStep: Step = {
  name: 'launch QEMU',
  async run(ctx) {
    const src = ctx.build.source;
    const st = ctx.state;
    ctx.driver.requireQemu(archOf(src));
    const clash = st.seed?.kind === 'http' ? smbiosType1Switch(src.qemu_args) : undefined;
    if (clash) {
      throw new KilnError(
        `qemu_args ${clash.join(' ')} sets SMBIOS type 1 fields, where cloud_init delivery http gives the guest its seed URL in a type 1 table of kiln's, and QEMU takes one or the other`,
        { fix: `set cloud_init: { delivery: cdrom }, or drop that -smbios switch` },
      );
    }
    st.accelerator = await ctx.driver.chooseAccelerator(
      src.accelerator,
      ctx.options.cacheDir,
      (m) => ctx.log(m, 'warn'),
      ctx.signal,
      archOf(src),
    );
    const fw = firmwareFor(ctx);
    if (fw) {
      for (const f of [fw.code, fw.varsTemplate]) {
        if (!existsSync(f))
          throw new KilnError(`firmware: ${src.firmware}: ${fw.descriptor} names ${f}, which does not exist`, {
            fix: `apt-get install --reinstall ${archProfile(archOf(src)).firmwarePackage} (make setup installs it), or point firmware: at a descriptor whose files exist`,
          });
      }
      const keys = src.secure_boot?.keys;
      if (keys && !fw.secureBoot) {
        throw new KilnError(
          `secure_boot.keys: firmware: ${src.firmware} (${path.basename(fw.descriptor)}) has Secure Boot off, so the keys would not be checked`,
          { fix: `set firmware: uefi-secure, or a descriptor with the secure-boot feature` },
        );
      }
      // The VM's own copy of the store, with the template's keys enrolled (PK, KEK, db; dbx kept).
      writeFileSync(efiVarsFile(st.workDir), variableStoreFor(fw.varsTemplate, keys));
      ctx.log(
        `firmware: ${fw.description || fw.descriptor} (${path.basename(fw.descriptor)}; machine ${fw.machine}${fw.smm ? ' with SMM' : ''}${keys ? '; Secure Boot keys from secure_boot.keys' : ''})`,
      );
    }
    let tpmStopped = false;
    const stopVm = async () => {
      st.qmp?.close();
      await st.qemu?.kill(3000);
      if (!tpmStopped) {
        tpmStopped = true;
        await stopTpm(ctx);
      }
    };
    try {
      if (!(await restoreVm(ctx)) && !(await restoreWarmBase(ctx))) await startVm(ctx, true);
    } catch (e) {
      await stopTpm(ctx);
      throw e;
    }
    // Whichever QEMU is current when the build ends is the one stopped (a relaunch replaces it); its swtpm with it.
    return stopVm;
  },
};
