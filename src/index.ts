/**
 * kiln as a library: `import { loadTemplate, build, verify, publish } from 'kiln'`.
 *
 *   const template = loadTemplate('image.yaml', { vars: ['version=1.2'] });
 *   const results = await build(template, { cacheDir, onEvent: (e) => console.log(e.type), signal });
 *
 * Air-gapped: `build(template, { record: true })`, then `makeBundle(template, { output, cacheDir })`;
 * on the far side `const b = await loadBundle(file, { sha256, cacheDir })` and
 * `build(b.template, { bundle: b, offline: true })`.
 *
 * Everything is passed in: nothing here reads an environment variable at import time, and no KILN_*
 * variable is read at all (the CLI reads those and turns them into these options). Importing this
 * module starts nothing and registers no signal handler; the caller owns signals, prompts, rendering.
 */
import { readFileSync } from 'node:fs';
import { build as runBuilds, selectBuilds, type KilnBuildOptions, type BuildResult } from './build/build.js';
import { defaultCacheDir } from './util/cache-dir.js';
import { maskSecrets } from './ui/events.js';
import type { LoadedTemplate } from './template/load.js';
import { isAirgapped, runAirgapped, type AirgapOptions } from './airgap/run.js';
import { verifyManifest, type VerifyResult } from './artifacts/verify.js';
import { createDriver, type Driver, type DriverOptions } from './qemu/driver.js';
import type { Manifest, PublishedRecord } from './artifacts/manifest.js';
import { publishManifest, recordedTargets } from './publish/runner.js';

export { loadTemplate, type LoadedTemplate, type LoadOptions } from './template/load.js';
export type { VariableInputs, ResolvedVariables } from './template/variables.js';
export { TemplateError } from './template/errors.js';
export { VariableError } from './template/variables.js';
export { KilnError } from './util/errors.js';
export type { Template, BuildConfig, OutputConfig, Provisioner } from './template/schema.js';
export type { BuildResult } from './build/build.js';
export { AirgapUsageError, type AirgapOptions } from './airgap/run.js';
export { loadBundle, type LoadBundleOptions, type LoadedBundle } from './airgap/load-bundle.js';
export { makeBundle, type MakeBundleOptions, type MadeBundle } from './airgap/make-bundle.js';
export { BundleError } from './airgap/bundle-read.js';
export { RecordingRefused } from './airgap/recording-status.js';
export { ExpiredRecordingError } from './airgap/valid-until.js';
export type { OnError } from './build/state.js';
export { BuildInterrupted } from './build/runner.js';
export type { BuildEvent } from './ui/events.js';
export type { Manifest, ArtifactRecord, PublishedRecord } from './artifacts/manifest.js';
export type { VerifyResult } from './artifacts/verify.js';
export { PublishFailed } from './publish/runner.js';
export { kilnVersion as version } from './version.js';
export { createDriver, type Driver, type DriverOptions } from './qemu/driver.js';

/** What build() takes besides the template: every field is optional. */
export type BuildOptions = Omit<KilnBuildOptions, 'airgap'> & AirgapOptions;

/**
 * Builds a loaded template's images (see KilnBuildOptions); with `record`, `bundle` or `offline`, an
 * air-gapped build: kiln's package proxy runs around the builds, a download the bundle lacks (or HTTPS
 * while recording) stops them at once with that error in the result, and a recording is marked ok only
 * when every selected build succeeded (makeBundle refuses any other). Recording does not use the layer cache.
 */
export async function build(template: LoadedTemplate, options: BuildOptions = {}): Promise<BuildResult[]> {
  const { record, bundle, offline, ...rest } = options;
  if (!isAirgapped({ record, bundle, offline })) return runBuilds(template, rest);
  const selected = selectBuilds(template, rest.only, rest.except);
  const name = selected[0]?.name ?? 'kiln';
  const secrets = template.variables.secrets;
  return runAirgapped(
    template,
    {
      record,
      bundle,
      offline,
      cacheDir: rest.cacheDir ?? defaultCacheDir(),
      signal: rest.signal,
      selected: selected.length,
      mask: (text) => maskSecrets(text, secrets),
      log: (message, level) =>
        rest.onEvent?.({
          type: 'log',
          build: name,
          level,
          message: maskSecrets(message, secrets),
          time: new Date().toISOString(),
        }),
    },
    ({ network, signal, noCache }) =>
      runBuilds(template, { ...rest, signal, noCache: rest.noCache || noCache, airgap: network }),
  );
}

export interface VerifyOptions {
  /** The qemu-img to use (`qemu.qemuImgBinary`; default: qemu-img on PATH), or a ready driver. */
  qemu?: DriverOptions;
  driver?: Driver;
  /** An allowed_signers file: check the build's signatures first, then every digest against what was signed. */
  trustedKeys?: string;
}

/**
 * Re-checks the artifacts a manifest.json (written by a build) lists: sizes, digests, and qemu-img
 * check/info where the format allows, and the SBOM and provenance files. One result per file; never
 * throws for a bad artifact.
 */
export async function verify(manifestFile: string, options: VerifyOptions = {}): Promise<VerifyResult[]> {
  return verifyManifest(manifestFile, options.driver ?? createDriver(options.qemu), {
    trustedKeys: options.trustedKeys,
  });
}

export interface PublishOptions {
  /** Only these targets (their names); by default every target the manifest records. */
  only?: string[];
  /** Aborting it stops the uploads. */
  signal?: AbortSignal;
  /** Where credentials are looked up (AWS_*, AZURE_*, OS_* ...); default: process.env at call time. */
  env?: NodeJS.ProcessEnv;
  /** Progress and status lines (default: none). */
  log?: (message: string) => void;
  /** Upload progress: none (default), a line per quarter through `log`, or bars on stderr (a terminal). */
  progress?: 'none' | 'lines' | 'bar';
  /** Each target's record once it is published or has failed (no credentials in it). */
  onPublished?: (record: PublishedRecord) => void;
  /** The layer cache a build used: its record of the output is kept valid, so the next identical build stays up to date. */
  cacheDir?: string;
  /**
   * Hosts (host or host:port) the manifest names that may receive credentials (kiln publish
   * --allow-host). A manifest is a file anyone who can write it may have edited: credentials go to a
   * host only the environment names, or one listed here; any other is refused, naming it.
   */
  allowHosts?: string[];
}

/**
 * Uploads a finished build again, without rebuilding, to the publish targets its manifest.json
 * records; a target that already holds the same image sends nothing. Resolves with the manifest's
 * updated publish records; rejects (PublishFailed) when a target fails.
 */
export async function publish(manifestFile: string, options: PublishOptions = {}): Promise<PublishedRecord[]> {
  const targets = recordedTargets(manifestFile);
  return publishManifest(manifestFile, targets, {
    signal: options.signal ?? new AbortController().signal,
    only: options.only,
    env: options.env,
    progress: options.progress ?? 'none',
    log: options.log ?? (() => undefined),
    onResult: options.onPublished,
    cacheDir: options.cacheDir,
    // Always checked (an empty list confirms no host): unset, the runner would trust the manifest's hosts.
    allowHosts: options.allowHosts ?? [],
  });
}

/** Reads a manifest.json a build wrote. */
export function readManifest(manifestFile: string): Manifest {
  return JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest;
}
