/**
 * A template's plan: every selected build's cache plan (src/cache/plan.ts, through build.ts's planFor)
 * in the shape `kiln plan --json`, the CI matrices and a Slurm run directory's plan.json share.
 */
import type { BuildConfig } from '../template/schema.js';
import { planFor, type BuildPlan as CachePlan, type RemoteLookup } from '../build/build.js';
import { groupBuilds, PLAN_SCHEMA, type BuildPlan, type KilnPlan } from './plan-shape.js';

export interface MakePlanOptions {
  cacheDir: string;
  /** The remote cache, asked about the keys the local store lacks. */
  remote?: RemoteLookup;
  /** Its address as the user gave it (s3://bucket/prefix), recorded in the plan. */
  cacheRemote?: string;
  remoteIntermediate?: boolean;
  signal?: AbortSignal;
}

const resumeKinds = {
  upToDate: 'up-to-date',
  fromFinalLayer: 'from-final-layer',
  resume: 'resume',
  fresh: 'fresh',
} as const;

/** What a build would restore instead of booting (cache.vm_state, cache.boot_snapshot), in words. */
function savedVmNotes(p: CachePlan): string[] {
  const r = p.resume;
  const ifSame = 'if QEMU and the VM (machine, CPU, memory, devices) are as they were; otherwise it boots, saying why';
  if (r.kind === 'resume' && r.restoreVm)
    return [`the VM saved with cached layer ${r.at} is restored instead of booting it (cache.vm_state), ${ifSame}`];
  if (r.kind !== 'fresh' || p.warmBase === undefined) return [];
  if (p.warmBase === null)
    return [
      'no warm base for this base image and source settings yet: the build saves one once its guest is ready for provisioning (cache.boot_snapshot)',
    ];
  return [
    `the warm base saved ${p.warmBase.created} for this base image and source settings (layer ${p.warmBase.key.slice(0, 12)}, VM ${(p.warmBase.vmBytes / 2 ** 20).toFixed(0)} MiB) is restored instead of booting (cache.boot_snapshot), ${ifSame}`,
  ];
}

/** One build's cache plan in the plan's shape. */
export function toBuildPlan(build: BuildConfig, p: CachePlan, remoteAsked: boolean): BuildPlan {
  const r = p.resume;
  const all = r.kind === 'upToDate' || r.kind === 'fromFinalLayer';
  return {
    name: build.name,
    output_directory: build.output_directory ?? '',
    root_key: p.rootKey ?? null,
    ...(p.unknown ? { unknown: p.unknown } : {}),
    layers: p.layers.map((l) => ({
      index: l.index,
      description: l.description,
      key: l.key ?? null,
      local: l.local,
      remote: l.remote ?? (remoteAsked && l.key ? false : null),
      ...(l.uncacheable ? { uncacheable: l.uncacheable } : {}),
    })),
    final_key: p.final?.key ?? null,
    final_cached: {
      local: p.final?.local ?? false,
      remote: p.final?.remote ?? (remoteAsked && p.final ? false : null),
    },
    artifact_key: p.artifactKey ?? null,
    resume: resumeKinds[r.kind],
    resume_at: all ? p.layers.length : r.kind === 'resume' ? r.at : 0,
    resume_source:
      r.kind === 'fromFinalLayer' || r.kind === 'resume' ? r.source : r.kind === 'upToDate' ? 'local' : null,
    up_to_date: all,
    notes: [
      ...p.notes,
      ...savedVmNotes(p),
      ...p.damaged.map(
        (d) => `cached layer ${d.key.slice(0, 12)} is damaged (${d.problem}): the build removes it and rebuilds`,
      ),
    ],
  };
}

export async function makePlan(templatePath: string, builds: BuildConfig[], o: MakePlanOptions): Promise<KilnPlan> {
  const planned: BuildPlan[] = [];
  for (const b of builds) {
    const p = await planFor(b, {
      cacheDir: o.cacheDir,
      remote: o.remote,
      remoteIntermediate: o.remoteIntermediate,
      signal: o.signal,
    });
    planned.push(toBuildPlan(b, p, o.remote !== undefined));
  }
  return {
    schema: PLAN_SCHEMA,
    template: templatePath,
    cache_remote: o.cacheRemote ?? null,
    ...(o.cacheRemote && o.remoteIntermediate ? { cache_remote_intermediate: true as const } : {}),
    builds: planned,
    groups: groupBuilds(planned),
  };
}
