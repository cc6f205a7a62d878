/**
 * kiln import: a Packer template (HCL or legacy JSON) written out as the equivalent kiln YAML, each
 * field with a comment saying which Packer field (file:line) it came from. Paths are written relative
 * to the YAML file. Secrets are not written out: a sensitive variable (each element of a sensitive
 * list or map, a number too, and a variable whose default reads env()) becomes a kiln variable marked
 * sensitive, without a default, to be given with --var (or KILN_VAR_<name>). A value computed from one
 * by a function (base64encode(var.pw)), which a kiln template cannot compute, becomes a variable of its
 * own with a comment saying what to give; until it is given, kiln validate fails.
 */
import { existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML, { isMap, isScalar, isSeq, type Node } from 'yaml';
import { loadTemplate } from '../template/load.js';
import { TemplateError, maskText } from '../template/errors.js';
import { readPackerTemplate } from '../template/packer/index.js';
import type { VariableInputs } from '../template/variables.js';
import type { PackerSecret, PackerTemplate } from '../template/packer/model.js';
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

/** A kiln variable standing for a secret, and the text it replaces in the imported fields. */
interface SecretVariable { name: string; secret: PackerSecret; type: 'string' | 'number'; used: boolean }

/**
 * The kiln variables for a template's secrets. A sensitive variable's own texts come first (longest
 * first, so a secret holding another goes whole); then values derived from them, unless the derived
 * text is the secret with plain text around it (format("x-%s", var.pw)), which ${var.pw} expresses.
 * Values read by file() stay as they are: they are the template's files (user-data...), not secrets.
 */
function secretVariables(t: PackerTemplate): SecretVariable[] {
  const taken = new Set(t.variables.map((v) => v.name));
  const own = t.secrets.filter((s) => s.kind === 'variable');
  const plain = (text: string) => [...own].sort((a, b) => b.text.length - a.text.length).reduce((x, s) => (s.text.length >= 3 ? x.split(s.text).join('') : x), text);
  const derived = t.secrets.filter((s) => s.kind === 'derived' && plain(s.text) === s.text);
  const out: SecretVariable[] = [];
  const names = new Set<string>();
  const unique = (want: string) => { let name = want; for (let n = 2; names.has(name); n++) name = `${want}_${n}`; names.add(name); return name; };
  for (const s of [...own].sort((a, b) => b.text.length - a.text.length)) out.push({ name: unique(s.name), secret: s, type: s.number ? 'number' : 'string', used: false });
  for (const s of derived) {
    const from = kilnVar(s.from[0] ?? 'secret');
    const want = `${from}_for_${s.name}`;
    out.push({ name: unique(taken.has(want) ? `${want}_value` : want), secret: s, type: s.number ? 'number' : 'string', used: false });
  }
  return out;
}

const kilnVar = (ref: string) => ref.replace(/^var\./, '').replace(/^local\./, 'local_').replace(/[^A-Za-z0-9_]/g, '_');

/**
 * Replaces each secret in the fields with ${var.NAME}: a whole value of any length (a sensitive "22"
 * too, kept a number), and inside longer strings a secret of 3 characters or more (a shorter one would
 * match ordinary text).
 */
function hideSecrets(node: unknown, vars: SecretVariable[]): unknown {
  if (typeof node === 'string' || typeof node === 'number') {
    const whole = vars.find((v) => v.secret.text === String(node));
    if (whole) { whole.used = true; if (typeof node === 'number') whole.type = 'number'; return `\${var.${whole.name}}`; }
    if (typeof node === 'number') return node;
    let s = node;
    for (const v of vars) {
      if (v.secret.text.length < 3 || !s.includes(v.secret.text)) continue;
      v.used = true;
      s = s.split(v.secret.text).join(`\${var.${v.name}}`);
    }
    return s;
  }
  if (Array.isArray(node)) return node.map((v) => hideSecrets(v, vars));
  if (node && typeof node === 'object') return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, hideSecrets(v, vars)]));
  return node;
}

