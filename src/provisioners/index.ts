/** Runs one provisioner with its common options: only/except, pause_before, timeout, max_retries. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProvisionerContext } from './context.js';
import {
  kindOf,
  type Provisioner,
  type ProvisionerOf,
  type ProvisionerType,
} from '../template/provisioner-kinds/index.js';
import { runShell } from './shell.js';
import { runFile } from './file.js';
import { runShellLocal } from './shell-local.js';
import { runBreakpoint } from './breakpoint.js';
import { runAnsible } from './ansible.js';
import { runAnsibleLocal } from './ansible-local.js';
import { runPuppetMasterless } from './puppet-masterless.js';
import { VmLostError, watchVm } from './vm-watch.js';

// What a provisioner is and whether it applies are template facts (the layer cache's keys need them
// too); re-exported for the build steps.
export { appliesTo, describeProvisioner } from '../template/provisioner-kinds/index.js';

/** What one kind does when it runs: `signal` fires on an interrupt or at the provisioner's timeout. */
type Run<P> = (ctx: ProvisionerContext, p: P, label: string, signal: AbortSignal) => Promise<void>;

/** One runner per kind of src/template/provisioner-kinds/ (the compiler holds the two lists together). */
export const runners: { [T in ProvisionerType]: Run<ProvisionerOf<T>> } = {
  shell: runShell,
  file: runFile,
  'shell-local': runShellLocal,
  breakpoint: runBreakpoint,
  ansible: runAnsible,
  'ansible-local': runAnsibleLocal,
  'puppet-masterless': runPuppetMasterless,
};

function runOnce(ctx: ProvisionerContext, p: Provisioner, label: string, signal: AbortSignal): Promise<void> {
  return (runners[p.type] as Run<Provisioner>)(ctx, p, label, signal);
}

export async function runProvisioner(ctx: ProvisionerContext, p: Provisioner, index: number): Promise<void> {
  const label = `provisioner ${index + 1}`;
  if (p.pause_before) await sleep(p.pause_before, undefined, { signal: ctx.signal });
  for (let attempt = 0; ; attempt++) {
    const vm = watchVm(ctx, label, kindOf(p).expectsDisconnect?.(p) ?? false);
    try {
      await vm.during(withTimeout(ctx.signal, p.timeout, label, (signal) => runOnce(ctx, p, label, signal)));
      return;
    } catch (e) {
      const error = await vm.explain(e as Error);
      // Retrying on a VM that is gone cannot help.
      if (error instanceof VmLostError || attempt >= p.max_retries || ctx.signal.aborted) throw error;
      ctx.log(`${label} failed (${error.message}); retry ${attempt + 1} of ${p.max_retries}`, 'warn');
    } finally {
      vm.stop();
    }
  }
}

/**
 * Runs `work` with a signal that also fires at the timeout. The work stops on it (a remote command is
 * killed in the guest) and has ended when this rejects, so a retry never runs beside the attempt
 * before it.
 */
async function withTimeout<T>(
  interrupt: AbortSignal,
  timeoutMs: number | undefined,
  label: string,
  work: (signal: AbortSignal) => Promise<T>,
): Promise<T> {
  if (timeoutMs === undefined) return work(interrupt);
  const timedOut = new AbortController();
  const timer = setTimeout(
    () => timedOut.abort(new Error(`${label} timed out after ${shortDuration(timeoutMs)}`)),
    timeoutMs,
  );
  try {
    return await work(AbortSignal.any([interrupt, timedOut.signal]));
  } finally {
    clearTimeout(timer);
  }
}

/** A timeout as a template writes it: "5m", "20s", "1500ms". */
function shortDuration(ms: number): string {
  if (ms >= 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  return ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}
