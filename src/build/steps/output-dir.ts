/**
 * Step: claim the output directory. An existing one is refused without --force. Artifacts are written
 * into a staging directory beside it and renamed into place only when every artifact is done (see
 * commit-output.ts), so a failed build never leaves something that looks finished.
 */
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { removeStaleStaging } from '../stale.js';

export const outputDirStep: Step = {
  name: 'prepare output directory',
  async run(ctx) {
    const out = ctx.build.output_directory!;
    for (const dir of removeStaleStaging(out)) ctx.log(`removed ${dir}, a partial output left by a kiln process that no longer exists`, 'warn');
    if (existsSync(out) && !ctx.options.force) {
      throw new Error(`output directory ${out} already exists\n  fix: remove it, pick another output_directory, or run with --force`);
    }
    const staging = path.join(path.dirname(out), `.${path.basename(out)}.kiln-partial-${process.pid}`);
    rmSync(staging, { recursive: true, force: true });
    mkdirSync(staging, { recursive: true });
    ctx.state.stagingDir = staging;
    return () => { rmSync(staging, { recursive: true, force: true }); };
  },
};
