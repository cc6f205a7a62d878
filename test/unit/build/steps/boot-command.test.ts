// The boot command step types on the keyboard through the QMP connection the driver made.
import path from 'node:path';
import { writeFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { bootCommandStep } from '../../../../src/build/steps/boot-command.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { planOf } from '../../../helpers/plan.js';

afterAll(removeStepDirs);

async function booted(o: Parameters<typeof stepContext>[0]) {
  const h = stepContext(o);
  h.ctx.state.qemu = h.driver.startVm([], {});
  h.ctx.state.qmp = await h.driver.connectQmp('/qmp.sock', 1000);
  h.ctx.state.serialLog = path.join(h.ctx.state.workDir, 'serial.log');
  writeFileSync(h.ctx.state.serialLog, '');
  return h;
}

describe('type boot command', () => {
  it('sends the keys through QMP send-key, in order', async () => {
    const h = await booted({ source: { boot_command: ['ab<enter>'], boot_wait: '0s', boot_key_interval: '0s' } });
    expect((await runStep(bootCommandStep, h.ctx)).error).toBeUndefined();
    const keys = h.driver.qmps[0]!.commands.filter((c) => c.command === 'send-key').map((c) =>
      (c.args!.keys as { data: string }[]).map((k) => k.data).join('+'),
    );
    expect(keys).toEqual(['a', 'b', 'ret']);
  });

  it('is skipped for an ISO build resumed from a cached (installed) layer', async () => {
    const h = await booted({
      source: { base_image: undefined, iso: '$base', disk_size: '1G', boot_command: ['x'], boot_wait: '0s' },
    });
    h.ctx.state.plan = planOf('resume').plan;
    await runStep(bootCommandStep, h.ctx);
    expect(h.driver.qmps[0]!.commands).toEqual([]);
  });

  it('a QMP failure fails the step', async () => {
    const h = await booted({ source: { boot_command: ['a'], boot_wait: '0s' } });
    h.driver.qmpFailures.set('send-key', new Error('QMP send-key: GenericError: no keyboard'));
    expect((await runStep(bootCommandStep, h.ctx)).error).toMatch(/QMP send-key: GenericError: no keyboard/);
  });
});
