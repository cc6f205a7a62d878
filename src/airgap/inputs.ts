/**
 * What a bundle must carry for a template to build elsewhere: the template, its var-files, and every
 * local file or directory its builds name (base image or ISO, SUMS files, scripts, uploaded files,
 * http_directory, cd/floppy files, playbooks...), as the template's path resolution lists them, and
 * the files named by absolute paths in qemu_args.
 */
import { readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import type { LoadedTemplate } from '../template/load.js';
import type { FieldProblem } from '../template/errors.js';
import { resolveBuildPaths } from '../template/paths.js';
import { qemuArgFiles } from './carried.js';

export interface InputFile {
  abs: string;
  executable: boolean;
  size: number;
}

function walk(p: string, out: Map<string, InputFile>): void {
  const st = statSync(p, { throwIfNoEntry: false });
  if (!st) return;
  if (st.isDirectory()) {
    for (const name of readdirSync(p).sort()) walk(path.join(p, name), out);
  } else if (st.isFile()) {
    out.set(p, { abs: p, executable: (st.mode & 0o111) !== 0, size: st.size });
  }
}

/**
 * Every local input file, sorted by path: what the template's own path resolution (template/paths.ts)
 * reports a build reads — run again on a copy of each resolved build, whose paths are absolute already.
 */
export function templateInputs(t: LoadedTemplate, varFiles: string[] = []): InputFile[] {
  const out = new Map<string, InputFile>();
  for (const b of t.template.builds) {
    const problems: FieldProblem[] = [];
    for (const input of resolveBuildPaths(structuredClone(b), [], t.dir, problems)) walk(input.path, out);
    // Files QEMU reads by the paths in qemu_args (-kernel, -initrd, -drive file=...).
    for (const f of qemuArgFiles(b.source.qemu_args)) walk(f, out);
  }
  walk(path.resolve(t.file), out);
  for (const f of varFiles) walk(path.resolve(f), out);
  return [...out.values()].sort((a, b) => (a.abs < b.abs ? -1 : a.abs > b.abs ? 1 : 0));
}

/** The deepest directory holding all of them: the bundle's tree is laid out relative to it. */
export function commonRoot(files: string[]): string {
  if (!files.length) return '/';
  let root = path.dirname(files[0]!);
  for (const f of files) {
    while (root !== '/' && !(f === root || f.startsWith(root.endsWith('/') ? root : `${root}/`)))
      root = path.dirname(root);
  }
  return root;
}
