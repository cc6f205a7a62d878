/**
 * CI matrices from a plan: one job per build, which a CI system runs with nothing but `kiln build
 * --only NAME` (no kiln code in the CI system). Each row carries the build's group (its shared key
 * prefix), so a pipeline can serialise the builds that would build the same layers.
 */
import type { KilnPlan, PlanGroup } from './plan-shape.js';

export type MatrixKind = 'github-matrix' | 'gitlab-matrix';

export interface MatrixRow {
  build: string;
  group: string;
  up_to_date: boolean;
}

/** A group's short name: enough of its key to tell groups apart in job names (its build's name while the key is unknown). */
export const groupName = (g: Pick<PlanGroup, 'key' | 'builds'>): string =>
  g.key ? `kiln-${g.key.slice(0, 16)}` : `kiln-${g.builds[0]!.replace(/[^A-Za-z0-9._-]/g, '_')}`;

export function matrixRows(plan: KilnPlan): MatrixRow[] {
  const groupOf = new Map<string, string>();
  for (const g of plan.groups) for (const b of g.builds) groupOf.set(b, groupName(g));
  return plan.builds.map((b) => ({ build: b.name, group: groupOf.get(b.name)!, up_to_date: b.up_to_date }));
}

/**
 * GitHub Actions: `{"include":[...]}` on one line, for `echo "matrix=$(kiln plan --emit github-matrix
 * T)" >> "$GITHUB_OUTPUT"` and `strategy: matrix: ${{ fromJSON(needs.plan.outputs.matrix) }}`.
 */
export function githubMatrix(plan: KilnPlan): string {
  return JSON.stringify({ include: matrixRows(plan) }) + '\n';
}

/** A shell word for a POSIX shell (single quotes; a quote inside as '\''). */
export const shellWord = (s: string): string =>
  /^[A-Za-z0-9_./:=@%+,-]+$/.test(s) ? s : `'${s.replace(/'/g, `'\\''`)}'`;

/**
 * GitLab CI: a child pipeline (`trigger: include: artifact:`) with one job per build through
 * `parallel: matrix`, each a `kiln build --only $KILN_BUILD`. JSON strings are YAML scalars, so every
 * name is quoted as JSON and needs no YAML escaping of its own.
 */
export function gitlabMatrix(plan: KilnPlan, templateArg: string): string {
  const rows = matrixRows(plan);
  const remote = plan.cache_remote
    ? ` --cache-remote ${shellWord(plan.cache_remote)}${plan.cache_remote_intermediate ? ' --cache-remote-intermediate' : ''}`
    : '';
  const lines = [
    `# Written by kiln plan --emit gitlab-matrix: one job per build of ${templateArg}; run it as a child pipeline.`,
    'kiln-build:',
    '  parallel:',
    '    matrix:',
    ...rows.flatMap((r) => [
      `      - KILN_BUILD: ${JSON.stringify(r.build)}`,
      `        KILN_GROUP: ${JSON.stringify(r.group)}`,
      `        KILN_UP_TO_DATE: ${JSON.stringify(String(r.up_to_date))}`,
    ]),
    '  script:',
    `    - ${JSON.stringify(`kiln build --only "$KILN_BUILD"${remote} ${shellWord(templateArg)}`)}`,
  ];
  return lines.join('\n') + '\n';
}

export const emitters: Record<MatrixKind, (plan: KilnPlan, templateArg: string) => string> = {
  'github-matrix': (plan) => githubMatrix(plan),
  'gitlab-matrix': gitlabMatrix,
};
