/** manifest.json and SHA256SUMS: what was built, from what, with which digests, sizes and times. */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BuildContext } from '../build/state.js';
import { kilnVersion } from '../version.js';

export interface Manifest {
  kiln_version: string;
  build: string;
  template: { file: string; sha256: string };
  variables: Record<string, string | number | boolean>;
  base_image: { source: string; sha256: string; format: string } | undefined;
  accelerator: string | undefined;
  tools: { qemu_img: string };
  compaction?: { before_bytes: number; after_bytes: number };
  sbom?: { manager: string; packages: { name: string; version: string; arch: string }[] };
  started_at: string;
  finished_at: string;
  timings_ms: Record<string, number>;
  artifacts: { name: string; path: string; format: string; size: number; virtual_size: number; sha256: string; sha512?: string; compression?: string }[];
  /** The layer cache: which provisioners came from it, and the key a later identical build matches. */
  cache?: {
    artifact_key?: string;
    layers: { provisioner: number; description: string; key: string | null; from_cache: boolean }[];
  };
}

export function buildManifest(ctx: BuildContext, startedAt: Date, finalPathOf: (staged: string) => string, qemuImgVersion: string): Manifest {
  const vars = ctx.template.variables;
  const variables: Manifest['variables'] = {};
  for (const [k, v] of Object.entries(vars.values)) variables[k] = vars.sensitive.has(k) ? '<sensitive>' : v;
  const base = ctx.state.base;
  return {
    kiln_version: kilnVersion,
    build: ctx.build.name,
    template: { file: ctx.template.file, sha256: ctx.template.digest },
    variables,
    base_image: base && { source: base.source, sha256: base.sha256, format: base.format },
    accelerator: ctx.state.accelerator,
    tools: { qemu_img: qemuImgVersion },
    compaction: ctx.state.compaction && { before_bytes: ctx.state.compaction.beforeBytes, after_bytes: ctx.state.compaction.afterBytes },
    sbom: ctx.state.sbom,
    started_at: startedAt.toISOString(),
    finished_at: new Date().toISOString(),
    timings_ms: Object.fromEntries(Object.entries(ctx.state.timings).map(([k, v]) => [k, Math.round(v)])),
    artifacts: ctx.state.artifacts.map((a) => ({
      name: a.name, path: finalPathOf(a.path), format: a.format, size: a.size, virtual_size: a.virtualSize, sha256: a.sha256,
      ...(a.sha512 ? { sha512: a.sha512 } : {}),
      ...(a.compression ? { compression: a.compression } : {}),
    })),
    cache: ctx.state.layers && {
      artifact_key: ctx.state.layers.artifactKey,
      layers: ctx.state.layers.plan.map((l, i) => ({
        provisioner: l.index + 1, description: l.description, key: l.key ?? null, from_cache: i < ctx.state.layers!.cachedCount,
      })),
    },
  };
}

/** The usual `sha256sum` format, so `sha256sum -c SHA256SUMS` works in the output directory. */
export function writeSums(dir: string, algorithm: 'sha256' | 'sha512', artifacts: { name: string; sha256: string; sha512?: string }[]): void {
  const file = algorithm === 'sha256' ? 'SHA256SUMS' : 'SHA512SUMS';
  writeFileSync(path.join(dir, file), artifacts.map((a) => `${a[algorithm]}  ${a.name}\n`).join(''));
}
