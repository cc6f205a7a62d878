/**
 * A Slurm run directory: plan.json (the plan, its builds in array-index order), job.sbatch, submit.sh
 * (the sbatch command lines, for `--emit slurm DIR` users who submit themselves) and tasks/ (each
 * task's events, log and exit code). Written whole or not at all; kiln never writes into a directory
 * that holds anything already.
 */
import {
  mkdirSync,
  readdirSync,
  renameSync,
  rmdirSync,
  rmSync,
  writeFileSync,
  existsSync,
  chmodSync,
  mkdtempSync,
} from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { KilnPlan } from './plan-shape.js';
import { jobScript, submissions, tasksDir, type SlurmJobOptions, type Submission } from './sbatch.js';
import { shellWord } from './matrix.js';
import { KilnError } from '../util/errors.js';

export interface RunDir {
  dir: string;
  script: string;
  submissions: Submission[];
}

export function writeRunDir(plan: KilnPlan, o: SlurmJobOptions & { singleton: boolean; sbatchArgs: string[] }): RunDir {
  const dir = o.runDir;
  // #SBATCH lines are not shell words: sbatch would cut a path at its first space.
  for (const [what, p] of [
    ['the run directory', dir],
    ['the working directory', o.cwd],
  ] as const) {
    if (/\s/.test(p))
      throw new KilnError(
        `${what} ${JSON.stringify(p)} has white space, which #SBATCH --output/--chdir lines cannot hold`,
        { fix: `use a path without spaces (--slurm-dir DIR, or run kiln from another directory)` },
      );
  }
  if (!Number.isInteger(o.throttle) || o.throttle < 1)
    throw new KilnError(`--slurm-throttle ${o.throttle}: must be a whole number of tasks, 1 or more`, {
      fix: `e.g. --slurm-throttle 4`,
    });
  if (existsSync(dir) && readdirSync(dir).length > 0) {
    throw new KilnError(`${dir} is not empty: kiln writes a run directory only into a new or empty one`, {
      fix: `give another directory (or remove that one if it is an old run)`,
    });
  }
  const parent = path.dirname(dir);
  mkdirSync(parent, { recursive: true });
  // Written beside it, then renamed: an interrupted write leaves no half run directory under its name.
  const tmp = mkdtempSync(path.join(parent, `.${path.basename(dir)}.partial-`));
  try {
    const script = path.join(dir, 'job.sbatch');
    const subs = submissions(plan, script, { throttle: o.throttle, singleton: o.singleton, sbatchArgs: o.sbatchArgs });
    mkdirSync(tasksDir(tmp));
    writeFileSync(path.join(tmp, 'plan.json'), JSON.stringify(plan, null, 2) + '\n');
    writeFileSync(path.join(tmp, 'job.sbatch'), jobScript(plan, o), { mode: 0o755 });
    writeFileSync(
      path.join(tmp, 'submit.sh'),
      [
        '#!/bin/sh',
        '# The sbatch command lines kiln build --on slurm runs for this directory (one per line).',
        'set -e',
        ...subs.map((s) => s.argv.map(shellWord).join(' ')),
        '',
      ].join('\n'),
    );
    chmodSync(path.join(tmp, 'submit.sh'), 0o755);
    if (existsSync(dir)) rmdirSync(dir); // empty (checked above): rename needs it gone
    renameSync(tmp, dir);
    return { dir, script, submissions: subs };
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}

/** Job ids, one per submission. A failed sbatch cancels what this run submitted before it. */
export async function submit(subs: Submission[]): Promise<string[]> {
  const ids: string[] = [];
  for (const s of subs) {
    const r = await execa(s.argv[0]!, s.argv.slice(1), { reject: false });
    if (r.exitCode !== 0) {
      if (ids.length) await execa('scancel', ids, { reject: false });
      const cause =
        r.exitCode === undefined || (r as { code?: string }).code === 'ENOENT'
          ? 'sbatch is not installed here'
          : String(r.stderr).trim() || `exit code ${r.exitCode}`;
      throw new KilnError(
        `sbatch failed for ${s.builds.join(', ')}: ${cause}${ids.length ? ` (cancelled jobs ${ids.join(', ')} this run had submitted)` : ''}`,
        { fix: `run kiln on a Slurm submit host (sbatch, squeue on PATH, SLURM_CONF set if the cluster needs it)` },
      );
    }
    ids.push(String(r.stdout).trim().split(';')[0]!);
  }
  return ids;
}

export const cancel = (jobIds: string[]): Promise<unknown> => execa('scancel', jobIds, { reject: false });
