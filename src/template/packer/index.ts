/**
 * Packer templates in kiln: recognised by name and content, read (HCL or legacy JSON), mapped onto
 * kiln's fields, and then held to every check a kiln YAML template gets (checkTemplate in load.ts).
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import path from 'node:path';
import { TemplateError, maskTemplateError, maskText, type FieldProblem } from '../errors.js';
import type { VariableInputs } from '../variables.js';
import { globToRegExp, isGlob } from '../../util/glob.js';
import { HclError } from './hcl.js';
import { fileReadNote, type FileRead } from './eval.js';
import { globMatch, loadHclTemplate } from './hcl-template.js';
import { loadJsonTemplate } from './json-template.js';
import { mapTemplate, type MappedTemplate } from './mapping.js';
import {
  PackerTemplateError,
  formatPackerProblem,
  type Field,
  type PackerProblem,
  type PackerSecret,
  type PackerTemplate,
} from './model.js';

/** A Packer template, by name (*.pkr.hcl, *.pkr.json, a folder of *.pkr.hcl) or content (JSON with "builders"). */
export function isPackerTemplate(file: string): boolean {
  const abs = path.resolve(file);
  let isDir = false;
  try {
    isDir = statSync(abs).isDirectory();
  } catch {
    return /\.pkr\.(hcl|json)$/.test(abs);
  }
  if (isDir) return true;
  if (/\.pkr\.(hcl|json)$/.test(abs) || /\.pkrvars\.hcl$/.test(abs)) return true;
  if (/\.hcl$/.test(abs)) return true;
  if (/\.json$/.test(abs)) {
    try {
      const data = JSON.parse(readFileSync(abs, 'utf8')) as unknown;
      return typeof data === 'object' && data !== null && !Array.isArray(data) && Object.hasOwn(data, 'builders');
    } catch {
      return false;
    }
  }
  return false;
}

/** `secrets`: the texts never to print (the template's secrets' texts, short ones included for exact matches). */
export interface PackerLoad {
  template: PackerTemplate;
  mapped: MappedTemplate;
  secrets: string[];
  /** Warnings for files read outside the template's folder (also in mapped.notes), for later errors to repeat. */
  outsideReads: string[];
  /** The builds -only/-except left out (not read further, not in template.builds). */
  excluded: string[];
}

/** A PackerTemplateError or HclError as kiln's TemplateError, naming file:line, the Packer field and the fix. */
export function asTemplateError(e: unknown, file: string): unknown {
  if (e instanceof HclError)
    return new TemplateError(e.file, [
      { path: [], line: e.pos.line, message: `${e.problem} (column ${e.pos.column})`, fix: e.fix },
    ]);
  if (e instanceof PackerTemplateError) {
    const first = e.problems[0]?.at?.file ?? file;
    // The Packer field stands where a kiln path would: "file:line: qemu.a: vtpm: message".
    return new TemplateError(
      first,
      e.problems.map((p) => ({
        path: p.field && !(p.at && p.at.file !== first) ? [p.field] : [],
        line: p.at?.file === first ? p.at.line : undefined,
        message: p.at && p.at.file !== first ? formatPackerProblem({ ...p, fix: undefined }) : p.message,
        fix: p.fix,
      })),
    );
  }
  return e;
}

/** A mapping problem at a field computed from variables or locals names where those were written too. */
function withVia(problems: PackerProblem[], template: PackerTemplate): PackerProblem[] {
  const via = new Map<string, NonNullable<Field['via']>>();
  for (const b of template.builds) {
    for (const f of [
      ...b.source.fields.values(),
      ...b.provisioners.flatMap((p) => [...p.fields.values()]),
      ...b.postProcessors.flat().flatMap((p) => [...p.fields.values()]),
    ]) {
      if (f.via?.length) via.set(`${f.at.file}:${f.at.line}`, f.via);
    }
  }
  return problems.map((p) => {
    const v = p.at && via.get(`${p.at.file}:${p.at.line}`);
    return v
      ? {
          ...p,
          message: `${p.message} (the value comes from ${v.map((x) => `${x.ref} at ${x.at.file}:${x.at.line}`).join(', ')})`,
        }
      : p;
  });
}

