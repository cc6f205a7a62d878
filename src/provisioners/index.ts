/** Runs one provisioner with its common options: only/except, pause_before, timeout, max_retries. */
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProvisionerContext } from './context.js';
import type { Provisioner } from '../template/schema.js';
import { parseDuration } from '../template/units.js';
import { runShell } from './shell.js';
import { runFile } from './file.js';
import { runShellLocal } from './shell-local.js';
import { runAnsible } from './ansible.js';
import { runAnsibleLocal } from './ansible-local.js';
import { runPuppetMasterless } from './puppet-masterless.js';
import { VmLostError, watchVm } from './vm-watch.js';
import { abortable } from '../util/abort.js';

// What a provisioner is and whether it applies are template facts (the layer cache's keys need them
// too); re-exported for the build steps.
export { appliesTo, describeProvisioner } from '../template/provisioners.js';

async function runOnce(ctx: ProvisionerContext, p: Provisioner, label: string, signal: AbortSignal): Promise<void> {
  switch (p.type) {
    case 'shell': return runShell(ctx, p, label, signal);
    case 'file': return runFile(ctx, p, label, signal);
    case 'shell-local': return runShellLocal(ctx, p, label, signal);
    case 'ansible': return runAnsible(ctx, p, label, signal);
    case 'ansible-local': return runAnsibleLocal(ctx, p, label, signal);
    case 'puppet-masterless': return runPuppetMasterless(ctx, p, label, signal);
    case 'breakpoint':
      if (p.disable || !ctx.options.prompt) { ctx.log(`${label}: skipped (no terminal or disabled)`, 'debug'); return; }
      // Waiting for a key starts nothing that could run on: it just stops waiting.
      await abortable(ctx.options.prompt(`breakpoint: ${p.note} — press Enter to continue `), signal);
  }
}

export async function runProvisioner(ctx: ProvisionerContext, p: Provisioner, index: number): Promise<void> {
  const label = `provisioner ${index + 1}`;
  if (p.pause_before) await sleep(parseDuration(p.pause_before), undefined, { signal: ctx.signal });
  for (let attempt = 0; ; attempt++) {
    const vm = watchVm(ctx, label, p.type === 'shell' && p.expect_disconnect);
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
async function withTimeout<T>(interrupt: AbortSignal, timeout: string | number | undefined, label: string, work: (signal: AbortSignal) => Promise<T>): Promise<T> {
  if (timeout === undefined) return work(interrupt);
  const timedOut = new AbortController();
  const timer = setTimeout(() => timedOut.abort(new Error(`${label} timed out after ${timeout}`)), parseDuration(timeout));
  try {
    return await work(AbortSignal.any([interrupt, timedOut.signal]));
  } finally {
    clearTimeout(timer);
  }
}
