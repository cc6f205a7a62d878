/** The breakpoint provisioner: waits for Enter on the terminal; without one (or disabled) it does nothing. */
import type { ProvisionerContext } from './context.js';
import type { BreakpointProvisioner } from '../template/provisioner-kinds/breakpoint.js';
import { abortable } from '../util/abort.js';

export async function runBreakpoint(
  ctx: ProvisionerContext,
  p: BreakpointProvisioner,
  label: string,
  signal: AbortSignal,
): Promise<void> {
  if (p.disable || !ctx.options.prompt) {
    ctx.log(`${label}: skipped (no terminal or disabled)`, 'debug');
    return;
  }
  // Waiting for a key starts nothing that could run on: it just stops waiting.
  await abortable(ctx.options.prompt(`breakpoint: ${p.note} — press Enter to continue `), signal);
}
