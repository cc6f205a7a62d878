/**
 * A bundle's template, loaded for an offline build: the bundle verified and unpacked (bundle-read.ts),
 * its template loaded with the `--var` values stored at bundle time (the caller's own come after and
 * win), every input the template named by an absolute path on the recording machine read from the
 * bundle's copy, base images and ISOs that were URLs taken from the bundle by digest, files named in
 * qemu_args likewise, and what the template writes inside its tree moved to the current directory.
 */
import { existsSync, lstatSync, realpathSync } from 'node:fs';
import path from 'node:path';
import { loadTemplate, type LoadedTemplate } from '../template/load.js';
import { mediaOf } from '../template/schema.js';
import { openBundle, type OpenedBundle } from './bundle-read.js';
import { mapQemuArgPaths } from './carried.js';
import { kindOf } from '../template/provisioner-kinds/index.js';

export interface LoadBundleOptions {
  /** The bundle's expected SHA-256 (what kiln bundle printed): a different bundle is refused before anything in it is read. */
  sha256?: string;
  /** Where the bundle is unpacked (and the layer cache the build uses). */
  cacheDir: string;
  /** name=value, after the values the bundle stores (so these win). */
  vars?: string[];
  /** After the bundle's own var-files. */
  varFiles?: string[];
  /** KILN_VAR_* are read from here (default: none). */
  env?: NodeJS.ProcessEnv;
  only?: string[];
  /** Where outputs the template writes inside its tree land (default: process.cwd()). */
  cwd?: string;
}

export interface LoadedBundle extends Omit<OpenedBundle, 'template'> {
  /** The bundle file, as given. */
  file: string;
  /** Whether a sha256 pin was given and matched (false: the bundle is only self-consistent). */
  pinned: boolean;
  /** The template to build (build(bundle.template, { bundle })). */
  template: LoadedTemplate;
  /** The template's file inside the unpacked tree. */
  templateFile: string;
}

export async function loadBundle(file: string, o: LoadBundleOptions): Promise<LoadedBundle> {
  const opened = await openBundle(path.resolve(file), o.cacheDir, { sha256: o.sha256 });
  const map = carriedPathMap(opened);
  const t = loadTemplate(
    opened.template,
    {
      vars: [...(opened.manifest.vars ?? []), ...(o.vars ?? [])],
      varFiles: [...opened.varFiles, ...(o.varFiles ?? [])],
      env: o.env ?? {},
    },
    { cacheDir: o.cacheDir, only: o.only, mapPath: map },
  );
  relocateOutputs(t, opened, o.cwd ?? process.cwd());
  useCarriedDownloads(t, opened);
  for (const b of t.template.builds) b.source.qemu_args = mapQemuArgPaths(b.source.qemu_args, map);
  const { template: templateFile, ...rest } = opened;
  return { ...rest, file, pinned: o.sha256 !== undefined, template: t, templateFile };
}

/**
 * An absolute path the template names on the recording machine (under the manifest's root) -> the
 * bundle's copy, when the bundle carries that file or folder; anything else is left as it is.
 */
export function carriedPathMap(b: Pick<OpenedBundle, 'manifest' | 'treeRoot'>): (p: string) => string {
  const root = b.manifest.root;
  if (!root) return (p) => p;
  let realTree: string | undefined;
  return (p) => {
    if (!path.isAbsolute(p)) return p;
    const abs = path.resolve(p);
    if (abs === b.treeRoot || abs.startsWith(b.treeRoot + path.sep)) return p;
    if (!(abs === root || abs.startsWith(root === '/' ? '/' : root + '/'))) return p;
    const candidate = path.join(b.treeRoot, path.relative(root, abs));
    try {
      realTree ??= realpathSync(b.treeRoot);
      lstatSync(candidate);
      const real = realpathSync(candidate);
      // Never out of the tree, whatever the path says.
      if (real !== realTree && !real.startsWith(realTree + path.sep)) return p;
      return candidate;
    } catch {
      return p;
    }
  };
}

/** Base images and ISOs the template gives as URLs: the bundle's copy, checked by its digest (the bundle verified it). */
function useCarriedDownloads(t: LoadedTemplate, b: OpenedBundle): void {
  for (const build of t.template.builds) {
    const s = build.source;
    for (const field of ['base_image', 'iso'] as const) {
      const url = s[field];
      const d = url === undefined ? undefined : b.manifest.downloads?.find((x) => x.url === url);
      if (!d) continue;
      const blob = path.join(b.blobsDir, d.sha256);
      if (!existsSync(blob)) continue;
      s[field] = blob;
      // The recording machine checked the download against "checksum"; the bundle carries it by SHA-256.
      s.checksum = `sha256:${d.sha256}`;
    }
    // What the build boots is read from media (fetch base image, layer keys): it must name the bundle's copy too,
    // or an offline build goes back to the URL.
    s.media = mediaOf(s);
  }
}

/**
 * What the template writes inside the tree (read-only, shared) lands in `cwd` instead, at its path
 * below the deepest folder it shares with the template: out/x -> ./out/x, ../output/x -> ./output/x;
 * never above `cwd`, never under the path the template had on the recording machine.
 */
export function relocateOutputs(t: LoadedTemplate, b: Pick<OpenedBundle, 'template' | 'treeRoot'>, cwd: string): void {
  const templateDir = path.dirname(b.template);
  const moved = (p: string): string => {
    if (!(p + path.sep).startsWith(b.treeRoot + path.sep)) return p;
    let shared = templateDir;
    while (!(p + path.sep).startsWith(shared + path.sep)) shared = path.dirname(shared);
    return path.resolve(cwd, path.relative(shared, p));
  };
  for (const build of t.template.builds) {
    if (build.output_directory) build.output_directory = moved(build.output_directory);
    for (const out of build.outputs) if (out.directory) out.directory = moved(out.directory);
    // What a provisioner writes on the host (a file download's destination) is the path its kind only `resolve`s; what it reads stays.
    for (const p of build.provisioners) kindOf(p).resolvePaths(p, { existing: (written) => written, resolve: moved });
  }
}
