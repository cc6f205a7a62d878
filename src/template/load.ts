/**
 * Loads a template: YAML or JSON -> variables resolved -> `${var.*}` interpolated -> schema-checked ->
 * relative paths made absolute against the template's folder and checked to exist. Every failure is a
 * TemplateError naming the file, the line, the field and the fix; nothing is created on disk.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML, { LineCounter, isMap, isScalar, isSeq, type Node } from 'yaml';
import { z } from 'zod';
import { TemplateError, problemsFromZod, type FieldProblem } from './errors.js';
import { interpolateTree, references } from './interpolate.js';
import { knownKeys, templateSchema, variableSchema, type Template } from './schema.js';
import { resolveVariables, type ResolvedVariables, type VariableInputs } from './variables.js';

export interface LoadedTemplate {
  file: string;
  dir: string;
  template: Template;
  variables: ResolvedVariables;
  /** sha256 of the template file's bytes, recorded in the manifest. */
  digest: string;
}

const isUrl = (s: string) => /^https?:\/\//.test(s);

function keysAt(p: (string | number)[]): readonly string[] | undefined {
  const names = p.filter((x): x is string => typeof x === 'string');
  const last = names.at(-1);
  if (p.length === 0) return knownKeys.template;
  if (last === 'builds' || (names.length === 1 && names[0] === 'builds')) return knownKeys.build;
  if (last === 'source') return knownKeys.source;
  if (last === 'outputs') return knownKeys.output;
  if (names[0] === 'variables') return knownKeys.variable;
  return undefined;
}

/** The line of the node at a path, or of its nearest existing parent. */
function lineOf(doc: YAML.Document, counter: LineCounter, p: (string | number)[]): number | undefined {
  for (let n = p.length; n >= 0; n--) {
    const node = doc.getIn(p.slice(0, n), true) as Node | undefined;
    if (node && (isScalar(node) || isMap(node) || isSeq(node)) && node.range) {
      // For an unknown key, point at the key itself rather than its parent map.
      if (n === p.length - 1 && isMap(node)) {
        const pair = node.items.find((it) => isScalar(it.key) && it.key.value === p[n]);
        if (pair && isScalar(pair.key) && pair.key.range) return counter.linePos(pair.key.range[0]).line;
      }
      return counter.linePos(node.range[0]).line;
    }
  }
  return undefined;
}

