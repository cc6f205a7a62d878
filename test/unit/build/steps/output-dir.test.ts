// The output claim step: claim file and staging directory beside the output, a second claim refused,
// an existing output refused without --force, and its cleanup removing only what it made.
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { outputDirStep } from '../../../../src/build/steps/output-dir.js';
import { claimFileOf, stagingDirOf } from '../../../../src/build/output-guard.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('prepare output directory', () => {
  it('claims the output and makes its staging directory; the cleanup removes both and the parents it made', async () => {
    const h = stepContext();
    const out = h.ctx.build.output_directory!;
    const { error, cleanup } = await runStep(outputDirStep, h.ctx);
    expect(error).toBeUndefined();
    expect(h.ctx.state.stagingDir).toBe(stagingDirOf(out));
    expect(existsSync(claimFileOf(out))).toBe(true);
    expect(existsSync(stagingDirOf(out))).toBe(true);
    await cleanup!();
    expect(existsSync(path.dirname(out))).toBe(false);
  });

  it('a second claim of the same output is refused, naming the holder', async () => {
    const a = stepContext();
    const first = await runStep(outputDirStep, a.ctx);
    const b = stepContext();
    b.ctx.build.output_directory = a.ctx.build.output_directory;
    const { error } = await runStep(outputDirStep, b.ctx);
    expect(error).toBe(
      `output directory ${a.ctx.build.output_directory} is being built by another kiln right now (pid ${process.pid})\n  fix: wait for it to finish, or give this build another output_directory`,
    );
    await first.cleanup!();
  });

  it('an existing output directory kiln did not write is refused with the fix, even with --force, and left as it is', async () => {
    const h = stepContext({ options: { force: true } });
    const out = h.ctx.build.output_directory!;
    mkdirSync(out, { recursive: true });
    writeFileSync(path.join(out, 'notes.txt'), 'mine');
    const { error } = await runStep(outputDirStep, h.ctx);
    expect(error).toMatch(new RegExp(`^output directory ${out} already exists and holds 1 entry kiln did not write`));
    expect(readdirSync(out)).toEqual(['notes.txt']);
    expect(readdirSync(path.dirname(out))).toEqual(['unit']);
  });
});
