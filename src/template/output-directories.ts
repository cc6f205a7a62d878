/**
 * An output directory is kiln's to replace: `kiln build --force` swaps the old one, and everything in
 * it, for the new artifacts. So it must never be, or hold, anything kiln did not write: the template's
 * folder, the current directory, $HOME, `/`, kiln's cache, or a file the build reads. Paths are compared
 * as the file system resolves them, so neither a symbolic link nor `..` hides one inside another.
 */
import { realpathSync } from 'node:fs';
import path from 'node:path';
import { formatPath, type FieldProblem } from './errors.js';
import type { BuildConfig } from './schema.js';

/** A directory or file no output directory may be or contain, and how an error names it. */
export interface ProtectedPlace {
  path: string;
  what: string;
}

/** An input of a build as resolveBuildPaths found it: its absolute path and its field in the build. */
export interface BuildInput {
  path: string;
  field: (string | number)[];
}

/** Where `p` really is: its nearest existing ancestor with symbolic links resolved, the rest joined on. */
export function realPathOf(p: string): string {
  const missing: string[] = [];
  let existing = path.resolve(p);
  for (;;) {
    try {
      return path.join(realpathSync.native(existing), ...missing);
    } catch {
      const parent = path.dirname(existing);
      if (parent === existing) return path.resolve(p);
      missing.unshift(path.basename(existing));
      existing = parent;
    }
  }
}

const isInside = (inner: string, outer: string) => {
  const rel = path.relative(outer, inner);
  return rel === '' || (rel !== '..' && !rel.startsWith(`..${path.sep}`) && !path.isAbsolute(rel));
};

/** Places every build of a template must keep its output directories away from. */
export function protectedPlaces(
  templateDir: string,
  cwd: string,
  home: string,
  cacheDir: string,
  varFiles: readonly string[],
): ProtectedPlace[] {
  return [
    { path: templateDir, what: "the template's folder" },
    { path: cwd, what: 'the current directory' },
    { path: home, what: 'your home directory' },
    { path: cacheDir, what: "kiln's cache directory" },
    ...varFiles.map((f) => ({ path: path.resolve(f), what: 'a --var-file' })),
    { path: path.parse(path.resolve(cwd)).root, what: 'the root of the file system' },
  ];
}

/**
 * Problems with a build's output_directory and outputs[].directory (already absolute): one per field,
 * naming the first protected place it is or holds.
 */
export function outputDirectoryProblems(
  b: BuildConfig,
  at: (string | number)[],
  places: readonly ProtectedPlace[],
  inputs: readonly BuildInput[],
): FieldProblem[] {
  const all = [
    ...places,
    ...inputs.map((i) => ({ path: i.path, what: `the build's input ${formatPath(i.field)}` })),
  ].map((p) => ({ ...p, real: realPathOf(p.path) }));
  const problems: FieldProblem[] = [];
  const check = (dir: string, field: (string | number)[], consequence: string, fix: string) => {
    const real = realPathOf(dir);
    const hit = all.find((p) => p.real === real) ?? all.find((p) => isInside(p.real, real));
    if (!hit) return;
    const where = `${dir}${real === dir ? '' : ` (really ${real})`}`;
    const relation = hit.real === real ? `is ${hit.what}` : `holds ${hit.what} (${hit.path})`;
    problems.push({ path: [...at, ...field], message: `${where} ${relation}: ${consequence}`, fix });
  };
  check(
    b.output_directory,
    ['output_directory'],
    'kiln build --force replaces an output directory, and everything in it, with the artifacts',
    `give the build a directory of its own, e.g. output_directory: output/${b.name}`,
  );
  b.outputs.forEach((o, k) => {
    if (o.directory === undefined) return;
    check(
      o.directory,
      ['outputs', k, 'directory'],
      'artifacts would land among files kiln did not write, and kiln build --force replaces one of the same name',
      `remove "directory" (the artifact then goes to the build's output_directory), or give it a directory of its own, e.g. directory: output/${b.name}-${o.format}`,
    );
  });
  return problems;
}
