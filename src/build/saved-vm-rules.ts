/**
 * Which builds can save a running VM and load it again as it was (cache.vm_state, cache.boot_snapshot),
 * from the build's settings alone: the layer-cache step decides with them, and `kiln plan` says what a
 * build would restore without starting one.
 */
import type { BuildConfig } from '../template/schema.js';
import { usesUefi } from '../template/schema.js';

/**
 * Why a VM saved by `build` could not be loaded as it was, or undefined: the UEFI variable store and
 * the TPM's state are files outside the VM state, and --record/--offline's guest forwards are sockets.
 */
export function savedVmUnloadable(build: BuildConfig, airgap: boolean): string | undefined {
  const src = build.source;
  if (usesUefi(src.firmware)) return `firmware: ${src.firmware}`;
  if (src.tpm) return 'tpm: true';
  if (airgap) return 'a --record/--offline build';
  return undefined;
}

/** cache.vm_state's setting, the default keeping the VM of the layer before the last provisioner only. */
export const vmStateSetting = (build: BuildConfig): boolean | 'before-last' => build.cache?.vm_state ?? 'before-last';

/** cache.boot_snapshot's setting: on unless set false (whether the build has a warm base is warmBaseUnusable's). */
export const bootSnapshotSetting = (build: BuildConfig): boolean => build.cache?.boot_snapshot !== false;

/**
 * Why cache.boot_snapshot (on unless set false) gives `build` no warm base, or undefined when it does.
 * Only a build that boots a disk image and logs in over SSH has one; then not where a saved VM cannot
 * load again (as for vm_state), where it would break sharing intermediate layers with a remote cache
 * (their chains back onto the base), nor where the seed holds what changes every run (${build.*} in
 * user_data or meta_data: ports, addresses, the build key). `quiet`: off or not applicable, nothing to say.
 */
export function warmBaseUnusable(
  build: BuildConfig,
  o: { airgap: boolean; sharesIntermediate: boolean },
): { why: string; quiet?: boolean } | undefined {
  const src = build.source;
  if (!bootSnapshotSetting(build)) return { why: 'cache.boot_snapshot: false', quiet: true };
  if (!src.base_image || src.communicator.type !== 'ssh')
    return { why: 'a build that does not boot a disk image over SSH', quiet: true };
  const unloadable = savedVmUnloadable(build, o.airgap);
  if (unloadable) return { why: unloadable };
  if (o.sharesIntermediate) return { why: 'a build sharing intermediate layers with a remote cache' };
  const ci = src.cloud_init;
  if (ci !== false && JSON.stringify([ci.user_data, ci.meta_data]).includes('${build.'))
    return { why: 'cloud_init user_data or meta_data using ${build.*} values, which change every run' };
  return undefined;
}
