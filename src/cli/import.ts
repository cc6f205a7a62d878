/**
 * kiln import: a Packer template (HCL or legacy JSON) written out as the equivalent kiln YAML, each
 * field with a comment saying which Packer field (file:line) it came from. Paths are written relative
 * to the YAML file. Sensitive variables are not written out: they become kiln variables marked
 * sensitive, without a default, to be given with --var (or KILN_VAR_<name>).
 */
import { existsSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML, { isMap, isScalar, isSeq, type Node } from 'yaml';
import { loadTemplate } from '../template/load.js';
import { TemplateError } from '../template/errors.js';
import { readPackerTemplate } from '../template/packer/index.js';
import type { VariableInputs } from '../template/variables.js';
import { hasUrlScheme } from '../util/url.js';

export interface ImportOptions { template: string; output?: string; force?: boolean; inputs: VariableInputs }

const pathKeys = new Set(['base_image', 'iso', 'http_directory', 'private_key_file', 'output_directory', 'source', 'script', 'playbook_file', 'playbook_dir', 'manifest_file', 'hiera_config_path', 'inventory_directory']);

/** A path relative to the YAML's folder when it is near (the files can move together), else absolute. */
function near(dir: string, p: string): string {
  const rel = path.relative(dir, p) || '.';
  return rel.startsWith(`..${path.sep}..${path.sep}`) ? p : rel;
}

/** Absolute paths made relative to the YAML's folder where they are near it. */
function relativize(node: unknown, dir: string, key?: string): unknown {
  if (typeof node === 'string') {
    if (key && (pathKeys.has(key) || key === 'scripts' || key === 'cd_files' || key === 'floppy_files' || key === 'module_paths') && path.isAbsolute(node) && !hasUrlScheme(node)) return near(dir, node);
    if (key === 'checksum' && node.startsWith('file:/')) return `file:${near(dir, node.slice(5))}`;
    return node;
  }
  if (Array.isArray(node)) return node.map((v) => relativize(v, dir, key));
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, relativize(v, dir, k)]));
  return node;
}

/** Replaces a sensitive value wherever it appears with ${var.NAME}, so the YAML never holds it. */
function hideSecrets(node: unknown, secrets: [string, string][]): unknown {
  if (typeof node === 'string') {
    let s = node;
    for (const [name, value] of secrets) s = s.split(value).join(`\${var.${name}}`);
    return s;
  }
  if (Array.isArray(node)) return node.map((v) => hideSecrets(v, secrets));
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, hideSecrets(v, secrets)]));
  return node;
}

/** Literal "${var." or "${build." in a Packer value would be read by kiln's interpolation: escape "$${var.". */
function escapeOwnSyntax(node: unknown): unknown {
  if (typeof node === 'string') return node.replace(/\$\{(\s*var\.)/g, '$${$1');
  if (Array.isArray(node)) return node.map(escapeOwnSyntax);
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, escapeOwnSyntax(v)]));
  return node;
}

export function importTemplate(o: ImportOptions): { yaml: string; written?: string; notes: string[] } {
  const p = readPackerTemplate(o.template, o.inputs);
  const outFile = o.output ? path.resolve(o.output) : undefined;
  const dir = outFile ? path.dirname(outFile) : process.cwd();
  const secrets: [string, string][] = p.template.variables
    .filter((v) => v.sensitive && (typeof v.value === 'string' || typeof v.value === 'number') && String(v.value).length >= 3)
    .map((v) => [v.name.replace(/^local\./, 'local_').replace(/[^A-Za-z0-9_]/g, '_'), String(v.value)]);
  const variables: Record<string, unknown> = {};
  for (const [name] of secrets) variables[name] = { type: 'string', sensitive: true, description: `sensitive in the Packer template: give it with --var ${name}=... or KILN_VAR_${name}` };
  const body = hideSecrets(relativize(escapeOwnSyntax(p.mapped.raw), dir), secrets) as Record<string, unknown>;
  const tree = { ...(body.description ? { description: body.description } : {}), ...(secrets.length ? { variables } : {}), builds: body.builds };

  const doc = new YAML.Document(tree);
  const src = path.relative(dir, p.template.file) || p.template.file;
  doc.commentBefore = ` Imported by "kiln import" from the Packer template ${p.template.file} (${p.template.language === 'hcl' ? 'HCL' : 'legacy JSON'}).\n`
    + ' Variables were resolved with the values below; a comment beside each field names the Packer field it came from.\n'
    + p.template.variables.filter((v) => !v.name.startsWith('local.')).map((v) => `   ${v.name} = ${v.sensitive ? '<sensitive: a kiln variable below>' : JSON.stringify(v.value)} (${v.from})`).join('\n')
    + (p.mapped.notes.length ? `\n Not carried over:\n${p.mapped.notes.map((n) => `   ${n}`).join('\n')}` : '');
  for (const [key, origin] of p.mapped.origins) {
    const at = JSON.parse(key) as (string | number)[];
    const node = doc.getIn(at, true) as Node | undefined;
    const where = `${origin.file === p.template.file ? path.basename(src) : path.relative(dir, origin.file)}:${origin.line}`;
    const text = ` ${origin.field} (${where})`;
    if (node && (isScalar(node) || isMap(node) || isSeq(node))) {
      if (isScalar(node)) node.comment = text; else node.commentBefore = text;
    }
  }
  const yaml = doc.toString({ lineWidth: 0 });
  if (!outFile) return { yaml, notes: p.mapped.notes };
  if (existsSync(outFile) && !o.force) throw new TemplateError(outFile, [{ path: [], message: 'the file exists already', fix: 'choose another -o, or add --force to replace it' }]);
  // Written beside, then renamed: a failed import leaves no half-written file.
  const tmp = `${outFile}.kiln-import-${process.pid}`;
  writeFileSync(tmp, yaml);
  try {
    // What kiln writes must be a template kiln accepts (the sensitive variables have no value yet).
    loadTemplate(tmp.endsWith('.yaml') ? tmp : tmp, { vars: secrets.map(([n, v]) => `${n}=${v}`), env: {} });
    renameSync(tmp, outFile);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw e;
  }
  return { yaml, written: outFile, notes: p.mapped.notes };
}
