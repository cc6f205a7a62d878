/**
 * Air-gapped builds on the command line, flags only: `kiln bundle TEMPLATE -o FILE [--with-kiln]`
 * (the library's makeBundle), and the build flags --record, --bundle FILE and --offline turned into
 * build()'s options (prepareAirgap); the library runs the package proxy around the build.
 */
import { renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  loadTemplate,
  loadBundle,
  makeBundle,
  AirgapUsageError,
  type AirgapOptions,
  type LoadedTemplate,
  type VariableInputs,
} from '../index.js';
import { cacheDirFromEnv } from './env.js';
import { listOf, namesOf } from './flag-lists.js';

export { AirgapUsageError };

export interface AirgapBuildArgs {
  record?: boolean;
  bundle?: string;
  offline?: boolean;
  recording?: string;
  sha256?: string;
  template?: string;
  var?: string | string[];
  'var-file'?: string | string[];
  only?: string | string[];
}

export interface PreparedAirgap {
  /** From a bundle: its template, loaded (the bundle's stored --var values, then the command line's). */
  template?: LoadedTemplate;
  /** For build(). */
  options: AirgapOptions;
}

/** The flags as build()'s options; a bundle is verified, unpacked and its template loaded. undefined: a normal build. */
export async function prepareAirgap(a: AirgapBuildArgs, cacheDir: string): Promise<PreparedAirgap | undefined> {
  if (a.sha256 !== undefined && !a.bundle)
    throw new AirgapUsageError('--sha256 pins the bundle given with --bundle', {
      fix: 'kiln build --bundle FILE --sha256 HEX',
    });
  if (!a.record && !a.bundle && !a.offline) return undefined;
  if (a.record && (a.bundle || a.offline)) {
    throw new AirgapUsageError(
      '--record fetches through the network and cannot be combined with --bundle or --offline',
      {
        fix: 'record on a connected machine (kiln build --record TEMPLATE), then bundle and build offline from the bundle',
      },
    );
  }
  if (a.bundle && a.template) {
    throw new AirgapUsageError(
      `give a template or --bundle, not both: the bundle carries its own template, so ${a.template} would be ignored`,
      { fix: `kiln build --bundle ${a.bundle} (or kiln build ${a.template} without --bundle)` },
    );
  }
  const options: AirgapOptions = { record: a.record ? (a.recording ?? true) : undefined, offline: a.offline };
  if (!a.bundle) return { options };
  const bundle = await loadBundle(a.bundle, {
    sha256: a.sha256,
    cacheDir,
    vars: listOf(a.var),
    varFiles: listOf(a['var-file']),
    env: process.env,
    only: namesOf(a.only),
  });
  if (!bundle.pinned) {
    process.stderr.write(
      `kiln: bundle ${a.bundle} (sha256 ${bundle.sha256}) is only self-consistent: no --sha256 pin says it is the one you meant, and its template's shell-local commands run on this host\n`,
    );
  }
  for (const note of bundle.template.notes ?? []) process.stderr.write(`warning: ${note}\n`);
  return { template: bundle.template, options: { ...options, bundle } };
}

export interface BundleArgs {
  template: string;
  output: string;
  force: boolean;
  'with-kiln': boolean;
  recording?: string;
  'allow-expired'?: boolean;
  var?: string | string[];
  'var-file'?: string | string[];
}

export async function bundleCommand(a: BundleArgs): Promise<number> {
  const cacheDir = cacheDirFromEnv();
  const varFiles = listOf(a['var-file']);
  const vars = listOf(a.var);
  const inputs: VariableInputs = { vars, varFiles, env: process.env };
  const t = loadTemplate(a.template, inputs, { cacheDir });
  const started = performance.now();
  const w = await makeBundle(t, {
    output: a.output,
    cacheDir,
    force: a.force,
    vars,
    varFiles,
    recording: a.recording,
    withKiln: a['with-kiln'],
    allowExpired: a['allow-expired'],
    templateName: a.template,
    log: (m) => process.stderr.write(`kiln bundle: ${m}\n`),
  });
  const mib = (statSync(w.file).size / 2 ** 20).toFixed(1);
  // The pin, in sha256sum's format, beside the bundle: carry it (or the printed line) separately to check the copy offline.
  const pinFile = `${w.file}.sha256`;
  writeFileSync(`${pinFile}.tmp`, `${w.sha256}  ${path.basename(w.file)}\n`);
  renameSync(`${pinFile}.tmp`, pinFile);
  const extras = [
    ...(w.manifest.downloads?.length
      ? [`${w.manifest.downloads.length} downloaded image${w.manifest.downloads.length > 1 ? 's' : ''}`]
      : []),
    ...(w.manifest.vars?.length
      ? [`${w.manifest.vars.length} --var value${w.manifest.vars.length > 1 ? 's' : ''}`]
      : []),
    ...(w.withKiln ? ['kiln.tgz'] : []),
  ];
  process.stdout.write(
    `wrote ${a.output}: ${mib} MiB, ${w.members} members (${w.manifest.tree.length} input files, ${w.manifest.packages} recorded responses${extras.map((e) => `, ${e}`).join('')}) in ${((performance.now() - started) / 1000).toFixed(1)} s\n` +
      (w.validUntil
        ? `the mirror's ${w.validUntil.url} is valid until ${w.validUntil.validUntil.toUTCString()}: apt refuses it offline after that (record and bundle again before)\n`
        : '') +
      `sha256 ${w.sha256} (also in ${a.output}.sha256)\nbuild it elsewhere with: kiln build --bundle ${path.basename(a.output)} --sha256 ${w.sha256} --offline\n`,
  );
  return 0;
}
