import { describe, expect, it } from 'vitest';
import { runSteps, BuildInterrupted } from '../../../src/build/runner.js';
import type { Step } from '../../../src/build/step.js';
import type { BuildContext, OnError } from '../../../src/build/state.js';
import { EventBus, type BuildEvent } from '../../../src/ui/events.js';
import { sshCommand } from '../../../src/build/build.js';

function context(onError: OnError = 'cleanup', signal = new AbortController().signal) {
  const events: BuildEvent[] = [];
  const bus = new EventBus();
  bus.subscribe((e) => events.push(e));
  const ctx = {
    build: { name: 'b' },
    options: { onError, force: false, debug: false, cacheDir: '/nonexistent' },
    events: bus,
    state: { workDir: '/nonexistent', startedAt: new Date(), artifacts: [], timings: {} },
    signal,
    buildValues: () => ({}),
    log: () => {},
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
      return () => {
        log.push(`cleanup ${name}`);
      };
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
  it('asks each step whether it is enabled as it comes: an earlier step can turn later ones off', async () => {
    const { log, step } = recorder();
    const { ctx, events } = context();
    let guestNeeded = true;
    const decides: Step = {
      name: 'decide',
      async run() {
        log.push('run decide');
        guestNeeded = false;
      },
    };
    const r = await runSteps([decides, { ...step('boot'), enabled: () => guestNeeded }, step('convert')], ctx);
    expect(r.ok).toBe(true);
    expect(log).toEqual(['run decide', 'run convert', 'cleanup convert']);
    expect(events.filter((e) => e.type === 'step-start').map((e) => (e as { step: string }).step)).toEqual([
      'decide',
      'convert',
    ]);
  });
  it('an interrupt ends a blocked step and still runs cleanups', async () => {
    const { log, step } = recorder();
    const controller = new AbortController();
    const { ctx } = context('abort', controller.signal);
    const blocked: Step = {
      name: 'wait',
      run: (c) =>
        new Promise((_, reject) => {
          c.signal.addEventListener('abort', () => {
            log.push('wait stopped');
            reject(new Error('stopped'));
          });
          setTimeout(() => controller.abort(new BuildInterrupted('SIGINT')), 10);
        }),
    };
    const r = await runSteps([step('a'), blocked, step('c')], ctx);
    expect(r.ok).toBe(false);
    expect(r.error).toBeInstanceOf(BuildInterrupted);
    expect(r.kept).toBe(false); // an interrupt always cleans up, even with on-error=abort
    expect(log).toEqual(['run a', 'wait stopped', 'cleanup a']);
  });
  it('an interrupted step that finishes anyway is waited for, and its cleanup runs first', async () => {
    const { log, step } = recorder();
    const controller = new AbortController();
    const { ctx, events } = context('cleanup', controller.signal);
    const slow: Step = {
      name: 'slow',
      run: async () => {
        controller.abort(new BuildInterrupted('SIGINT'));
        await new Promise((resolve) => setTimeout(resolve, 50));
        log.push('slow done');
        return () => {
          log.push('cleanup slow');
        };
      },
    };
    const r = await runSteps([step('a'), slow, step('c')], ctx);
    expect(r).toMatchObject({ ok: false, failedStep: 'slow', kept: false });
    expect(log).toEqual(['run a', 'slow done', 'cleanup slow', 'cleanup a']);
    expect(events.filter((e) => e.type === 'cleanup').map((e) => (e as { step: string }).step)).toEqual(['slow', 'a']);
  });
  it('a step that ignores the interrupt gets a grace period, then the cleanups run around it', async () => {
    const { log, step } = recorder();
    const controller = new AbortController();
    const { ctx } = context('cleanup', controller.signal);
    let finish!: () => void;
    const stuck: Step = {
      name: 'stuck',
      run: () =>
        new Promise((resolve) => {
          controller.abort(new BuildInterrupted('SIGTERM'));
          // Ends only once the cleanups took its ground away (as SSH does when QEMU is stopped).
          finish = () => {
            log.push('stuck done');
            resolve(() => {
              log.push('cleanup stuck');
            });
          };
        }),
    };
    const a: Step = {
      name: 'a',
      run: async () => () => {
        log.push('cleanup a');
        finish();
      },
    };
    const r = await runSteps([a, stuck, step('c')], ctx, 50);
    expect(r).toMatchObject({ ok: false, failedStep: 'stuck' });
    expect(log).toEqual(['cleanup a', 'stuck done', 'cleanup stuck']);
  });
  it('an interrupt between steps starts no further step', async () => {
    const { log, step } = recorder();
    const controller = new AbortController();
    const { ctx, events } = context('cleanup', controller.signal);
    const last: Step = {
      name: 'b',
      run: async () => {
        controller.abort(new BuildInterrupted('SIGINT'));
        return () => {
          log.push('cleanup b');
        };
      },
    };
    const r = await runSteps([step('a'), last, step('c')], ctx);
    expect(r.ok).toBe(false);
    expect(log).toEqual(['run a', 'cleanup b', 'cleanup a']);
    expect(events.filter((e) => e.type === 'step-start').map((e) => (e as { step: string }).step)).toEqual(['a', 'b']);
  });
  it('a failing cleanup does not stop the others', async () => {
    const log: string[] = [];
    const { ctx, events } = context();
    const steps: Step[] = [
      {
        name: 'a',
        run: async () => () => {
          log.push('cleanup a');
        },
      },
      {
        name: 'b',
        run: async () => () => {
          throw new Error('nope');
        },
      },
    ];
    await runSteps(steps, ctx);
    expect(log).toEqual(['cleanup a']);
    expect(events.find((e) => e.type === 'cleanup' && e.error)).toMatchObject({ step: 'b', error: 'nope' });
  });
});

