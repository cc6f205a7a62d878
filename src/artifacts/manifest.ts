/**
 * manifest.json and SHA256SUMS: what was built, from what, with which digests, sizes and times. The
 * manifest also lists every file kiln put in the output directory: kiln replaces (--force) or deletes
 * only a directory whose every entry it finds there.
 */
import { lstatSync, readFileSync, readdirSync, rmdirSync, unlinkSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import type { BuildConfig } from '../template/schema.js';
import { kilnVersion } from '../version.js';
import { resolveFirmware } from '../qemu/firmware.js';
import { archOf, type GuestArch } from '../qemu/arch.js';
import { certFingerprint, readKeys } from '../qemu/secure-boot.js';
import type { SupplyChainRecord } from './supply-chain.js';

/** One artifact a build wrote, as the build's state holds it (the manifest lists it in snake_case). */
export interface ArtifactRecord {
  name: string;
  path: string;
  format: string;
  size: number;
  virtualSize: number;
  sha256: string;
  sha512?: string;
  /** Set when a compress post-processor wrapped the artifact (gzip, zstd, xz). */
  compression?: string;
}

/**
 * What a manifest is made from: the build context (passed as is by the commit step), described here
 * so this module, a layer below the build, does not import the build's types.
 */
export interface ManifestSource {
  template: Pick<LoadedTemplate, 'file' | 'digest' | 'variables'>;
  build: Pick<BuildConfig, 'name'> & {
    source?: Pick<BuildConfig['source'], 'firmware' | 'tpm' | 'machine' | 'secure_boot'> & { arch?: GuestArch };
  };
  state: {
    base?: { source: string; sha256: string; format: string };
    accelerator?: string;
    cpuModel?: string;
    compaction?: { beforeBytes: number; afterBytes: number };
    sbom?: Manifest['sbom'];
    timings: Record<string, number>;
    artifacts: ArtifactRecord[];
    layers?: {
      artifactKey?: string;
      cachedCount: number;
      plan: { index: number; description: string; key?: string | null }[];
      finalKey?: string;
    };
    plan?: { resume: { kind: string } };
  };
}

export interface Manifest {
  kiln_version: string;
  build: string;
  template: { file: string; sha256: string };
  variables: Record<string, string | number | boolean>;
  base_image: { source: string; sha256: string; format: string } | undefined;
  accelerator: string | undefined;
  /** The guest's architecture (x86_64, aarch64): publish targets label the image with it. Absent in manifests of older kilns: x86_64. */
  arch?: GuestArch;
  /** QEMU's -cpu model for the guest; absent when no VM ran (an artifact from the cache). */
  cpu_model?: string;
  tools: { qemu_img: string };
  /** What the image boots on, for UEFI or TPM builds (absent for BIOS without TPM): a target must offer the same. */
  platform?: {
    firmware: string;
    firmware_descriptor?: string;
    secure_boot: boolean;
    enrolled_keys: boolean;
    machine: string;
    tpm?: '2.0';
    /** secure_boot.keys: the SHA-256 fingerprints of the certificates enrolled instead of the firmware's own. */
    custom_keys?: { pk: string[]; kek: string[]; db: string[] };
  };
  compaction?: { before_bytes: number; after_bytes: number };
  sbom?: { manager: string; packages: { name: string; version: string; arch: string }[] };
  /** The SBOM (SPDX, CycloneDX) and provenance files beside the artifacts, their digests and signatures. */
  supply_chain?: SupplyChainRecord;
  started_at: string;
  finished_at: string;
  timings_ms: Record<string, number>;
  artifacts: {
    name: string;
    path: string;
    format: string;
    size: number;
    virtual_size: number;
    sha256: string;
    sha512?: string;
    compression?: string;
  }[];
  /** Every entry kiln put in the output directory besides manifest.json, relative to it; directories end in "/". */
  files?: string[];
  /** The layer cache: which provisioners came from it, and the key a later identical build matches. */
  cache?: {
    artifact_key?: string;
    layers: { provisioner: number; description: string; key: string | null; from_cache: boolean }[];
    /**
     * The build's final disk (after clean-up, package list, trim, shutdown) in the layer store: saved by
     * this build (from_cache false), or what this build converted from without booting (from_cache true).
     */
    final_layer?: { key: string; from_cache: boolean };
  };
  /** Written by the publish step and `kiln publish` (src/publish/runner.ts): where each image now lives. */
  published?: PublishedRecord[];
}

/** One publish target's outcome; `config` is the target's template settings (never a secret). */
export interface PublishedRecord {
  target: string;
  type: string;
  format: string;
  status: 'pending' | 'published' | 'failed';
  artifact?: string;
  location?: string;
  id?: string;
  remote_digest?: string;
  unchanged?: boolean;
  bytes_sent?: number;
  duration_ms?: number;
  published_at?: string;
  error?: string;
  /** The build boots with UEFI (Glance gets hw_firmware_type=uefi), kept for `kiln publish`. */
  uefi?: boolean;
  config: Record<string, unknown>;
}

/** The template's variables as the manifest (and the provenance) record them: sensitive ones masked. */
export function recordedVariables(vars: ManifestSource['template']['variables']): Manifest['variables'] {
  const variables: Manifest['variables'] = {};
  for (const [k, v] of Object.entries(vars.values)) variables[k] = vars.sensitive.has(k) ? '<sensitive>' : v;
  return variables;
}

/** The platform record: the firmware descriptor kiln booted (resolved again: the same files, the same choice) and the TPM. */
function platformOf(src: ManifestSource['build']['source']): Pick<Manifest, 'platform'> {
  if (!src || (src.firmware === 'bios' && !src.tpm)) return {};
  const fw =
    src.firmware === 'bios'
      ? undefined
      : resolveFirmware(
          src.firmware === 'uefi' || src.firmware === 'uefi-secure'
            ? { kind: src.firmware }
            : { kind: 'descriptor', file: src.firmware },
          { arch: archOf(src), machine: src.machine },
        );
  const keys = src.secure_boot && readKeys(src.secure_boot.keys);
  return {
    platform: {
      firmware: src.firmware,
      firmware_descriptor: fw?.descriptor,
      secure_boot: fw?.secureBoot ?? false,
      enrolled_keys: fw?.enrolledKeys ?? false,
      machine: fw?.machine ?? src.machine,
      ...(src.tpm ? { tpm: '2.0' as const } : {}),
      ...(keys
        ? {
            custom_keys: {
              pk: keys.pk.map(certFingerprint),
              kek: keys.kek.map(certFingerprint),
              db: keys.db.map(certFingerprint),
            },
          }
        : {}),
    },
  };
}

export function buildManifest(
  ctx: ManifestSource,
  startedAt: Date,
  finalPathOf: (staged: string) => string,
  qemuImgVersion: string,
  files: string[],
  supplyChain?: SupplyChainRecord,
): Manifest {
  const variables = recordedVariables(ctx.template.variables);
  const base = ctx.state.base;
  const sbom = ctx.state.sbom;
  return {
    kiln_version: kilnVersion,
    build: ctx.build.name,
    template: { file: ctx.template.file, sha256: ctx.template.digest },
    variables,
    base_image: base && { source: base.source, sha256: base.sha256, format: base.format },
    accelerator: ctx.state.accelerator,
    ...(ctx.build.source ? { arch: archOf(ctx.build.source) } : {}),
    ...(ctx.state.cpuModel ? { cpu_model: ctx.state.cpuModel } : {}),
    tools: { qemu_img: qemuImgVersion },
    ...platformOf(ctx.build.source),
    compaction: ctx.state.compaction && {
      before_bytes: ctx.state.compaction.beforeBytes,
      after_bytes: ctx.state.compaction.afterBytes,
    },
    // The licences and the OS are in the SBOM files; the manifest keeps its short list as it was.
    sbom: sbom && {
      manager: sbom.manager,
      packages: sbom.packages.map((p) => ({ name: p.name, version: p.version, arch: p.arch })),
    },
    ...(supplyChain ? { supply_chain: supplyChain } : {}),
    started_at: startedAt.toISOString(),
    finished_at: new Date().toISOString(),
    timings_ms: Object.fromEntries(Object.entries(ctx.state.timings).map(([k, v]) => [k, Math.round(v)])),
    artifacts: ctx.state.artifacts.map((a) => ({
      name: a.name,
      path: finalPathOf(a.path),
      format: a.format,
      size: a.size,
      virtual_size: a.virtualSize,
      sha256: a.sha256,
      ...(a.sha512 ? { sha512: a.sha512 } : {}),
      ...(a.compression ? { compression: a.compression } : {}),
    })),
    files,
    cache: ctx.state.layers && {
      artifact_key: ctx.state.layers.artifactKey,
      layers: ctx.state.layers.plan.map((l, i) => ({
        provisioner: l.index + 1,
        description: l.description,
        key: l.key ?? null,
        from_cache: i < ctx.state.layers!.cachedCount,
      })),
      ...(ctx.state.layers.finalKey
        ? {
            final_layer: {
              key: ctx.state.layers.finalKey,
              from_cache: ctx.state.plan?.resume.kind === 'fromFinalLayer',
            },
          }
        : {}),
    },
  };
}

/** The checksum file an algorithm's digests are written to. */
export const checksumFileOf = (algorithm: 'sha256' | 'sha512') =>
  algorithm === 'sha256' ? 'SHA256SUMS' : 'SHA512SUMS';

/** The usual `sha256sum` format, so `sha256sum -c SHA256SUMS` works in the output directory. */
export function writeSums(
  dir: string,
  algorithm: 'sha256' | 'sha512',
  artifacts: { name: string; sha256: string; sha512?: string }[],
): void {
  writeFileSync(
    path.join(dir, checksumFileOf(algorithm)),
    artifacts.map((a) => `${a[algorithm]}  ${a.name}\n`).join(''),
  );
}

/** Every entry under `dir`, relative to it, depth first; directories end in "/" (symbolic links are not followed). */
export function entriesOf(dir: string, prefix = ''): string[] {
  const entries: string[] = [];
  for (const name of readdirSync(path.join(dir, prefix)).sort()) {
    const rel = prefix + name;
    if (lstatSync(path.join(dir, rel)).isDirectory()) entries.push(`${rel}/`, ...entriesOf(dir, `${rel}/`));
    else entries.push(rel);
  }
  return entries;
}

export const checksumFiles = [checksumFileOf('sha256'), checksumFileOf('sha512')];

/** An existing output directory's entries, kiln's and not; `problem` says why kiln cannot tell it wrote any of them. */
export interface Ownership {
  written: string[];
  foreign: string[];
  problem?: string;
}

/**
 * Checks `dir` against its manifest.json: kiln wrote an entry if the manifest lists it in `files`,
 * or (a manifest older than that list) as an artifact in the output directory or its checksum file.
 * `outputDir` is where the manifest's artifact paths point: `dir` itself, unless it has been moved
 * aside to be replaced. Without a readable manifest nothing in it is kiln's. An empty directory
 * holds nothing foreign.
 */
export function outputOwnership(dir: string, outputDir = dir): Ownership {
  if (!lstatSync(dir).isDirectory())
    return { written: [], foreign: [path.basename(dir)], problem: 'it is not a directory' };
  const entries = entriesOf(dir);
  let manifest: Partial<Manifest>;
  try {
    manifest = JSON.parse(readFileSync(path.join(dir, 'manifest.json'), 'utf8')) as Partial<Manifest>;
  } catch (e) {
    const problem =
      (e as NodeJS.ErrnoException).code === 'ENOENT'
        ? 'it has no manifest.json'
        : `its manifest.json cannot be read (${(e as Error).message})`;
    return { written: [], foreign: entries, problem: entries.length ? problem : undefined };
  }
  const listed = new Set(['manifest.json', ...checksumFiles]);
  if (Array.isArray(manifest.files)) for (const f of manifest.files) listed.add(String(f));
  if (Array.isArray(manifest.artifacts)) {
    for (const a of manifest.artifacts)
      if (typeof a?.path === 'string' && path.dirname(a.path) === outputDir) listed.add(path.basename(a.path));
  }
  // A directory the manifest does not list is kiln's if something in it is (what else is in it is judged entry by entry).
  const kilnWrote = (e: string) =>
    listed.has(e) || (e.endsWith('/') && entries.some((f) => f !== e && f.startsWith(e) && listed.has(f)));
  return { written: entries.filter(kilnWrote), foreign: entries.filter((e) => !kilnWrote(e)) };
}

/**
 * Deletes from `dir` the entries its manifest says kiln wrote, files one by one and then directories
 * if empty (never recursively), and `dir` itself if nothing else is left: a file that is not kiln's,
 * even one that appeared a moment ago, stays with the directories around it. Returns what stayed.
 */
export function removeKilnOutput(dir: string, outputDir: string): string[] {
  const { written } = outputOwnership(dir, outputDir);
  for (const rel of [...written.reverse(), '']) {
    try {
      if (rel === '' || rel.endsWith('/')) rmdirSync(path.join(dir, rel));
      else unlinkSync(path.join(dir, rel));
    } catch {
      /* a directory holding something that is not kiln's */
    }
  }
  try {
    return entriesOf(dir);
  } catch {
    return [];
  }
}
