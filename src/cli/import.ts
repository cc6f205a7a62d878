/**
 * kiln import: a Packer template (HCL or legacy JSON) migrated to kiln YAML. Its variables stay kiln
 * variables (type, default, description; validation blocks in the description), fields that use them
 * are written as ${var.NAME} where kiln's interpolation computes the same value, and a field a Packer
 * function computes is written as its value with a comment (see template/packer/to-kiln-yaml.ts). No
 * value is needed for a required variable unless a function computes a field from it. Each field has a
 * comment naming the Packer field (file:line) it came from; paths are relative to the YAML file.
 * Secrets are not written out (issue 23): a sensitive variable becomes a kiln variable marked
 * sensitive without a default, and a value a function computes from one a variable of its own (see
 * import-secrets.ts). What is written is checked as kiln checks templates, problems told at the
 * Packer file:line.
 */
import { existsSync, renameSync, rmSync, statSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import YAML, { isMap, isScalar, isSeq, type Node } from 'yaml';
import { checkTemplate } from '../template/load.js';
import { TemplateError, maskText, type FieldProblem } from '../template/errors.js';
import { packerLines } from '../template/packer/index.js';
import { importPacker } from '../template/packer/to-kiln-yaml.js';
import { describeSecret } from '../template/packer/import-secrets.js';
import { localsByLine } from '../template/packer/import-declarations.js';
import type { VariableInputs } from '../template/variables.js';

export interface ImportOptions {
  template: string;
  output?: string;
  force?: boolean;
  inputs: VariableInputs;
  /** Packer's -only/-except (globs over full build names): which builds of a multi-builder template to write. */
  only?: string[];
  except?: string[];
}

export function importTemplate(o: ImportOptions): { yaml: string; written?: string; notes: string[] } {
  const outFile = o.output ? path.resolve(o.output) : undefined;
  const dir = outFile ? path.dirname(outFile) : process.cwd();
  if (outFile) checkOutput(outFile, o.force);
  const r = importPacker(o.template, o.inputs, { only: o.only, except: o.except, dir });
  const p = r.load;
  const secretTexts = r.secretTexts;
  const src = path.relative(dir, p.template.file) || p.template.file;
  const where = (at: { file: string; line: number }) =>
    `${at.file === p.template.file ? path.basename(src) : path.relative(dir, at.file)}:${at.line}`;
  const usedSecrets = r.secretVars.filter((v) => v.used);

  const variables: Record<string, unknown> = {};
  for (const v of r.variables) {
    const description = v.sensitive
      ? `sensitive in the Packer template (var.${v.name}${v.envDefault ? ', its default read from the environment' : ''}): give it with --var ${v.name}=..., a --var-file or KILN_VAR_${v.name}`
      : v.description;
    variables[v.name] = {
      type: v.type,
      ...(v.sensitive ? { sensitive: true } : {}),
      ...(v.default !== undefined ? { default: v.default } : {}),
      ...(description ? { description } : {}),
    };
  }
  for (const v of usedSecrets)
    if (!Object.hasOwn(variables, v.name))
      variables[v.name] = { type: v.type, sensitive: true, description: describeSecret(v, where) };
  const tree = {
    ...(r.description ? { description: r.description } : {}),
    ...(Object.keys(variables).length ? { variables } : {}),
    builds: r.builds,
  };

  const doc = new YAML.Document(tree);
  for (const v of usedSecrets.filter((x) => x.secret.kind === 'derived')) {
    const node = doc.getIn(['variables', v.name], true) as Node | undefined;
    if (node && isMap(node))
      node.commentBefore = ` TO DO: no default on purpose; kiln validate fails until ${v.name} is given (see its description)`;
  }
  /** Which kiln variables stand for a sensitive Packer variable, as the header says it. */
  const standsFor = (name: string) => {
    const own = r.variables.some((v) => v.name === name) ? [name] : [];
    const names = [
      ...new Set([
        ...own,
        ...usedSecrets
          .filter((v) => v.secret.from.includes(`var.${name}`) || v.secret.from.includes(name))
          .map((v) => v.name),
      ]),
    ];
    return names.length
      ? `<sensitive: kiln variable${names.length > 1 ? 's' : ''} ${names.join(', ')} below, without a value>`
      : '<sensitive: not used by any field>';
  };
  const kept = r.variables
    .filter((v) => !v.sensitive)
    .map((v) => `   ${v.name}${v.default === undefined ? ' (required: no default)' : ''}`);
  const sensitive = r.variables.filter((v) => v.sensitive).map((v) => `   ${v.name} = ${standsFor(v.name)}`);
  const writtenOut = r.written.map(
    (w) =>
      `   ${w.name} = ${p.template.variables.find((v) => v.name === w.name)?.sensitive ? standsFor(w.name) : JSON.stringify(w.value)} (${w.why})`,
  );
  const n = r.computed.size;
  doc.commentBefore = [
    ` Imported by "kiln import" from the Packer template ${p.template.file} (${p.template.language === 'hcl' ? 'HCL' : 'legacy JSON'}).`,
    ' A comment beside each field names the Packer field it came from.',
    ...(kept.length || sensitive.length
      ? [
          ' The Packer variables are kiln variables below (give values with --var, --var-file or KILN_VAR_<name>):',
          ...kept,
          ...maskText(sensitive.join('\n'), secretTexts).split('\n').filter(Boolean),
        ]
      : []),
    ...(writtenOut.length
      ? [
          ' Written as their values, not as kiln variables:',
          ...maskText(writtenOut.join('\n'), secretTexts).split('\n'),
        ]
      : []),
    ...(n
      ? [
          ` ${n} field${n > 1 ? 's are' : ' is'} computed by Packer functions from variables; kiln has no functions, so ${n > 1 ? 'they are' : 'it is'} written with the value${n > 1 ? 's' : ''} at import (marked "computed"): edit ${n > 1 ? 'them' : 'it'} when those variables change`,
        ]
      : []),
    ...(o.only?.length || o.except?.length
      ? [
          ` Builds imported: ${(r.builds as { name?: string }[]).map((b) => b.name).join(', ')} (${[...(o.only ?? []).map((x) => `-only=${x}`), ...(o.except ?? []).map((x) => `-except=${x}`)].join(' ')})`,
        ]
      : []),
    ...(p.mapped.notes.length ? [' Not carried over:', ...p.mapped.notes.map((x) => `   ${x}`)] : []),
  ].join('\n');
  const locals = localsByLine(o.template, r.language);
  for (const [key, origin] of p.mapped.origins) {
    const at = JSON.parse(key) as (string | number)[];
    const node = doc.getIn(at, true) as Node | undefined;
    const fromLocals = locals.get(`${origin.file}:${origin.line}`);
    const text = ` ${origin.field} (${where(origin)})${fromLocals ? `, from ${fromLocals.join(', ')}` : ''}`;
    if (node && (isScalar(node) || isMap(node) || isSeq(node))) {
      if (isScalar(node)) node.comment = text;
      else node.commentBefore = text;
    }
  }
  for (const key of r.computed) {
    const node = doc.getIn(JSON.parse(key) as (string | number)[], true) as Node | undefined;
    const text = ' computed by a Packer function from variables: the value at import; edit it when they change';
    if (node && isScalar(node)) node.comment = node.comment ? `${node.comment};${text}` : text;
    else if (node && (isMap(node) || isSeq(node))) node.commentBefore = text;
  }
  const yaml = doc.toString({ lineWidth: 0 });
  check(
    r,
    tree,
    yaml,
    outFile ?? path.join(dir, `${path.basename(o.template).replace(/\.(pkr\.hcl|pkr\.json|json|hcl)$/, '')}.yaml`),
    usedSecrets.map((v) => `${v.name}=${v.secret.text}`),
  );
  if (!outFile) return { yaml, notes: p.mapped.notes };
  // Written beside, then renamed: a failed write leaves no half-written file.
  const tmp = `${outFile}.kiln-import-${process.pid}`;
  try {
    writeFileSync(tmp, yaml, { flag: 'wx' });
    renameSync(tmp, outFile);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw new TemplateError(outFile, [
      {
        path: [],
        message: `cannot write it: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message} in ${path.dirname(outFile)}`,
        fix: 'choose an -o in a folder you can write to',
      },
    ]);
  }
  return { yaml, written: outFile, notes: p.mapped.notes };
}

/**
 * What kiln writes must be a template kiln accepts: checked in memory with the variables' values (a
 * variable without one: a stand-in, and the fields using it are not judged), each problem told at the
 * Packer file:line it came from, never at a file that does not exist.
 */
function check(
  r: ReturnType<typeof importPacker>,
  tree: Record<string, unknown>,
  yaml: string,
  yamlFile: string,
  secretVars: string[],
): void {
  const vars = [...Object.entries(r.checkValues).map(([k, v]) => `${k}=${v}`), ...secretVars];
  const usesUnknown = (v: unknown): boolean =>
    typeof v === 'string'
      ? r.unknown.some((n) => new RegExp(`\\$\\{\\s*var\\.${n}\\s*\\}`).test(v))
      : Array.isArray(v)
        ? v.some(usesUnknown)
        : v && typeof v === 'object'
          ? Object.values(v).some(usesUnknown)
          : false;
  const valueAt = (at: (string | number)[]) =>
    at.reduce<unknown>((o, k) => (o && typeof o === 'object' ? (o as Record<string, unknown>)[k] : undefined), tree);
  const judged = (p: FieldProblem) => !/KlnV\d+x\d+Q|kilnv[a-z]{4}/.test(p.message) && !usesUnknown(valueAt(p.path));
  try {
    checkTemplate(
      yamlFile,
      yaml,
      structuredClone(tree),
      packerLines(r.load.mapped, r.load.template.file),
      { vars, env: {} },
      { secrets: r.secretTexts },
    );
  } catch (e) {
    if (!(e instanceof TemplateError)) throw e;
    const problems = e.problems.filter(judged);
    if (!problems.length) return;
    throw new TemplateError(
      r.load.template.file,
      problems.map((p) => ({
        ...p,
        message: `${maskText(p.message, r.secretTexts)} (in the kiln template import would write; nothing was written)`,
        ...(p.fix ? { fix: maskText(p.fix, r.secretTexts) } : {}),
      })),
    );
  }
}

/** The -o file's folder must exist (kiln does not create it) and the file must not, unless --force. */
function checkOutput(outFile: string, force?: boolean): void {
  const folder = path.dirname(outFile);
  let isDir = false;
  try {
    isDir = statSync(folder).isDirectory();
  } catch {
    /* reported below */
  }
  if (!isDir) {
    throw new TemplateError(outFile, [
      {
        path: [],
        message: `the folder ${folder} does not exist${existsSync(folder) ? ' as a folder' : ''}, so the imported template cannot be written there`,
        fix: `create it first (mkdir -p ${folder}), or choose another -o`,
      },
    ]);
  }
  if (existsSync(outFile) && !force)
    throw new TemplateError(outFile, [
      { path: [], message: 'the file exists already', fix: 'choose another -o, or add --force to replace it' },
    ]);
}