describe('runSteps with --on-error=ask', () => {
  function asking(answers: string[]) {
    const { ctx, events } = context('ask');
    const questions: string[] = [];
    ctx.options.prompt = async (q) => {
      questions.push(q);
      return answers.shift() ?? '';
    };
    return { ctx, events, questions };
  }
  /** A step that fails the first `failures` times it runs. */
  function flaky(log: string[], failures: number): Step {
    let runs = 0;
    return {
      name: 'flaky',
      async run() {
        log.push('run flaky');
        if (runs++ < failures) throw new Error('flaky broke');
        return () => {
          log.push('cleanup flaky');
        };
      },
    };
  }

  it('retry runs the failed step again, and the build goes on', async () => {
    const { log, step } = recorder();
    const { ctx, events, questions } = asking(['r']);
    const r = await runSteps([step('a'), flaky(log, 1), step('c')], ctx);
    expect(r.ok).toBe(true);
    expect(log).toEqual(['run a', 'run flaky', 'run flaky', 'run c', 'cleanup c', 'cleanup flaky', 'cleanup a']);
    expect(questions).toHaveLength(1);
    expect(questions[0]).toMatch(/b: step "flaky" failed\. \[r\]etry the step, \[c\]lean up, or \[a\]bort/);
    expect(events.filter((e) => e.type === 'step-error')).toHaveLength(1);
  });
  it('asks again after an answer that is none of the three', async () => {
    const { log, step } = recorder();
    const { ctx, questions } = asking(['', 'x', 'C']);
    const r = await runSteps([step('a'), flaky(log, 1)], ctx);
    expect(questions).toHaveLength(3);
    expect(r).toMatchObject({ ok: false, kept: false, failedStep: 'flaky' });
    expect(log).toEqual(['run a', 'run flaky', 'cleanup a']);
  });
  it('clean up reports the failure once and runs the cleanups', async () => {
    const { log, step } = recorder();
    const { ctx, events } = asking(['c']);
    await runSteps([step('a'), flaky(log, 1)], ctx);
    expect(events.filter((e) => e.type === 'step-error')).toHaveLength(1);
    expect(log).toEqual(['run a', 'run flaky', 'cleanup a']);
  });
  it('abort keeps everything; cleanUp() later runs the skipped cleanups in reverse, once', async () => {
    const { log, step } = recorder();
    const { ctx } = asking(['a']);
    const r = await runSteps([step('a'), step('b'), flaky(log, 1)], ctx);
    expect(r).toMatchObject({ ok: false, kept: true, failedStep: 'flaky' });
    expect(log).toEqual(['run a', 'run b', 'run flaky']);
    await r.cleanUp();
    await r.cleanUp();
    expect(log).toEqual(['run a', 'run b', 'run flaky', 'cleanup b', 'cleanup a']);
  });
  it('an interrupt while the question is open cleans up without asking again', async () => {
    const { log, step } = recorder();
    const controller = new AbortController();
    const { ctx } = context('ask', controller.signal);
    let asked = 0;
    // The CLI's prompt answers "" when the build is interrupted.
    ctx.options.prompt = async () => {
      asked++;
      controller.abort(new BuildInterrupted('SIGINT'));
      return '';
    };
    const r = await runSteps([step('a'), flaky(log, 1)], ctx);
    expect(asked).toBe(1);
    expect(r.kept).toBe(false);
    expect(log).toEqual(['run a', 'run flaky', 'cleanup a']);
  });
});

describe('sshCommand (how to reach a kept VM)', () => {
  it('uses the key and the known_hosts file kiln wrote, checking the host key', () => {
    expect(
      sshCommand({
        username: 'kiln',
        port: 40022,
        keyFile: '/tmp/kiln-x/ssh_key',
        knownHostsFile: '/tmp/kiln-x/known_hosts',
      }),
    ).toBe(
      'ssh -p 40022 -i /tmp/kiln-x/ssh_key -o IdentitiesOnly=yes -o UserKnownHostsFile=/tmp/kiln-x/known_hosts -o StrictHostKeyChecking=yes kiln@127.0.0.1',
    );
  });
  it("without a known host key, says so to ssh rather than writing to the user's known_hosts; quotes paths", () => {
    expect(sshCommand({ username: 'root', port: 2222, keyFile: '/keys/my key' })).toBe(
      "ssh -p 2222 -i '/keys/my key' -o IdentitiesOnly=yes -o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null root@127.0.0.1",
    );
  });
});
