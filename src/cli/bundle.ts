/**
 * Air-gapped builds on the command line: `kiln bundle TEMPLATE -o FILE [--with-kiln]`, and the build
 * flags --record, --bundle FILE and --offline (prepareAirgap: which template to load, where outputs go,
 * and the package proxy the build's guest uses).
 */
import { renameSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { loadTemplate, type LoadedTemplate } from '../template/load.js';
import type { VariableInputs } from '../template/variables.js';
import { recordingDirFor, PackageStore } from '../airgap/store.js';
import { writeBundle } from '../airgap/bundle-write.js';
import { openBundle, type OpenedBundle } from '../airgap/bundle-read.js';
import { startAirgapSession, type AirgapSession } from '../airgap/session.js';
import { packKiln } from '../airgap/kiln-pack.js';
import { cacheDirFromEnv } from './env.js';

export interface AirgapBuildArgs { record?: boolean; bundle?: string; offline?: boolean; recording?: string; sha256?: string; template?: string }

export interface PreparedAirgap {
  /** From a bundle: the template and var-files to load (inside the unpacked bundle). */
  bundle?: OpenedBundle;
  /** A bundle's outputs go where the template says, relative to the current directory instead of the template's place in the unpacked tree. */
  relocateOutputs(t: LoadedTemplate): void;
  start(t: LoadedTemplate, onFatal: (error: Error) => void, log: (message: string, level: 'info' | 'warn') => void): Promise<AirgapSession>;
}

export class AirgapUsageError extends Error {}

/** undefined when no air-gap flag was given (a normal build). */
export async function prepareAirgap(a: AirgapBuildArgs, cacheDir: string): Promise<PreparedAirgap | undefined> {
  if (a.sha256 !== undefined && !a.bundle) throw new AirgapUsageError('--sha256 pins the bundle given with --bundle\n  fix: kiln build --bundle FILE --sha256 HEX');
  if (!a.record && !a.bundle && !a.offline) return undefined;
  if (a.record && (a.bundle || a.offline)) {
    throw new AirgapUsageError('--record fetches through the network and cannot be combined with --bundle or --offline\n  fix: record on a connected machine (kiln build --record TEMPLATE), then bundle and build offline from the bundle');
  }
  if (a.bundle && a.template) {
    throw new AirgapUsageError(`give a template or --bundle, not both: the bundle carries its own template, so ${a.template} would be ignored\n  fix: kiln build --bundle ${a.bundle} (or kiln build ${a.template} without --bundle)`);
  }
  const bundle = a.bundle ? await openBundle(path.resolve(a.bundle), cacheDir, { sha256: a.sha256 }) : undefined;
  if (bundle && a.sha256 === undefined) {
    process.stderr.write(`kiln: bundle ${a.bundle} (sha256 ${bundle.sha256}) is only self-consistent: no --sha256 pin says it is the one you meant, and its template's shell-local commands run on this host\n`);
  }
  return {
    bundle,
    relocateOutputs(t) {
      if (!bundle) return;
      // What the template writes inside the tree (read-only, shared) lands in the current directory
      // instead, at its path below the deepest folder it shares with the template: out/x -> ./out/x,
      // ../output/x -> ./output/x; never above the current directory, never under the path the
      // template had on the recording machine.
      const templateDir = path.dirname(bundle.template);
      const moved = (p: string): string => {
        if (!(p + path.sep).startsWith(bundle.treeRoot + path.sep)) return p;
        let shared = templateDir;
        while (!(p + path.sep).startsWith(shared + path.sep)) shared = path.dirname(shared);
        return path.resolve(process.cwd(), path.relative(shared, p));
      };
      for (const b of t.template.builds) {
        if (b.output_directory) b.output_directory = moved(b.output_directory);
        for (const o of b.outputs) if (o.directory) o.directory = moved(o.directory);
        for (const p of b.provisioners) if (p.type === 'file' && p.direction === 'download') p.destination = moved(p.destination);
      }
    },
    async start(t, onFatal, log) {
      if (a.record) {
        const dir = a.recording ? path.resolve(a.recording) : recordingDirFor(cacheDir, t.file);
        log(`recording the guest's downloads into ${dir}`, 'info');
        return startAirgapSession({ mode: 'record', storeDir: dir, offline: false, onFatal, log });
      }
      if (bundle) log(`offline build from bundle ${a.bundle} (sha256 ${bundle.sha256}${a.sha256 ? ', as pinned' : ''}): ${bundle.unpacked ? `${bundle.manifest.members.length + 1} members verified` : 'unpacked before, reused'}, ${bundle.manifest.packages} recorded responses`, 'info');
      return startAirgapSession({
        mode: 'replay', storeDir: bundle?.manifest.packages ? bundle.packagesDir : undefined, blobsDir: bundle?.blobsDir,
        offline: Boolean(a.offline), onFatal, log,
      });
    },
  };
}

export interface BundleArgs {
  template: string; output: string; force: boolean; 'with-kiln': boolean; recording?: string;
  var?: string | string[]; 'var-file'?: string | string[];
}

const listOf = (v: string | string[] | undefined): string[] => (v === undefined ? [] : Array.isArray(v) ? v : [v]);

export async function bundleCommand(a: BundleArgs): Promise<number> {
  const cacheDir = cacheDirFromEnv();
  const varFiles = listOf(a['var-file']);
  const inputs: VariableInputs = { vars: listOf(a.var), varFiles, env: process.env };
  const t = loadTemplate(a.template, inputs, { cacheDir });
  const recordingDir = a.recording ? path.resolve(a.recording) : recordingDirFor(cacheDir, t.file);
  const recorded = new PackageStore(recordingDir).size;
  if (!recorded) process.stderr.write(`kiln bundle: no recording for ${a.template} in ${recordingDir}: the bundle holds no packages (fine for a build that fetches nothing; else run kiln build --record ${a.template} first)\n`);
  let kilnTarball: string | undefined;
  if (a['with-kiln']) {
    process.stderr.write('kiln bundle: packing kiln with its dependencies (npm pack)\n');
    kilnTarball = await packKiln(cacheDir);
  }
  const started = performance.now();
  const w = await writeBundle({ template: t, varFiles, recordingDir, kilnTarball, output: a.output, cacheDir, force: a.force });
  const mib = (statSync(w.file).size / 2 ** 20).toFixed(1);
  // Paths outside the template's folder are recorded from the inputs' common folder (from / when they
  // are far apart): say so, since a template naming them absolutely reads them from the offline host.
  const tplDir = path.posix.dirname(w.manifest.template);
  const outside = w.manifest.tree.map((e) => e.path).filter((p) => tplDir !== '.' && !p.startsWith(`${tplDir}/`));
  if (outside.length) {
    process.stderr.write(`kiln bundle: ${outside.length} input${outside.length > 1 ? 's lie' : ' lies'} outside the template's folder (${outside.slice(0, 3).join(', ')}${outside.length > 3 ? ', ...' : ''}): the bundle records ${outside.length > 1 ? 'their paths' : 'its path'} relative to ${w.root}, and an offline build reads an input the template names by an absolute path from the offline host, not from the bundle (name inputs relative to the template)\n`);
  }
  // The pin, in sha256sum's format, beside the bundle: carry it (or the printed line) separately to check the copy offline.
  const pinFile = `${w.file}.sha256`;
  writeFileSync(`${pinFile}.tmp`, `${w.sha256}  ${path.basename(w.file)}\n`);
  renameSync(`${pinFile}.tmp`, pinFile);
  process.stdout.write(`wrote ${a.output}: ${mib} MiB, ${w.members} members (${w.manifest.tree.length} input files, ${w.manifest.packages} recorded responses${kilnTarball ? ', kiln.tgz' : ''}) in ${((performance.now() - started) / 1000).toFixed(1)} s\nsha256 ${w.sha256} (also in ${a.output}.sha256)\nbuild it elsewhere with: kiln build --bundle ${path.basename(a.output)} --sha256 ${w.sha256} --offline\n`);
  return 0;
}
