/**
 * Every local path a template names is resolved against the template's own directory and, when kiln
 * will read it, checked to exist now: a missing script must fail `kiln validate` and stop `kiln build`
 * before anything is created, not an hour into the build.
 */
import { existsSync, statSync } from 'node:fs';
import path from 'node:path';
import type { FieldProblem } from './errors.js';
import type { BuildInput } from './output-directories.js';
import type { BuildConfig } from './schema.js';
import { kindOf } from './provisioner-kinds/index.js';
import { isHttpUrl } from '../util/url.js';

type Kind = 'file' | 'dir' | 'any';

/**
 * Resolves a build's paths in place (to absolute ones) and reports those that must exist but do not.
 * Returns the local files and directories the build reads, which no output directory may hold.
 */
export function resolveBuildPaths(
  b: BuildConfig,
  at: (string | number)[],
  dir: string,
  problems: FieldProblem[],
  mapPath: (p: string) => string = (p) => p,
): BuildInput[] {
  const inputs: BuildInput[] = [];
  const resolve = (p: string) => (path.isAbsolute(p) || isHttpUrl(p) ? p : path.resolve(dir, p));
  const existing = (written: string, field: (string | number)[], kind: Kind): string => {
    const resolved = isHttpUrl(written) ? written : mapPath(resolve(written));
    if (isHttpUrl(resolved)) return resolved;
    const problem = missing(written, resolved, dir, kind);
    if (problem) problems.push({ path: [...at, ...field], ...problem });
    else inputs.push({ path: resolved, field });
    return resolved;
  };

  const s = b.source;
  if (s.base_image !== undefined) s.base_image = existing(s.base_image, ['source', 'base_image'], 'file');
  if (s.iso !== undefined) s.iso = existing(s.iso, ['source', 'iso'], 'file');
  s.cd_files = s.cd_files.map((f, k) => existing(f, ['source', 'cd_files', k], 'any'));
  s.floppy_files = s.floppy_files.map((f, k) => existing(f, ['source', 'floppy_files', k], 'any'));
  if (s.checksum.startsWith('file:') && !isHttpUrl(s.checksum.slice(5)))
    s.checksum = `file:${existing(s.checksum.slice(5), ['source', 'checksum'], 'file')}`;
  if (s.firmware.endsWith('.json')) s.firmware = existing(s.firmware, ['source', 'firmware'], 'file');
  if (s.secure_boot) {
    const k = s.secure_boot.keys;
    k.pk = existing(k.pk, ['source', 'secure_boot', 'keys', 'pk'], 'file');
    k.kek = k.kek.map((f, i) => existing(f, ['source', 'secure_boot', 'keys', 'kek', i], 'file'));
    k.db = k.db.map((f, i) => existing(f, ['source', 'secure_boot', 'keys', 'db', i], 'file'));
  }
  if (s.http_directory) s.http_directory = existing(s.http_directory, ['source', 'http_directory'], 'dir');
  if (s.communicator.type === 'ssh' && s.communicator.private_key_file) {
    s.communicator.private_key_file = existing(
      s.communicator.private_key_file,
      ['source', 'communicator', 'private_key_file'],
      'file',
    );
  }

  if (b.sign) b.sign.key = existing(b.sign.key, ['sign', 'key'], 'file');
  b.output_directory = resolve(b.output_directory ?? `output/${b.name}`);
  b.outputs.forEach((o, j) => {
    if (o.directory) o.directory = resolve(o.directory);
    if (o.include) o.include = o.include.map((f, k) => existing(f, ['outputs', j, 'include', k], 'file'));
  });
  b.provisioners.forEach((p, j) =>
    kindOf(p).resolvePaths(p, {
      existing: (written, field, kind) => existing(written, ['provisioners', j, ...field], kind),
      resolve,
    }),
  );
  b.post_processors.forEach((p, j) => {
    if (p.type === 'shell-local' && p.script) p.script = existing(p.script, ['post_processors', j, 'script'], 'file');
  });
  return inputs;
}

function missing(written: string, resolved: string, dir: string, kind: Kind): Omit<FieldProblem, 'path'> | undefined {
  if (!written.trim())
    return {
      message: 'the path is empty',
      fix: `give the path of the ${kind === 'dir' ? 'directory' : 'file'}, or remove the field`,
    };
  const where = written === resolved ? '' : ` (resolved relative to the template's directory ${dir}: ${resolved})`;
  if (!existsSync(resolved)) {
    return {
      message: `path ${written} does not exist${where}`,
      fix: `correct the path, or create the ${kind === 'dir' ? 'directory' : 'file'}`,
    };
  }
  const st = statSync(resolved);
  if (kind === 'file' && !st.isFile())
    return { message: `path ${written} is not a file${where}`, fix: 'point it at a file' };
  if (kind === 'dir' && !st.isDirectory())
    return { message: `path ${written} is not a directory${where}`, fix: 'point it at a directory' };
  return undefined;
}
