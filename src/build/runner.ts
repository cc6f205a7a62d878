/**
 * Runs a build's steps in order with a cleanup stack (Packer's multistep, typed). Cleanups run in
 * reverse on success, on failure, and when the build is interrupted; a failure the user chose to keep
 * (--on-error=abort, or "abort" at the --on-error=ask prompt) leaves them to RunResult.cleanUp.
 */
import type { Cleanup, Step } from './step.js';
import type { BuildContext } from './state.js';

export class BuildInterrupted extends Error {
  constructor(readonly signalName: string) { super(`interrupted by ${signalName}`); }
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

/** Rejects when the signal aborts, so a step that is blocked somewhere still yields to Ctrl-C. */
function abortable<T>(p: Promise<T>, signal: AbortSignal): Promise<T> {
  if (signal.aborted) return Promise.reject(signal.reason as Error);
  return new Promise<T>((resolve, reject) => {
    const onAbort = () => reject(signal.reason as Error);
    signal.addEventListener('abort', onAbort, { once: true });
    p.then((v) => { signal.removeEventListener('abort', onAbort); resolve(v); },
      (e) => { signal.removeEventListener('abort', onAbort); reject(e as Error); });
  });
}

export async function runSteps(steps: Step[], ctx: BuildContext): Promise<RunResult> {
  const cleanups: { step: string; fn: Cleanup }[] = [];
  const name = ctx.build.name;
  const active = steps.filter((s) => s.enabled?.(ctx) ?? true);
  ctx.events.emit({ type: 'build-start', build: name, steps: active.map((s) => s.name) });

  let result: Omit<RunResult, 'cleanUp'> = { ok: true, kept: false };
  for (let i = 0; i < active.length; i++) {
    const step = active[i]!;
    const started = performance.now();
    ctx.events.emit({ type: 'step-start', build: name, step: step.name, index: i });
    // Set once the user has seen this failure (before the prompt), so it is not reported twice.
    let reported = false;
    try {
      for (;;) {
        try {
          const cleanup = await abortable(step.run(ctx), ctx.signal);
          if (cleanup) cleanups.push({ step: step.name, fn: cleanup });
          break;
        } catch (e) {
          if (ctx.signal.aborted || ctx.options.onError !== 'ask' || !ctx.options.prompt) throw e;
          ctx.events.emit({ type: 'step-error', build: name, step: step.name, index: i, error: (e as Error).message });
          reported = true;
          const answer = await askAfterFailure(ctx, step.name);
          if (answer === 'retry') { reported = false; continue; }
          if (answer === 'abort') (e as Error & { keep?: boolean }).keep = true;
          throw e;
        }
      }
    } catch (e) {
      const error = e as Error & { keep?: boolean };
      if (!ctx.signal.aborted && !reported) ctx.events.emit({ type: 'step-error', build: name, step: step.name, index: i, error: error.message });
      const keep = !ctx.signal.aborted && (ctx.options.onError === 'abort' || error.keep === true);
      result = { ok: false, error, failedStep: step.name, kept: keep };
      break;
    }
    const ms = performance.now() - started;
    ctx.state.timings[step.name] = (ctx.state.timings[step.name] ?? 0) + ms;
    ctx.events.emit({ type: 'step-end', build: name, step: step.name, index: i, ms });
    // The layer cache found this build's finished artifacts in place: the remaining steps have nothing to do.
    if (ctx.state.upToDate) break;
    if (ctx.options.debug && ctx.options.prompt && i < active.length - 1) {
      await ctx.options.prompt(`--debug: step "${step.name}" done; press Enter for "${active[i + 1]!.name}" `);
    }
  }

  if (!result.kept) await runCleanups(cleanups, ctx);
  const pending = result.kept ? cleanups : [];
  return { ...result, cleanUp: () => runCleanups(pending.splice(0), ctx) };
}

/** --on-error=ask: asks until the answer is one of the three (an empty or stray answer asks again). */
async function askAfterFailure(ctx: BuildContext, step: string): Promise<'retry' | 'cleanup' | 'abort'> {
  for (;;) {
    // The CLI's prompt answers "" once the build is interrupted: clean up then, never ask again.
    if (ctx.signal.aborted) return 'cleanup';
    const answer = (await ctx.options.prompt!(`${ctx.build.name}: step "${step}" failed. [r]etry the step, [c]lean up, or [a]bort (keep the VM running to inspect it)? `)).trim().toLowerCase();
    if (answer.startsWith('r')) return 'retry';
    if (answer.startsWith('c')) return 'cleanup';
    if (answer.startsWith('a')) return 'abort';
  }
}

export async function runCleanups(cleanups: { step: string; fn: Cleanup }[], ctx: BuildContext): Promise<void> {
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
