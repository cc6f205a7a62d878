/**
 * A Slurm run directory's job script and the sbatch command lines that submit it. Pure functions: the
 * CLI writes and submits what they return, the unit tests read it.
 *
 * Why it looks the way it does:
 * - `--export=NONE`: Slurm's default (ALL) writes the submitter's whole environment, secrets included,
 *   in plain text into slurmctld's state directory. Only the short list below reaches the job, written
 *   into the script (which slurmctld keeps too), so nothing secret may be in it.
 * - Credentials and per-node settings (the local cache, the store's endpoint as this node reaches it,
 *   AWS_SHARED_CREDENTIALS_FILE or AWS_PROFILE) come from a node-local env file, read on the node.
 * - One array task per build, `%N` at most at once; each task's JSON events go to tasks/<i>.events.jsonl
 *   in the shared run directory, its exit code to tasks/<i>.rc, where `kiln build --on slurm` follows them.
 * - `scancel` sends SIGTERM to every process of the task: kiln cleans up as on any SIGTERM; the shell
 *   around it traps the signal only to record kiln's exit code after kiln has finished.
 */
import path from 'node:path';
import type { KilnPlan } from './plan-shape.js';
import { groupName, shellWord } from './matrix.js';

/** The submitter's variables a job gets: settings, never credentials (AWS_SECRET_ACCESS_KEY etc. are not here). */
export const EXPORTED_VARIABLES = [
  'KILN_CACHE_DIR',
  'KILN_ACCELERATOR',
  'KILN_QEMU',
  'KILN_QEMU_IMG',
  'AWS_REGION',
  'AWS_ENDPOINT_URL',
  'AWS_PROFILE',
  'AWS_SHARED_CREDENTIALS_FILE',
  'AWS_CONFIG_FILE',
  'TMPDIR',
] as const;

/** Variables that carry credentials: never written into a job, named in a note when set. */
export const CREDENTIAL_VARIABLES = ['AWS_ACCESS_KEY_ID', 'AWS_SECRET_ACCESS_KEY', 'AWS_SESSION_TOKEN'] as const;

export const DEFAULT_NODE_ENV = '/etc/kiln/node.env';

export interface SlurmJobOptions {
  /** The shared run directory (absolute), seen at the same path on every node. */
  runDir: string;
  /** The template (absolute path, on the shared file system). */
  template: string;
  /** Working directory of each task (relative --var-file paths resolve there). */
  cwd: string;
  /** node and kiln's bin/kiln.js on the nodes (absolute). */
  node: string;
  kiln: string;
  /** At most this many tasks at once (the array's %N). */
  throttle: number;
  /** The submitter's values of EXPORTED_VARIABLES that are set, and PATH. */
  env: Record<string, string>;
  /** A node-local file of VAR=value lines read by each task; `{node}` becomes the node's name. */
  nodeEnv: string;
  /** Further `kiln build` arguments: --var-file, --var (never a sensitive one), --force, --cache-remote... */
  buildArgs: string[];
}

export const tasksDir = (runDir: string): string => path.join(runDir, 'tasks');

export function jobScript(plan: KilnPlan, o: SlurmJobOptions): string {
  const tasks = tasksDir(o.runDir);
  const exports = Object.entries(o.env)
    .sort(([a], [b]) => a.localeCompare(b))
    .map(([k, v]) => `export ${k}=${shellWord(v)}`);
  const nodeEnv = o.nodeEnv.split('{node}').map(shellWord).join('"$SLURMD_NODENAME"');
  const last = plan.builds.length - 1;
  return [
    '#!/bin/sh',
    `# Written by kiln for ${o.template}: one array task per build (plan.json beside this file lists them by index).`,
    `#SBATCH --job-name=kiln-${shellWord(path.basename(o.template).replace(/[^A-Za-z0-9._-]/g, '_'))}`,
    `#SBATCH --array=0-${last}%${o.throttle}`,
    '#SBATCH --export=NONE',
    `#SBATCH --chdir=${o.cwd}`,
    `#SBATCH --output=${tasks}/%a.events.jsonl`,
    `#SBATCH --error=${tasks}/%a.log`,
    'set -u',
    "# The submitter's environment is not passed (--export=NONE): these settings are, and nothing secret.",
    ...exports,
    ': "${HOME:=$(getent passwd "$(id -u)" | cut -d: -f6)}"; export HOME',
    "# Node-local settings: this node's cache directory, the store's endpoint as this node reaches it, its credentials file.",
    `node_env=${nodeEnv}`,
    'if [ -r "$node_env" ]; then set -a; . "$node_env"; set +a; fi',
    'case "${SLURM_ARRAY_TASK_ID:?kiln: not run as a Slurm array task}" in',
    ...plan.builds.map((b, i) => `  ${i}) build=${shellWord(b.name)} ;;`),
    '  *) echo "kiln: no build at array index $SLURM_ARRAY_TASK_ID (plan.json lists 0-' + last + ')" >&2; exit 2 ;;',
    'esac',
    '# scancel: kiln gets SIGTERM and cleans up; this shell waits for it, then records its exit code.',
    'trap \'echo "kiln: task $SLURM_ARRAY_TASK_ID ($build) got SIGTERM (scancel?)" >&2\' TERM',
    [
      shellWord(o.node),
      shellWord(o.kiln),
      'build',
      '--only',
      '"$build"',
      ...o.buildArgs.map(shellWord),
      '--events=json',
      '--progress=never',
      shellWord(o.template),
    ].join(' '),
    'rc=$?',
    `echo "$rc" > ${shellWord(tasks)}/"$SLURM_ARRAY_TASK_ID".rc`,
    'exit "$rc"',
    '',
  ].join('\n');
}

export interface Submission {
  argv: string[];
  builds: string[];
}

/**
 * The sbatch command lines for a run: one array over every build, or with `singleton` one array per
 * group of builds sharing a key prefix, named after that prefix and held by --dependency=singleton
 * (one running job per name and user: a shared key is built once, by one task, whoever submitted it;
 * the others then find it in the remote cache). A group's own tasks run one at a time for the same reason.
 */
export function submissions(
  plan: KilnPlan,
  script: string,
  o: { throttle: number; singleton: boolean; sbatchArgs: string[] },
): Submission[] {
  if (!o.singleton) {
    return [
      {
        argv: ['sbatch', '--parsable', `--array=0-${plan.builds.length - 1}%${o.throttle}`, ...o.sbatchArgs, script],
        builds: plan.builds.map((b) => b.name),
      },
    ];
  }
  const index = new Map(plan.builds.map((b, i) => [b.name, i]));
  // A --dependency of the user's joins singleton (sbatch keeps only the last --dependency given).
  const userDeps = o.sbatchArgs
    .filter((a) => a.startsWith('--dependency='))
    .map((a) => a.slice('--dependency='.length));
  const rest = o.sbatchArgs.filter((a) => !a.startsWith('--dependency='));
  return plan.groups.map((g) => ({
    argv: [
      'sbatch',
      '--parsable',
      `--array=${g.builds.map((b) => index.get(b)).join(',')}%1`,
      `--job-name=${groupName(g)}`,
      `--dependency=${['singleton', ...userDeps].join(',')}`,
      ...rest,
      script,
    ],
    builds: g.builds,
  }));
}
