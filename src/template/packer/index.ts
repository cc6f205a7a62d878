/**
 * Packer templates in kiln: recognised by name and content, read (HCL or legacy JSON), mapped onto
 * kiln's fields, and then held to every check a kiln YAML template gets (checkTemplate in load.ts).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { TemplateError, maskTemplateError, maskText, type FieldProblem } from '../errors.js';
import type { VariableInputs } from '../variables.js';
import { HclError } from './hcl.js';
import { fileReadNote, type FileRead } from './eval.js';
import { globMatch, loadHclTemplate } from './hcl-template.js';
import { loadJsonTemplate } from './json-template.js';
import { mapTemplate, type MappedTemplate } from './mapping.js';
import { PackerTemplateError, formatPackerProblem, type PackerSecret, type PackerTemplate } from './model.js';

/** A Packer template, by name (*.pkr.hcl, *.pkr.json, a folder of *.pkr.hcl) or content (JSON with "builders"). */
export function isPackerTemplate(file: string): boolean {
  const abs = path.resolve(file);
  let isDir = false;
  try { isDir = statSync(abs).isDirectory(); } catch { return /\.pkr\.(hcl|json)$/.test(abs); }
  if (isDir) return true;
  if (/\.pkr\.(hcl|json)$/.test(abs) || /\.pkrvars\.hcl$/.test(abs)) return true;
  if (/\.hcl$/.test(abs)) return true;
  if (/\.json$/.test(abs)) {
    try {
      const data = JSON.parse(readFileSync(abs, 'utf8')) as unknown;
      return typeof data === 'object' && data !== null && !Array.isArray(data) && Object.hasOwn(data, 'builders');
    } catch { return false; }
  }
  return false;
}

/** `secrets`: the texts never to print (the template's secrets' texts, short ones included for exact matches). */
export interface PackerLoad {
  template: PackerTemplate; mapped: MappedTemplate; secrets: string[];
  /** Warnings for files read outside the template's folder (also in mapped.notes), for later errors to repeat. */
  outsideReads: string[];
}

/** A PackerTemplateError or HclError as kiln's TemplateError, naming file:line, the Packer field and the fix. */
export function asTemplateError(e: unknown, file: string): unknown {
  if (e instanceof HclError) return new TemplateError(e.file, [{ path: [], line: e.pos.line, message: `${e.problem} (column ${e.pos.column})`, fix: e.fix }]);
  if (e instanceof PackerTemplateError) {
    const first = e.problems[0]?.at?.file ?? file;
    // The Packer field stands where a kiln path would: "file:line: qemu.a: vtpm: message".
    return new TemplateError(first, e.problems.map((p) => ({
      path: p.field && !(p.at && p.at.file !== first) ? [p.field] : [], line: p.at?.file === first ? p.at.line : undefined,
      message: p.at && p.at.file !== first ? formatPackerProblem({ ...p, fix: undefined }) : p.message, fix: p.fix,
    })));
  }
  return e;
}

export function readPackerTemplate(file: string, inputs: VariableInputs, only?: string[]): PackerLoad {
  const abs = path.resolve(file);
  // file() & co. reading outside the template's folder: allowed (as Packer does) but said, even on failure.
  const outside: string[] = [];
  const onFileRead = (r: FileRead) => { const n = fileReadNote(r); if (r.outside && !outside.includes(n)) outside.push(n); };
  // Filled in while the template is read: an error thrown half-way is masked with what is known by then.
  const found: PackerSecret[] = [];
  const texts = () => [...new Set(found.map((s) => s.text))];
  try {
    if (!existsSync(abs)) throw new PackerTemplateError([{ message: `${abs}: template file not found`, fix: 'check the path given to kiln' }]);
    // *.pkr.json is HCL's JSON syntax; other *.json with "builders" is Packer's legacy JSON.
    const isJson = /\.json$/.test(abs) && !/\.pkr\.json$/.test(abs) && !statSync(abs).isDirectory();
    const template = isJson ? loadJsonTemplate(abs, inputs, found) : loadHclTemplate(abs, { ...inputs, onFileRead }, found);
    const selected = (name: string) => !only?.length || only.some((o) => globMatch(o, name));
    const refused = template.refused.filter((r) => selected(r.fullName));
    if (refused.length) {
      const qemu = template.builds.map((b) => b.fullName);
      throw new PackerTemplateError(refused.map((r) => ({
        at: r.at, field: r.fullName, message: r.type === 'null'
          // issue 25: a null build makes no machine, and everything a kiln build is (layers, artifacts, manifest) describes one.
          ? 'the "null" builder makes no machine (it only runs shell-local steps), and a kiln build is a VM image: there is nothing for kiln to build'
          : `kiln builds with QEMU only; the "${r.type}" builder is not supported`,
        fix: qemu.length ? `build the QEMU sources only: -only=${qemu.join(',')}` : r.type === 'null' ? 'run those commands without kiln (or as a shell-local post-processor of a QEMU build)' : 'kiln runs the qemu builder; this template has none',
      })));
    }
    // The builds -only leaves out are not checked either (a template's builders often share an output
    // directory, run one at a time with -only), as Packer validates the selected builds only.
    const kept = template.builds.filter((b) => selected(b.fullName));
    if (only?.length && kept.length) template.builds = kept;
    const mapped = mapTemplate(template);
    mapped.notes.unshift(...outside);
    if (mapped.problems.length) throw new PackerTemplateError(mapped.problems);
    // Notes are printed before a build: they name fields, and must not quote a secret either.
    mapped.notes = mapped.notes.map((n) => maskText(n, texts()));
    return { template, mapped, secrets: texts(), outsideReads: outside };
  } catch (e) {
    const err = asTemplateError(e, abs);
    const withNotes = err instanceof TemplateError && outside.length ? new TemplateError(err.file, [...err.problems, ...outside.map((n) => ({ path: [], message: `note: ${n}` }))]) : err;
    throw withNotes instanceof TemplateError ? maskTemplateError(withNotes, texts()) : withNotes;
  }
}

/** The Packer file:line and field of a kiln path, for problems found by kiln's own checks. */
export function packerLines(mapped: MappedTemplate, mainFile: string): (problems: FieldProblem[]) => FieldProblem[] {
  return (problems) => problems.map((p) => {
    for (let n = p.path.length; n >= 0; n--) {
      const o = mapped.origins.get(JSON.stringify(p.path.slice(0, n)));
      if (!o) continue;
      const same = o.file === mainFile;
      return { ...p, line: same ? o.line : undefined, message: `${p.message} (Packer: ${o.field}${same ? '' : ` at ${o.file}:${o.line}`})` };
    }
    return p;
  });
}
