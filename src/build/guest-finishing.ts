/**
 * What the steps that finish the guest after provisioning share (steps/clean-guest.ts, sbom.ts and
 * compact.ts; a step does not import another): whether the clean-up runs (provision.ts asks too), how
 * long they wait for cloud-init's last stage, and the trim as shell text that can follow the clean-up
 * in its root shell.
 */
import type { BuildContext } from './state.js';
import { need } from './state.js';
import { guestScript, guestScriptVars } from '../util/guest-scripts.js';

/**
 * Whether the clean-up step runs (steps/clean-guest.ts: it needs SSH). The provision step asks too: it
 * leaves the last provisioner's leftovers to the clean-up's root shell only when that shell will run.
 */
export const guestCleanUpRuns = (ctx: Pick<BuildContext, 'build'>): boolean =>
  ctx.build.source.communicator.type === 'ssh';

/** How long the clean-up and the package list wait for cloud-init's last stage (with cloud_init.wait: false it may still run). */
export const cloudInitFinishWaitSeconds = 600;

/**
 * Root shell text defining `cloud_init_final_wait` (src/guest-scripts/cloud-init-final-wait.sh) in the
 * guest, bounded by cloudInitFinishWaitSeconds: for the package list, and for cloud_init.wait where
 * the seed skipped the later stages.
 */
export function cloudInitFinalWaitShell(): string {
  return guestScriptVars({ R: '', WAIT_SECONDS: cloudInitFinishWaitSeconds }) + guestScript('cloud-init-final-wait');
}

const exitMarker = 'kiln-trim-exit=';

/**
 * The trim as root shell text: a sync first (the clean-up deletes without one), `fstrim -a` (busybox's
 * has no -a: the root file system then), a sync after; its output on stdout, its status last as a
 * marker line, so it can follow another script in one shell without deciding that shell's exit.
 */
export const trimShell =
  'sync; if ! command -v fstrim >/dev/null 2>&1; then echo "no fstrim in the guest"; rc=0; ' +
  'else fstrim -av 2>/dev/null || fstrim -v / 2>&1; rc=$?; fi; sync; echo "' +
  exitMarker +
  '$rc"';

/** What a trim printed, split into its status (from the marker) and the rest; undefined without a marker. */
export function trimResult(stdout: string): { exitCode: number; output: string } | undefined {
  const m = new RegExp(`^${exitMarker}(\\d+)$`, 'm').exec(stdout);
  if (!m) return undefined;
  return { exitCode: Number(m[1]), output: stdout.slice(0, m.index) };
}

/** The build overlay's allocated bytes (read shared: QEMU holds it). */
export async function overlayBytes(ctx: BuildContext): Promise<number> {
  const disk = need(ctx.state, 'disk');
  return (await ctx.driver.imageInfo(disk.path, disk.format, true, ctx.signal)).actualSize;
}
