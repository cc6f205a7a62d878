/**
 * Step: claim the output directory. The build holds a claim file beside it (`.<name>.kiln-lock`, its
 * pid) from here to its end, so a second build of the same output fails at once. An existing output
 * directory is refused without --force, and with it unless kiln wrote every entry in it (its
 * manifest.json lists them): kiln never replaces what it did not write. All this is decided before
 * any disk or VM work. Artifacts are written into a staging directory beside it and renamed into
 * place only when every artifact is done (see commit-output.ts), so a failed build never leaves
 * something that looks finished.
 */
import { existsSync, mkdirSync, rmSync, rmdirSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import { recordBesideOutput, removeStaleStaging } from '../stale.js';
import { describeHolder, lockNow, releaseLock } from '../../cache/lock.js';
import { artifactName } from '../../template/output-formats.js';
import { checkElsewhereTarget, checkExistingOutput, claimFileOf, stagingDirOf } from '../output-guard.js';
import { KilnError } from '../../util/errors.js';

/** Creates `dir` and whichever of its parents are missing; returns those it created, deepest first. */
function makeDirs(dir: string): string[] {
  const created: string[] = [];
  for (let d = dir; !existsSync(d); d = path.dirname(d)) created.push(d);
  mkdirSync(dir, { recursive: true });
  return created;
}

export const outputDirStep: Step = {
  name: 'prepare output directory',
  async run(ctx) {
    const out = ctx.build.output_directory;
    for (const dir of removeStaleStaging(out))
      ctx.log(`removed ${dir}, a partial output left by a kiln process that no longer exists`, 'warn');
    const createdDirs = makeDirs(path.dirname(out));
    const claim = claimFileOf(out);
    const staging = stagingDirOf(out);
    // Recorded before they exist: if kiln is killed from here on, the next kiln build removes both.
    recordBesideOutput(ctx.state.workDir, { staging, claim });
    let claimed = false;
    const undo = () => {
      // Without the claim, the staging directory of this name (this pid's) is not this build's either.
      if (claimed) {
        rmSync(staging, { recursive: true, force: true });
        releaseLock(claim);
      }
      // Only directories this step created, and only while empty: never recursively.
      for (const dir of createdDirs) {
        try {
          rmdirSync(dir);
        } catch {
          break;
        }
      }
    };
    try {
      const attempt = await lockNow(claim);
      claimed = attempt.acquired;
      if (!attempt.acquired) {
        if (attempt.pid !== undefined && !attempt.changingHands)
          throw new KilnError(`output directory ${out} is being built by another kiln right now (pid ${attempt.pid})`, {
            fix: 'wait for it to finish, or give this build another output_directory',
          });
        throw new Error(`output directory ${out} is claimed by ${describeHolder(claim, attempt)}`);
      }
      checkExistingOutput(out, ctx.options.force);
      for (const o of ctx.build.outputs)
        if (o.directory)
          checkElsewhereTarget(path.join(o.directory, artifactName(ctx.build.name, o)), ctx.options.force);
      // One of this pid's, left by an earlier kiln that had the same pid.
      rmSync(staging, { recursive: true, force: true });
      mkdirSync(staging);
    } catch (e) {
      undo();
      throw e;
    }
    ctx.state.stagingDir = staging;
    return undo;
  },
};