/**
 * -only/-except over a template's builds (QEMU or not): each name or glob must match one (Packer builds
 * nothing and exits 0; kiln says so), and the builds left out are not checked further, as in Packer.
 */
function selection(template: PackerTemplate, only?: string[], except?: string[]): (name: string) => boolean {
  const names = [...template.builds.map((b) => b.fullName), ...template.refused.map((r) => r.fullName)];
  const problems: PackerProblem[] = [];
  for (const [flag, list] of [
    ['-only', only],
    ['-except', except],
  ] as const) {
    for (const n of list ?? []) {
      // A malformed glob is refused as Packer refuses it ("Invalid -only pattern").
      try {
        globToRegExp(n);
      } catch (e) {
        if (!names.includes(n)) {
          problems.push({
            field: flag,
            message: `${(e as Error).message} (a glob takes * ? [abc] [!abc] {a,b} and \\ to escape)`,
          });
          continue;
        }
      }
      if (!names.some((name) => globMatch(n, name)))
        problems.push({
          field: flag,
          message: `no build ${isGlob(n) ? 'matches' : 'is named'} "${n}" (builds: ${names.join(', ')})`,
          fix: `give one of ${names.join(', ')}, or a glob that matches one`,
        });
    }
  }
  const selected = (name: string) =>
    (!only?.length || only.some((o) => globMatch(o, name))) && !except?.some((x) => globMatch(x, name));
  if (!problems.length && names.length && !names.some(selected))
    problems.push({
      field: '-except',
      message: `leaves no build to run (builds: ${names.join(', ')})`,
      fix: 'except fewer builds',
    });
  if (problems.length) throw new PackerTemplateError(problems);
  return selected;
}

