/**
 * Runs a build's steps in order with a cleanup stack (Packer's multistep, typed). Cleanups run in
 * reverse on success, on failure, and when the build is interrupted; a failure the user chose to keep
 * (--on-error=abort, or "abort" at the --on-error=ask prompt) leaves them to RunResult.cleanUp.
 */
import type { Cleanup, Step } from './step.js';
import type { BuildContext } from './state.js';
import { abortable } from '../util/abort.js';

export class BuildInterrupted extends Error {
  constructor(readonly signalName: string) {
    super(`interrupted by ${signalName}`);
  }
}

export interface RunResult {
  ok: boolean;
  error?: Error;
  failedStep?: string;
  /** The build failed and --on-error=abort (or the answer "abort") kept everything: cleanups have not run. */
  kept: boolean;
  /** Runs the cleanups a kept build skipped, once the user is done with it; a no-op otherwise. */
  cleanUp: () => Promise<void>;
}

/**
 * How long an interrupted step gets to stop: steps honour ctx.signal (their child processes are
 * cancelled, their waits end), so this bounds only a step that does not.
 */
const defaultInterruptGraceMs = 20_000;

/** Kept here for the steps that import it from the runner; it lives in util/abort.ts. */
export { abortable };

/** How `p` settled, or undefined if it has not within `ms`. */
async function settledWithin<T>(p: Promise<T>, ms: number): Promise<PromiseSettledResult<T> | undefined> {
  let timer: NodeJS.Timeout | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  const settled = p.then(
    (value): PromiseSettledResult<T> => ({ status: 'fulfilled', value }),
    (reason: unknown): PromiseSettledResult<T> => ({ status: 'rejected', reason }),
  );
  try {
    return await Promise.race([settled, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

type CleanupEntry = { step: string; fn: Cleanup };

/**
 * The step that was running when the build was interrupted. Abandoning it would let it go on after
 * the cleanups (a qemu-img writing on, a QEMU started into a removed work directory), so it is waited
 * for; whatever it leaves to undo, it leaves like a finished step.
 */
async function stopInterruptedStep(
  running: Promise<Cleanup | void>,
  step: string,
  cleanups: CleanupEntry[],
  ctx: BuildContext,
  graceMs: number,
): Promise<boolean> {
  const settled = await settledWithin(running, graceMs);
  if (!settled) {
    ctx.log(`step "${step}" did not stop within ${graceMs / 1000} s of the interrupt; cleaning up around it`, 'warn');
    return false;
  }
  if (settled.status === 'fulfilled' && settled.value) cleanups.push({ step, fn: settled.value });
  return true;
}

/**
 * A build's steps: a list, or a choice made again after each step from what the steps found so far
 * (build.ts chooses from the layer cache's plan). The steps already run stay as they were; the rest
 * is taken from the new choice, after the step that just ran.
 */
export type StepSource = Step[] | ((ctx: BuildContext) => Step[]);

export async function runSteps(
  steps: StepSource,
  ctx: BuildContext,
  interruptGraceMs = defaultInterruptGraceMs,
): Promise<RunResult> {
  const cleanups: CleanupEntry[] = [];
  const name = ctx.build.name;
  const choose = typeof steps === 'function' ? steps : () => steps;
  let active = choose(ctx).filter((s) => s.enabled?.(ctx) ?? true);
  ctx.events.emit({ type: 'build-start', build: name, steps: active.map((s) => s.name) });

  let result: Omit<RunResult, 'cleanUp'> = { ok: true, kept: false };
  // A step still running after the interrupt's grace period: waited for again once the cleanups
  // (stopping QEMU, closing servers) have pulled the ground from under it.
  let straggler: { step: string; running: Promise<Cleanup | void> } | undefined;
  for (let i = 0; i < active.length; i++) {
    const step = active[i]!;
    // Interrupted between two steps: the next one does not start.
    if (ctx.signal.aborted) {
      result = { ok: false, error: ctx.signal.reason as Error, kept: false };
      break;
    }
    // Asked again as each step comes: an earlier step may have made it pointless.
    if (step.enabled && !step.enabled(ctx)) continue;
    const started = performance.now();
    ctx.events.emit({ type: 'step-start', build: name, step: step.name, index: i });
    // Set once the user has seen this failure (before the prompt), so it is not reported twice.
    let reported = false;
    let running: Promise<Cleanup | void> | undefined;
    try {
      for (;;) {
        try {
          running = step.run(ctx);
          const cleanup = await abortable(running, ctx.signal);
          if (cleanup) cleanups.push({ step: step.name, fn: cleanup });
          break;
        } catch (e) {
          if (ctx.signal.aborted || ctx.options.onError !== 'ask' || !ctx.options.prompt) throw e;
          ctx.events.emit({ type: 'step-error', build: name, step: step.name, index: i, error: (e as Error).message });
          reported = true;
          const answer = await askAfterFailure(ctx, step.name);
          if (answer === 'retry') {
            reported = false;
            continue;
          }
          if (answer === 'abort') (e as Error & { keep?: boolean }).keep = true;
          throw e;
        }
      }
    } catch (e) {
      const error = e as Error & { keep?: boolean };
      if (
        ctx.signal.aborted &&
        running &&
        !(await stopInterruptedStep(running, step.name, cleanups, ctx, interruptGraceMs))
      )
        straggler = { step: step.name, running };
      if (!ctx.signal.aborted && !reported)
        ctx.events.emit({ type: 'step-error', build: name, step: step.name, index: i, error: error.message });
      const keep = !ctx.signal.aborted && (ctx.options.onError === 'abort' || error.keep === true);
      result = {
        ok: false,
        error: ctx.signal.aborted ? (ctx.signal.reason as Error) : error,
        failedStep: step.name,
        kept: keep,
      };
      break;
    }
    const ms = performance.now() - started;
    ctx.state.timings[step.name] = (ctx.state.timings[step.name] ?? 0) + ms;
    ctx.events.emit({ type: 'step-end', build: name, step: step.name, index: i, ms });
    if (typeof steps === 'function') {
      const chosen = steps(ctx);
      const at = chosen.indexOf(step);
      if (at >= 0) active = [...active.slice(0, i + 1), ...chosen.slice(at + 1)];
    }
    if (ctx.options.debug && ctx.options.prompt && i < active.length - 1) {
      await ctx.options.prompt(`--debug: step "${step.name}" done; press Enter for "${active[i + 1]!.name}" `);
    }
  }

  if (!result.kept) await runCleanups(cleanups, ctx);
  if (straggler) {
    const late: CleanupEntry[] = [];
    if (await stopInterruptedStep(straggler.running, straggler.step, late, ctx, interruptGraceMs))
      await runCleanups(late, ctx);
  }
  const pending = result.kept ? cleanups : [];
  return { ...result, cleanUp: () => runCleanups(pending.splice(0), ctx) };
}

/** --on-error=ask: asks until the answer is one of the three (an empty or stray answer asks again). */
async function askAfterFailure(ctx: BuildContext, step: string): Promise<'retry' | 'cleanup' | 'abort'> {
  for (;;) {
    // The CLI's prompt answers "" once the build is interrupted: clean up then, never ask again.
    if (ctx.signal.aborted) return 'cleanup';
    const answer = (
      await ctx.options.prompt!(
        `${ctx.build.name}: step "${step}" failed. [r]etry the step, [c]lean up, or [a]bort (keep the VM running to inspect it)? `,
      )
    )
      .trim()
      .toLowerCase();
    if (answer.startsWith('r')) return 'retry';
    if (answer.startsWith('c')) return 'cleanup';
    if (answer.startsWith('a')) return 'abort';
  }
}

export async function runCleanups(cleanups: CleanupEntry[], ctx: BuildContext): Promise<void> {
  for (const { step, fn } of cleanups.reverse()) {
    try {
      await fn();
      ctx.events.emit({ type: 'cleanup', build: ctx.build.name, step });
    } catch (e) {
      // One failed cleanup must not stop the others: a QEMU left running is worse than a log line.
      ctx.events.emit({ type: 'cleanup', build: ctx.build.name, step, error: (e as Error).message });
    }
  }
}