/** What the user must give for a secret's kiln variable, and why it is not written out. */
function describeSecret(v: SecretVariable, where: (at: { file: string; line: number }) => string): string {
  const s = v.secret;
  if (s.kind === 'variable') return `sensitive in the Packer template (${s.from[0]}): give it with --var ${v.name}=..., a --var-file or KILN_VAR_${v.name}`;
  return `computed in the Packer template from ${s.from.join(', ')}${s.at ? ` at ${where(s.at)}` : ''}; a kiln template has no functions: give the computed value with --var ${v.name}=..., a --var-file or KILN_VAR_${v.name}`;
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
  if (outFile) checkOutput(outFile, o.force);
  const src = path.relative(dir, p.template.file) || p.template.file;
  const where = (at: { file: string; line: number }) => `${at.file === p.template.file ? path.basename(src) : path.relative(dir, at.file)}:${at.line}`;
  const secretVars = secretVariables(p.template);
  const body = hideSecrets(relativize(escapeOwnSyntax(p.mapped.raw), dir), secretVars) as Record<string, unknown>;
  const used = secretVars.filter((v) => v.used);
  const variables: Record<string, unknown> = {};
  for (const v of used) variables[v.name] = { type: v.type, sensitive: true, description: describeSecret(v, where) };
  const tree = { ...(body.description ? { description: body.description } : {}), ...(used.length ? { variables } : {}), builds: body.builds };

  const doc = new YAML.Document(tree);
  for (const v of used.filter((x) => x.secret.kind === 'derived')) {
    const node = doc.getIn(['variables', v.name], true) as Node | undefined;
    if (node && isMap(node)) node.commentBefore = ` TO DO: no default on purpose; kiln validate fails until ${v.name} is given (see its description)`;
  }
  /** Which kiln variables now stand for a Packer variable, as the header says it. */
  const standsFor = (name: string) => {
    const names = used.filter((v) => v.secret.from.includes(`var.${name}`) || v.secret.from.includes(name)).map((v) => v.name);
    return names.length ? `<sensitive: kiln variable${names.length > 1 ? 's' : ''} ${names.join(', ')} below, without a value>` : '<sensitive: not used by any field>';
  };
  const secretTexts = p.template.secrets.map((s) => s.text);
  doc.commentBefore = ` Imported by "kiln import" from the Packer template ${p.template.file} (${p.template.language === 'hcl' ? 'HCL' : 'legacy JSON'}).\n`
    + ' Variables were resolved with the values below; a comment beside each field names the Packer field it came from.\n'
    + maskText(p.template.variables.filter((v) => !v.name.startsWith('local.')).map((v) => `   ${v.name} = ${v.sensitive ? standsFor(v.name) : JSON.stringify(v.value)} (${v.from})`).join('\n'), secretTexts)
    + (p.mapped.notes.length ? `\n Not carried over:\n${p.mapped.notes.map((n) => `   ${n}`).join('\n')}` : '');
  for (const [key, origin] of p.mapped.origins) {
    const at = JSON.parse(key) as (string | number)[];
    const node = doc.getIn(at, true) as Node | undefined;
    const text = ` ${origin.field} (${where(origin)})`;
    if (node && (isScalar(node) || isMap(node) || isSeq(node))) {
      if (isScalar(node)) node.comment = text; else node.commentBefore = text;
    }
  }
  const yaml = doc.toString({ lineWidth: 0 });
  if (!outFile) return { yaml, notes: p.mapped.notes };
  // Written beside, then renamed: a failed import leaves no half-written file.
  const tmp = `${outFile}.kiln-import-${process.pid}`;
  try {
    writeFileSync(tmp, yaml, { flag: 'wx' });
  } catch (e) {
    throw new TemplateError(outFile, [{ path: [], message: `cannot write it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} in ${path.dirname(outFile)}`, fix: 'choose an -o in a folder you can write to' }]);
  }
  try {
    // What kiln writes must be a template kiln accepts (the secrets' variables have no value yet).
    loadTemplate(tmp, { vars: used.map((v) => `${v.name}=${v.secret.text}`), env: {} });
    renameSync(tmp, outFile);
  } catch (e) {
    rmSync(tmp, { force: true });
    // Named as the file it would have been, not the temporary one; kiln wrote nothing.
    if (e instanceof TemplateError) throw new TemplateError(outFile, maskProblemsNamed(e, tmp, outFile, secretTexts));
    throw e;
  }
  return { yaml, written: outFile, notes: p.mapped.notes };
}

/** The -o file's folder must exist (kiln does not create it) and the file must not, unless --force. */
function checkOutput(outFile: string, force?: boolean): void {
  const folder = path.dirname(outFile);
  let isDir = false;
  try { isDir = statSync(folder).isDirectory(); } catch { /* reported below */ }
  if (!isDir) {
    throw new TemplateError(outFile, [{ path: [], message: `the folder ${folder} does not exist${existsSync(folder) ? ' as a folder' : ''}, so the imported template cannot be written there`, fix: `create it first (mkdir -p ${folder}), or choose another -o` }]);
  }
  if (existsSync(outFile) && !force) throw new TemplateError(outFile, [{ path: [], message: 'the file exists already', fix: 'choose another -o, or add --force to replace it' }]);
}

/** A check's problems about the temporary file, told about the -o file, secrets masked. */
function maskProblemsNamed(e: TemplateError, tmp: string, outFile: string, secrets: string[]) {
  return e.problems.map((p) => ({ ...p, message: `${maskText(p.message.split(tmp).join(outFile), secrets)} (in the template kiln import would write; nothing was written)`, ...(p.fix ? { fix: maskText(p.fix, secrets) } : {}) }));
}