export function loadTemplate(file: string, inputs: VariableInputs = {}): LoadedTemplate {
  const abs = path.resolve(file);
  let text: string;
  try {
    text = readFileSync(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    throw new TemplateError(file, [{
      path: [], message: code === 'ENOENT' ? 'template file not found' : `cannot read template: ${(e as Error).message}`,
      fix: 'check the path given to kiln',
    }]);
  }
  const counter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: counter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length) {
    // Only the first: later syntax errors are usually echoes of it.
    throw new TemplateError(file, doc.errors.slice(0, 1).map((err) => ({
      path: [], line: err.linePos?.[0]?.line,
      message: `syntax error: ${err.message.split('\n')[0]}`,
      fix: 'fix the YAML/JSON syntax at that line (indentation, quotes, a missing ":")',
    })));
  }
  const raw = doc.toJS() as unknown;
  const withLines = (problems: FieldProblem[]) => problems.map((p) => ({ ...p, line: p.line ?? lineOf(doc, counter, p.path) }));
  if (raw === null || typeof raw !== 'object' || Array.isArray(raw)) {
    throw new TemplateError(file, [{ path: [], message: 'a template is a map with "builds:" (and optionally "variables:")', fix: 'see examples/tiny.yaml' }]);
  }

  // Variables first: their definitions decide how everything else is interpolated.
  const rawVars = (raw as Record<string, unknown>).variables ?? {};
  const defs = z.record(z.string().regex(/^[A-Za-z_][A-Za-z0-9_]*$/), variableSchema).safeParse(rawVars, { reportInput: true });
  if (!defs.success) {
    throw new TemplateError(file, withLines(problemsFromZod(defs.error, keysAt).map((p) => ({ ...p, path: ['variables', ...p.path] }))));
  }
  const variables = resolveVariables(defs.data, inputs, file);

  const problems: FieldProblem[] = [];
  const { variables: _defs, ...rest } = raw as Record<string, unknown>;
  const interpolated = interpolateTree(rest, { var: variables.values }, (miss) => {
    if (miss.namespace !== 'var') return;
    problems.push({
      path: miss.path, message: `undefined variable "${miss.name}"`,
      fix: `declare "${miss.name}" under "variables:" or fix the reference \${var.${miss.name}}`,
    });
  }, 'var');
  if (problems.length) throw new TemplateError(file, withLines(problems));

  const parsed = templateSchema.safeParse({ ...interpolated, variables: rawVars }, { reportInput: true });
  if (!parsed.success) throw new TemplateError(file, withLines(problemsFromZod(parsed.error, keysAt)));
  const template = parsed.data;
  const dir = path.dirname(abs);
  const resolve = (p: string) => (path.isAbsolute(p) || isUrl(p) ? p : path.resolve(dir, p));

  const names = new Set<string>();
  template.builds.forEach((b, i) => {
    if (names.has(b.name)) problems.push({ path: ['builds', i, 'name'], message: `build name "${b.name}" is used twice`, fix: 'give each build its own name' });
    names.add(b.name);
    const mustExist = (p: string, at: (string | number)[], kind: 'file' | 'dir' | 'any') => {
      if (isUrl(p)) return;
      if (!existsSync(p)) { problems.push({ path: at, message: `${p} does not exist`, fix: 'check the path (relative paths are relative to the template file)' }); return; }
      const st = statSync(p);
      if (kind === 'file' && !st.isFile()) problems.push({ path: at, message: `${p} is not a file`, fix: 'point it at a file' });
      if (kind === 'dir' && !st.isDirectory()) problems.push({ path: at, message: `${p} is not a directory`, fix: 'point it at a directory' });
    };
    const s = b.source;
    const at = ['builds', i, 'source'];
    if ((s.base_image === undefined) === (s.iso === undefined)) {
      problems.push({ path: at, message: s.iso ? 'both "base_image" and "iso" are set' : 'neither "base_image" nor "iso" is set', fix: 'give "base_image" (a bootable disk image) or "iso" (an installer, with disk_size and boot_command), not both' });
    }
    if (s.base_image !== undefined) {
      s.base_image = resolve(s.base_image);
      mustExist(s.base_image, [...at, 'base_image'], 'file');
    }
    if (s.iso !== undefined) {
      s.iso = resolve(s.iso);
      mustExist(s.iso, [...at, 'iso'], 'file');
      if (!s.disk_size) problems.push({ path: [...at, 'disk_size'], message: 'an ISO install needs a blank disk of a given size', fix: 'add disk_size, e.g. disk_size: 10G' });
      // Installers have no cloud-init datasource to read: unless asked for, no seed and no injected host key.
      const rawCloudInit = ((raw as { builds?: { source?: { cloud_init?: unknown } }[] }).builds?.[i]?.source?.cloud_init);
      if (rawCloudInit === undefined) s.cloud_init = false;
    }
    s.cd_files = s.cd_files.map((f, k) => { const r = resolve(f); mustExist(r, [...at, 'cd_files', k], 'any'); return r; });
    s.floppy_files = s.floppy_files.map((f, k) => { const r = resolve(f); mustExist(r, [...at, 'floppy_files', k], 'any'); return r; });
    if (s.checksum.startsWith('file:') && !isUrl(s.checksum.slice(5))) {
      s.checksum = `file:${resolve(s.checksum.slice(5))}`;
      mustExist(s.checksum.slice(5), ['builds', i, 'source', 'checksum'], 'file');
    }
    if (s.http_directory) {
      s.http_directory = resolve(s.http_directory);
      mustExist(s.http_directory, ['builds', i, 'source', 'http_directory'], 'dir');
    }
    if (s.communicator.type === 'ssh' && s.communicator.private_key_file) {
      s.communicator.private_key_file = resolve(s.communicator.private_key_file);
      mustExist(s.communicator.private_key_file, ['builds', i, 'source', 'communicator', 'private_key_file'], 'file');
    }
    if (s.communicator.type === 'none' && b.provisioners.some((p) => p.type === 'shell' || p.type === 'file')) {
      problems.push({ path: ['builds', i, 'source', 'communicator'], message: 'shell and file provisioners need a communicator, but it is "none"', fix: 'set communicator.type to ssh, or remove those provisioners' });
    }
    // An ISO install gets the build key through its answers file (${build.ssh_public_key}).
    if (s.cloud_init === false && s.iso === undefined && s.communicator.type === 'ssh' && !s.communicator.private_key_file && !s.communicator.password) {
      problems.push({ path: ['builds', i, 'source', 'cloud_init'], message: 'without cloud-init kiln cannot give the guest its build key', fix: 'set communicator.private_key_file or communicator.password, or enable cloud_init' });
    }
    b.output_directory = resolve(b.output_directory ?? `output/${b.name}`);
    for (const o of b.outputs) if (o.directory) o.directory = resolve(o.directory);
    b.provisioners.forEach((p, j) => {
      const at = ['builds', i, 'provisioners', j];
      if (p.type === 'shell') {
        if (p.script) { p.script = resolve(p.script); mustExist(p.script, [...at, 'script'], 'file'); }
        if (p.scripts) p.scripts = p.scripts.map((sc, k) => { const r = resolve(sc); mustExist(r, [...at, 'scripts', k], 'file'); return r; });
      } else if (p.type === 'file' && p.direction === 'upload' && p.source !== undefined) {
        p.source = resolve(p.source);
        mustExist(p.source, [...at, 'source'], 'any');
      } else if (p.type === 'file' && p.direction === 'download') {
        p.destination = resolve(p.destination);
      } else if (p.type === 'shell-local' && p.script) {
        p.script = resolve(p.script);
        mustExist(p.script, [...at, 'script'], 'file');
      }
    });
    b.post_processors.forEach((p, j) => {
      if (p.type === 'shell-local' && p.script) {
        p.script = resolve(p.script);
        mustExist(p.script, ['builds', i, 'post_processors', j, 'script'], 'file');
      }
    });
    // ${build.*} names that will exist at run time; anything else is a typo worth catching now.
    const known = new Set(['name', 'http_ip', 'http_port', 'http_url', 'ssh_public_key', 'ssh_username', 'output_dir', 'ssh_host', 'ssh_port']);
    for (const name of references(b).build) {
      if (!known.has(name)) problems.push({ path: ['builds', i], message: `unknown build value \${build.${name}}`, fix: `use one of: ${[...known].join(', ')}` });
    }
  });
  if (problems.length) throw new TemplateError(file, withLines(problems));

  return { file: abs, dir, template, variables, digest: createHash('sha256').update(text).digest('hex') };
}
