/** A layer-cache plan for step tests: what the layer-cache step would have decided (src/cache/plan.ts). */
import type { BuildPlan, Resume } from '../../src/cache/plan.js';

export function planOf(kind: Resume['kind'] | 'none'): { plan?: BuildPlan } {
  if (kind === 'none') return {};
  const resume: Resume =
    kind === 'resume'
      ? { kind, at: 1, key: 'a'.repeat(64), source: 'local' }
      : kind === 'fromFinalLayer'
        ? { kind, finalKey: 'b'.repeat(64), source: 'local' }
        : kind === 'upToDate'
          ? { kind, artifactKey: 'c'.repeat(64) }
          : { kind };
  return { plan: { build: 'unit', layers: [], resume, upToDate: kind === 'upToDate', damaged: [], notes: [] } };
}
