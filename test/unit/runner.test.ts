import { describe, expect, it } from 'vitest';
import { runSteps, BuildInterrupted } from '../../src/build/runner.js';
import type { Step } from '../../src/build/step.js';
import type { BuildContext, OnError } from '../../src/build/state.js';
import { EventBus, type BuildEvent } from '../../src/ui/events.js';

function context(onError: OnError = 'cleanup', signal = new AbortController().signal) {
  const events: BuildEvent[] = [];
  const bus = new EventBus();
  bus.subscribe((e) => events.push(e));
  const ctx = {
    build: { name: 'b' }, options: { onError, force: false, debug: false, cacheDir: '/nonexistent' }, events: bus,
    state: { workDir: '/nonexistent', startedAt: new Date(), artifacts: [], timings: {} }, signal,
    buildValues: () => ({}), log: () => {},
  } as unknown as BuildContext;
  return { ctx, events };
}

function recorder() {
  const log: string[] = [];
  const step = (name: string, fail = false): Step => ({
    name,
    async run() {
      log.push(`run ${name}`);
      if (fail) throw new Error(`${name} broke`);
      return () => { log.push(`cleanup ${name}`); };
    },
  });
  return { log, step };
}

describe('runSteps', () => {
  it('runs steps in order and cleanups in reverse on success', async () => {
    const { log, step } = recorder();
    const { ctx } = context();
    const r = await runSteps([step('a'), step('b'), step('c')], ctx);
    expect(r.ok).toBe(true);
    expect(log).toEqual(['run a', 'run b', 'run c', 'cleanup c', 'cleanup b', 'cleanup a']);
  });
  it('stops at a failing step and cleans up what ran', async () => {
    const { log, step } = recorder();
    const { ctx, events } = context();
    const r = await runSteps([step('a'), step('b', true), step('c')], ctx);
    expect(r).toMatchObject({ ok: false, failedStep: 'b', kept: false });
    expect(log).toEqual(['run a', 'run b', 'cleanup a']);
    expect(events.find((e) => e.type === 'step-error')).toMatchObject({ step: 'b', error: 'b broke' });
  });
  it('keeps everything with on-error=abort', async () => {
    const { log, step } = recorder();
    const { ctx } = context('abort');
    const r = await runSteps([step('a'), step('b', true)], ctx);
    expect(r.kept).toBe(true);
    expect(log).toEqual(['run a', 'run b']);
  });
  it('skips disabled steps', async () => {
    const { log, step } = recorder();
    const { ctx } = context();
    await runSteps([step('a'), { ...step('x'), enabled: () => false }, step('c')], ctx);
    expect(log).not.toContain('run x');
  });
  it('an interrupt ends a blocked step and still runs cleanups', async () => {
    const { log, step } = recorder();
    const controller = new AbortController();
    const { ctx } = context('abort', controller.signal);
    const blocked: Step = { name: 'wait', run: () => new Promise(() => { setTimeout(() => controller.abort(new BuildInterrupted('SIGINT')), 10); }) };
    const r = await runSteps([step('a'), blocked, step('c')], ctx);
    expect(r.ok).toBe(false);
    expect(r.error).toBeInstanceOf(BuildInterrupted);
    expect(r.kept).toBe(false); // an interrupt always cleans up, even with on-error=abort
    expect(log).toEqual(['run a', 'cleanup a']);
  });
  it('a failing cleanup does not stop the others', async () => {
    const log: string[] = [];
    const { ctx, events } = context();
    const steps: Step[] = [
      { name: 'a', run: async () => () => { log.push('cleanup a'); } },
      { name: 'b', run: async () => () => { throw new Error('nope'); } },
    ];
    await runSteps(steps, ctx);
    expect(log).toEqual(['cleanup a']);
    expect(events.find((e) => e.type === 'cleanup' && e.error)).toMatchObject({ step: 'b', error: 'nope' });
  });
});
