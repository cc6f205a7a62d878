/**
 * What keeps a build's output from replacing what kiln did not write: the claim file and staging
 * directory beside the output directory, and the checks of an existing output directory and of an
 * artifact bound for another directory (used when the output is claimed, and again at its commit).
 */
import { existsSync, lstatSync } from 'node:fs';
import path from 'node:path';
import { outputOwnership, type Ownership } from '../artifacts/manifest.js';
import { KilnError } from '../util/errors.js';

export function claimFileOf(outputDir: string): string {
  return path.join(path.dirname(outputDir), `.${path.basename(outputDir)}.kiln-lock`);
}

export function stagingDirOf(outputDir: string): string {
  return path.join(path.dirname(outputDir), `.${path.basename(outputDir)}.kiln-partial-${process.pid}`);
}

/** The refusal of an output directory holding entries kiln did not write: the first ten, how many, and the fix. */
export function foreignOutputError(outputDir: string, ownership: Ownership, state = 'already exists and'): Error {
  const { foreign, problem } = ownership;
  const shown = foreign.slice(0, 10).join(', ') + (foreign.length > 10 ? `, and ${foreign.length - 10} more` : '');
  return new Error(
    `output directory ${outputDir} ${state} holds ${foreign.length} ${foreign.length === 1 ? 'entry' : 'entries'} kiln did not write${problem ? ` (${problem})` : ''}: ${shown}\n` +
      '  --force replaces only an output directory kiln wrote itself, every entry listed in its manifest.json\n' +
      '  fix: move those out of it (or remove it), or pick another output_directory',
  );
}

/** An output directory that exists already: replaced at the end only with --force, and only if kiln wrote all of it. */
export function checkExistingOutput(outputDir: string, force: boolean): void {
  if (!existsSync(outputDir)) return;
  const ownership = outputOwnership(outputDir);
  if (ownership.foreign.length) throw foreignOutputError(outputDir, ownership);
  if (!force)
    throw new KilnError(`output directory ${outputDir} already exists`, {
      fix: `remove it, pick another output_directory, or run with --force (kiln wrote it: it is replaced once the new build has succeeded)`,
    });
}

/**
 * An artifact bound for another directory (`outputs[].directory`) replaces an existing file of its
 * name only with --force, and never a directory: kiln touches nothing else there.
 */
export function checkElsewhereTarget(target: string, force: boolean): void {
  let st;
  try {
    st = lstatSync(target);
  } catch {
    return;
  }
  if (st.isDirectory())
    throw new KilnError(`${target} is a directory, where kiln would write the artifact ${path.basename(target)}`, {
      fix: `move it away, or give the output another "name" or "directory"`,
    });
  if (!force)
    throw new KilnError(`${target} already exists`, {
      fix: `remove it, or run with --force (which replaces that one file once the build has succeeded)`,
    });
}