export function readPackerTemplate(
  file: string,
  inputs: VariableInputs,
  only?: string[],
  except?: string[],
): PackerLoad {
  const abs = path.resolve(file);
  // file() & co. reading outside the template's folder: allowed (as Packer does) but said, even on failure.
  const outside: string[] = [];
  const onFileRead = (r: FileRead) => {
    const n = fileReadNote(r);
    if (r.outside && !outside.includes(n)) outside.push(n);
  };
  // Filled in while the template is read: an error thrown half-way is masked with what is known by then.
  const found: PackerSecret[] = [];
  const texts = () => [...new Set(found.map((s) => s.text))];
  try {
    if (!existsSync(abs))
      throw new PackerTemplateError([
        { message: `${abs}: template file not found`, fix: 'check the path given to kiln' },
      ]);
    // *.pkr.json is HCL's JSON syntax; other *.json with "builders" is Packer's legacy JSON.
    const isJson = /\.json$/.test(abs) && !/\.pkr\.json$/.test(abs) && !statSync(abs).isDirectory();
    // A template read despite problems (a required variable not set...) is mapped too: every problem in one run.
    let readProblems: PackerProblem[] = [];
    let consequences = new Set<string>();
    let template: PackerTemplate;
    try {
      template = isJson ? loadJsonTemplate(abs, inputs, found) : loadHclTemplate(abs, { ...inputs, onFileRead }, found);
    } catch (e) {
      if (!(e instanceof PackerTemplateError) || !e.partial) throw e;
      template = e.partial;
      readProblems = e.problems;
      consequences = e.consequences ?? consequences;
    }
    const selected = selection(template, only, except);
    const excluded = [...template.builds, ...template.refused].map((b) => b.fullName).filter((n) => !selected(n));
    const refused = template.refused.filter((r) => selected(r.fullName));
    if (refused.length) {
      const qemu = template.builds.map((b) => b.fullName);
      throw new PackerTemplateError([
        ...readProblems,
        ...refused.map((r) => ({
          at: r.at,
          field: r.fullName,
          message:
            r.type === 'null'
              ? // issue 25: a null build makes no machine, and everything a kiln build is (layers, artifacts, manifest) describes one.
                'the "null" builder makes no machine (it only runs shell-local steps), and a kiln build is a VM image: there is nothing for kiln to build'
              : r.type === 'file'
                ? // Same reason: it writes one file on this machine (content or source to target), no VM image.
                  'the "file" builder writes a file on this machine (its content to its target) and makes no machine, and a kiln build is a VM image: there is nothing for kiln to build'
                : `kiln builds with QEMU only; the "${r.type}" builder is not supported`,
          fix: qemu.length
            ? `${r.type === 'file' ? 'write that file before running kiln, and ' : ''}build the QEMU sources only: -only=${qemu.join(',')}`
            : r.type === 'null'
              ? 'run those commands without kiln (or as a shell-local post-processor of a QEMU build)'
              : r.type === 'file'
                ? 'write that file without kiln (e.g. in the script or Makefile that runs kiln)'
                : 'kiln runs the qemu builder; this template has none',
        })),
      ]);
    }
    // The builds -only/-except leave out are not checked either (a template's builders often share an
    // output directory, run one at a time with -only), as Packer validates the selected builds only.
    template.builds = template.builds.filter((b) => selected(b.fullName));
    const mapped = mapTemplate(template);
    mapped.notes.unshift(...outside, ...(template.notes ?? []));
    const mappingProblems = withVia(mapped.problems, template).filter(
      (p) => !(p.at && consequences.has(`${p.at.file}:${p.at.line}`)),
    );
    if (readProblems.length || mappingProblems.length) {
      // A field read twice by the mapping would say its problem twice.
      const seen = new Set<string>();
      throw new PackerTemplateError(
        [...readProblems, ...mappingProblems].filter((p) => {
          const k = JSON.stringify([p.at, p.field, p.message]);
          return !seen.has(k) && seen.add(k);
        }),
      );
    }
    // Notes are printed before a build: they name fields, and must not quote a secret either.
    mapped.notes = mapped.notes.map((n) => maskText(n, texts()));
    return { template, mapped, secrets: texts(), outsideReads: outside, excluded };
  } catch (e) {
    const err = asTemplateError(e, abs);
    const withNotes =
      err instanceof TemplateError && outside.length
        ? new TemplateError(err.file, [...err.problems, ...outside.map((n) => ({ path: [], message: `note: ${n}` }))])
        : err;
    throw withNotes instanceof TemplateError ? maskTemplateError(withNotes, texts()) : withNotes;
  }
}

/** The Packer file:line and field of a kiln path, for problems found by kiln's own checks. */
export function packerLines(
  mapped: MappedTemplate,
  mainFile: string,
  template?: PackerTemplate,
): (problems: FieldProblem[]) => FieldProblem[] {
  return (problems) =>
    problems.map((p) => {
      for (let n = p.path.length; n >= 0; n--) {
        const o = mapped.origins.get(JSON.stringify(p.path.slice(0, n)));
        if (!o) continue;
        const same = o.file === mainFile;
        return {
          ...p,
          line: same ? o.line : undefined,
          message: `${p.message} (Packer: ${o.field}${same ? '' : ` at ${o.file}:${o.line}`})`,
        };
      }
      // A kiln field with no Packer field of its own (builds[0].outputs[2], made from a post-processor or a
      // default): named by its Packer build, at the build's source block.
      const b = p.path[0] === 'builds' && typeof p.path[1] === 'number' ? template?.builds[p.path[1]] : undefined;
      if (b) {
        const same = b.source.at.file === mainFile;
        return {
          ...p,
          line: same ? b.source.at.line : undefined,
          message: `${p.message} (Packer: build ${b.fullName}${same ? '' : ` at ${b.source.at.file}:${b.source.at.line}`})`,
        };
      }
      return p;
    });
}
