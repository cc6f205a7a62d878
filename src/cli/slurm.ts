/**
 * `kiln build --on slurm` and `--emit slurm DIR`: the selected builds as one Slurm array job (one task
 * per build, each a `kiln build --only NAME` on a node), written into a shared run directory, submitted
 * and followed there (src/scale/). The submitter's environment never reaches the jobs (--export=NONE);
 * nodes read their own settings and credentials from a node-local file.
 */
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import type { LoadedTemplate } from '../index.js';
import type { BuildConfig } from '../template/schema.js';
import type { RemoteLookup } from '../build/build.js';
import type { EventSink } from '../ui/events.js';
import { makePlan } from '../scale/plan.js';
import { CREDENTIAL_VARIABLES, DEFAULT_NODE_ENV, EXPORTED_VARIABLES } from '../scale/sbatch.js';
import { cancel, submit, writeRunDir } from '../scale/run-dir.js';
import { followRun, summaryLine, worstCode } from '../scale/follow.js';
import { cacheDirFromEnv } from './env.js';
import { listOf } from './flag-lists.js';
import { KilnError } from '../util/errors.js';

export interface SlurmArgs {
  on?: 'slurm';
  emit?: string;
  'slurm-dir'?: string;
  'slurm-throttle': number;
  'slurm-singleton': boolean;
  'slurm-node-env': string;
  'sbatch-arg'?: string | string[];
  var?: string | string[];
  'var-file'?: string | string[];
  force: boolean;
  cache: boolean;
  'cache-remote'?: string;
  'cache-remote-readonly'?: boolean;
  'cache-remote-intermediate'?: boolean;
  /** A path: the file must exist on every node (the secret itself never goes into the job). */
  'cache-remote-secret-file'?: string;
}

/** `kiln build` arguments each task gets: never a sensitive value (the job script is kept by slurmctld). */
export function taskBuildArgs(a: SlurmArgs, t: Pick<LoadedTemplate, 'variables'>): string[] {
  const args: string[] = [];
  for (const v of listOf(a.var)) {
    const value = v.slice(v.indexOf('=') + 1);
    if (t.variables.secrets.includes(value)) {
      throw new KilnError(
        `--var ${v.slice(0, v.indexOf('='))}=... sets a sensitive variable: it would be written into the job script, which slurmctld keeps in its state directory`,
        {
          fix: `put it in a --var-file that exists on every node (or KILN_VAR_ in the node env file, ${a['slurm-node-env']})`,
        },
      );
    }
    args.push('--var', v);
  }
  for (const f of listOf(a['var-file'])) args.push('--var-file', path.resolve(f));
  if (a.force) args.push('--force');
  if (!a.cache) args.push('--no-cache');
  if (a['cache-remote']) args.push('--cache-remote', a['cache-remote']);
  if (a['cache-remote-readonly']) args.push('--cache-remote-readonly');
  if (a['cache-remote-intermediate']) args.push('--cache-remote-intermediate');
  if (a['cache-remote-secret-file'])
    args.push('--cache-remote-secret-file', path.resolve(a['cache-remote-secret-file']));
  return args;
}

/** The submitter's settings the tasks get: PATH and those of EXPORTED_VARIABLES that are set; notes for what is left out. */
function exportedEnv(env: NodeJS.ProcessEnv, note: (s: string) => void): Record<string, string> {
  const out: Record<string, string> = { PATH: env.PATH ?? '/usr/local/bin:/usr/bin:/bin' };
  for (const k of EXPORTED_VARIABLES) if (env[k]) out[k] = env[k]!;
  const creds = CREDENTIAL_VARIABLES.filter((k) => env[k]);
  if (creds.length)
    note(
      `${creds.join(', ')} in this environment are not passed to the Slurm jobs (--export=NONE keeps them out of slurmctld's state): each node reads its credentials from its own file (AWS_SHARED_CREDENTIALS_FILE or a profile, set in the node env file)`,
    );
  const vars = Object.keys(env).filter((k) => k.startsWith('KILN_VAR_'));
  if (vars.length)
    note(`${vars.join(', ')} are not passed to the Slurm jobs: use --var-file, or set them in the node env file`);
  return out;
}

const stamp = () => new Date().toISOString().replace(/[-:]/g, '').replace(/\..*/, '').replace('T', '-');

export async function slurmCommand(
  a: SlurmArgs,
  t: LoadedTemplate,
  builds: BuildConfig[],
  o: { remote?: RemoteLookup; render: EventSink; signal: AbortSignal },
): Promise<number> {
  if (a.emit !== undefined && a.on !== undefined)
    throw new Error('--emit slurm DIR writes the files without submitting; --on slurm submits: give one of them');
  if (!builds.length) throw new Error('no build selected');
  const note = (s: string) => process.stderr.write(`kiln: ${s}\n`);
  const plan = await makePlan(t.file, builds, {
    cacheDir: cacheDirFromEnv(),
    remote: o.remote,
    cacheRemote: a['cache-remote'],
    remoteIntermediate: a['cache-remote-intermediate'] === true,
  });
  if (!a['cache-remote'])
    note('no --cache-remote: each node builds from its own cache only (nothing is shared between nodes)');
  const runDir = path.resolve(a.emit ?? a['slurm-dir'] ?? `kiln-slurm-${stamp()}`);
  const kilnBin = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../../bin/kiln.js');
  const run = writeRunDir(plan, {
    runDir,
    template: t.file,
    cwd: process.cwd(),
    node: process.execPath,
    kiln: kilnBin,
    throttle: a['slurm-throttle'],
    env: exportedEnv(process.env, note),
    nodeEnv: a['slurm-node-env'] ?? DEFAULT_NODE_ENV,
    buildArgs: taskBuildArgs(a, t),
    singleton: a['slurm-singleton'],
    sbatchArgs: listOf(a['sbatch-arg']),
  });
  if (a.emit !== undefined) {
    process.stderr.write(
      `wrote ${run.dir}: plan.json, job.sbatch, submit.sh (run it to submit; tasks/ gets each build's events, log and exit code)\n`,
    );
    return 0;
  }
  const jobIds = await submit(run.submissions);
  process.stderr.write(
    `submitted Slurm job${jobIds.length === 1 ? '' : 's'} ${jobIds.join(', ')} (${builds.length} build${builds.length === 1 ? '' : 's'}); run directory ${run.dir}\n`,
  );
  // Ctrl-C / SIGTERM here cancels the jobs: each task's kiln gets SIGTERM and cleans up; we follow until they are gone.
  const onAbort = () => {
    process.stderr.write(`kiln: cancelling Slurm job${jobIds.length === 1 ? '' : 's'} ${jobIds.join(', ')}\n`);
    void cancel(jobIds);
  };
  o.signal.addEventListener('abort', onAbort, { once: true });
  try {
    const results = await followRun({
      runDir: run.dir,
      builds: plan.builds.map((b) => b.name),
      jobIds,
      onEvent: o.render,
    });
    for (const r of results) if (r.note) process.stderr.write(`${r.build}: ${r.note}\n`);
    process.stderr.write(summaryLine(results.map((r) => ({ build: r.build, ok: r.code === 0 }))));
    return worstCode(results);
  } finally {
    o.signal.removeEventListener('abort', onAbort);
  }
}
