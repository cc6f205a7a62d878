/**
 * `kiln plan [--json] [--emit github-matrix|gitlab-matrix] TEMPLATE`: what each build would reuse and
 * build, from the local (and remote) cache, without booting anything (src/scale/plan.ts).
 */
import type { LoadedTemplate } from '../index.js';
import type { BuildConfig } from '../template/schema.js';
import type { RemoteLookup } from '../build/build.js';
import { makePlan } from '../scale/plan.js';
import { emitters, type MatrixKind } from '../scale/matrix.js';
import type { BuildPlan, KilnPlan } from '../scale/plan-shape.js';
import { cacheDirFromEnv } from './env.js';

export interface PlanArgs {
  json: boolean;
  emit?: MatrixKind;
  cacheRemote?: string;
  /** --cache-remote-intermediate: the remote cache's intermediate layers are asked too. */
  remoteIntermediate?: boolean;
  remote?: RemoteLookup;
}

const short = (k: string | null) => (k ? k.slice(0, 12) : '-');
const where = (local: boolean, remote: boolean | null) =>
  local ? 'local' : remote ? 'remote' : remote === false ? 'not cached' : local === false ? 'not cached' : '-';

function describeResume(b: BuildPlan): string {
  switch (b.resume) {
    case 'up-to-date':
      return 'up to date (its output directory holds these outputs)';
    case 'from-final-layer':
      return `no boot: the outputs are made from the cached final disk (${b.resume_source})`;
    case 'resume':
      return `boots from cached layer ${b.resume_at} of ${b.layers.length} (${b.resume_source}), provisions from #${b.layers[b.resume_at]?.index !== undefined ? b.layers[b.resume_at]!.index + 1 : b.layers.length}`;
    case 'fresh':
      return 'builds from the base image';
  }
}

export function planText(plan: KilnPlan): string {
  const out: string[] = [];
  for (const b of plan.builds) {
    out.push(`${b.name}: ${describeResume(b)}`);
    if (b.unknown) {
      out.push(`  keys unknown: ${b.unknown}`);
      continue;
    }
    out.push(`  root   ${short(b.root_key)}`);
    for (const l of b.layers)
      out.push(
        `  #${String(l.index + 1).padEnd(5)} ${short(l.key).padEnd(12)}  ${(l.key ? where(l.local, l.remote) : `not cacheable: ${l.uncacheable}`).padEnd(10)}  ${l.description}`,
      );
    if (b.final_key) out.push(`  final  ${short(b.final_key)}  ${where(b.final_cached.local, b.final_cached.remote)}`);
    for (const n of b.notes) out.push(`  note: ${n}`);
  }
  const shared = plan.groups.filter((g) => g.builds.length > 1);
  if (shared.length) {
    out.push('builds sharing layers (building one builds them for the others):');
    for (const g of shared)
      out.push(`  ${g.builds.join(', ')}: ${g.shared} key${g.shared === 1 ? '' : 's'} up to ${short(g.key)}`);
  }
  const todo = plan.builds.filter((b) => !b.up_to_date).length;
  out.push(
    `${plan.builds.length} build${plan.builds.length === 1 ? '' : 's'}, ${todo} to boot${plan.cache_remote ? ` (remote cache ${plan.cache_remote})` : ''}`,
  );
  return out.join('\n') + '\n';
}

export async function planCommand(
  t: LoadedTemplate,
  builds: BuildConfig[],
  templateArg: string,
  args: PlanArgs,
): Promise<string> {
  const plan = await makePlan(t.file, builds, {
    cacheDir: cacheDirFromEnv(),
    remote: args.remote,
    cacheRemote: args.cacheRemote,
    remoteIntermediate: args.remoteIntermediate,
  });
  if (args.emit) return emitters[args.emit](plan, templateArg);
  return args.json ? JSON.stringify(plan, null, 2) + '\n' : planText(plan);
}
