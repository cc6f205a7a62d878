/**
 * Packer's HCL2 templates (*.pkr.hcl, a folder of them, *.pkrvars.hcl) read into kiln's Packer model:
 * variables with their types, defaults, sensitivity and validation blocks, -var/-var-file/PKR_VAR_*
 * values, locals, sources, and build blocks with their provisioners and post-processors in written
 * order. Values are evaluated as Packer evaluates them (see eval.ts).
 */
import { globToRegExp } from '../../util/glob.js';
import { randomUUID } from 'node:crypto';
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import {
  HclError,
  attributesOf,
  blocksOf,
  parseHcl,
  parseHclExpression,
  type Attribute,
  type Block,
  type Body,
  type Expr,
} from './hcl.js';
import { parseHclJson, readJson } from './hcl-json.js';
import { expandDynamic } from './dynamic.js';
import { evaluate, isObject, typeName, type EvalContext, type FileRead, type Value } from './eval.js';
import { stuckLocalsError } from './references.js';
import { Taint, refsOf } from './taint.js';
import {
  PackerTemplateError,
  type PackerSecret,
  type Field,
  type PackerBuild,
  type PackerProblem,
  type PackerStep,
  type PackerTemplate,
  type PackerVariable,
  type Where,
} from './model.js';

export interface PackerInputs {
  vars?: string[];
  varFiles?: string[];
  env?: NodeJS.ProcessEnv;
  onFileRead?: (read: FileRead) => void;
}

type VarType = 'string' | 'number' | 'bool' | 'any' | 'complex';

interface ParsedFile {
  file: string;
  body: Body;
  text: string;
}

const where = (file: string, line: number): Where => ({ file, line });

function readHcl(file: string): ParsedFile {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (e) {
    throw new PackerTemplateError([
      {
        message: `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        fix: 'check the path given to kiln',
      },
    ]);
  }
  return { file, text, body: file.endsWith('.json') ? parseHclJson(text, file) : parseHcl(text, file) };
}

function typeOf(expr: Expr | undefined): VarType {
  if (!expr) return 'any';
  if (expr.kind === 'variable' && ['string', 'number', 'bool', 'any'].includes(expr.name)) return expr.name as VarType;
  return 'complex';
}

/** A -var value or PKR_VAR_ value: the text itself for a string, HCL for anything else (as Packer reads it). */
function fromText(name: string, type: VarType, text: string, label: string): Value {
  if (type === 'string') return text;
  if (type === 'number') {
    const n = Number(text.trim());
    if (text.trim() === '' || !Number.isFinite(n))
      throw new PackerTemplateError([
        {
          message: `${label}: variable "${name}" is a number, not ${JSON.stringify(text)}`,
          fix: `give a number, e.g. ${name}=2`,
        },
      ]);
    return n;
  }
  if (type === 'bool') {
    if (text === 'true' || text === 'false') return text === 'true';
    throw new PackerTemplateError([
      {
        message: `${label}: variable "${name}" is true or false, not ${JSON.stringify(text)}`,
        fix: `give true or false, e.g. ${name}=true`,
      },
    ]);
  }
  try {
    return evaluate(parseHclExpression(text, label), { file: label, scope: {}, cwd: process.cwd(), now: new Date() });
  } catch (e) {
    if (type === 'any' && e instanceof HclError) return text;
    throw e;
  }
}

function checkType(name: string, type: VarType, v: Value, at: Where | undefined, label: string): Value {
  const bad = (want: string): never => {
    throw new PackerTemplateError([
      {
        at,
        message: `${label}: variable "${name}" must be ${want}, but the value is ${JSON.stringify(v)}`,
        fix: `give ${want}, or change the variable's type`,
      },
    ]);
  };
  switch (type) {
    case 'string':
      if (typeof v === 'number' || typeof v === 'boolean') return String(v);
      if (typeof v !== 'string' && v !== null) bad('a string');
      return v;
    case 'number':
      if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
      if (typeof v !== 'number' && v !== null) bad('a number');
      return v;
    case 'bool':
      if (v === 'true' || v === 'false') return v === 'true';
      if (typeof v !== 'boolean' && v !== null) bad('true or false');
      return v;
    default:
      return v;
  }
}

const buildRefs = (buildName: string): Record<string, Value> => ({
  name: buildName,
  type: 'qemu',
  ID: '${build.name}',
  Host: '${build.ssh_host}',
  Port: '${build.ssh_port}',
  User: '${build.ssh_username}',
  SSHPublicKey: '${build.ssh_public_key}',
  PackerHTTPAddr: '${build.http_ip}:${build.http_port}',
  PackerHTTPIP: '${build.http_ip}',
  PackerHTTPPort: '${build.http_port}',
  PackerRunUUID: randomUUID(),
});

/** Packer's glob (src/util/glob.ts) for a provisioner's only/except; a malformed one matches itself only. */
export function globMatch(pattern: string, name: string): boolean {
  try {
    return globToRegExp(pattern).test(name);
  } catch {
    return pattern === name;
  }
}

function isLegacyJson(file: string): boolean {
  try {
    const data = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    return typeof data === 'object' && data !== null && Object.hasOwn(data, 'builders');
  } catch {
    return false;
  }
}

/**
 * `secrets` is filled in as values are read, so that an error thrown half-way can still be masked
 * (readPackerTemplate masks with what it holds).
 */
export function loadHclTemplate(target: string, inputs: PackerInputs, secrets: PackerSecret[] = []): PackerTemplate {
  const taint = new Taint(secrets);
  const abs = path.resolve(target);
  const isDir = statSync(abs).isDirectory();
  const dir = isDir ? abs : path.dirname(abs);
  const fileNames = isDir
    ? readdirSync(abs)
        .filter((n) => n.endsWith('.pkr.hcl') || n.endsWith('.pkr.json'))
        .sort()
        .map((n) => path.join(abs, n))
    : [abs];
  if (!fileNames.length) {
    // Packer 1.6.6 reads a folder as HCL only ("Could not find any config file"); legacy JSON is one file.
    const legacy = isDir
      ? readdirSync(abs)
          .filter((n) => n.endsWith('.json') && isLegacyJson(path.join(abs, n)))
          .sort()
      : [];
    throw new PackerTemplateError([
      legacy.length
        ? {
            message: `${abs} holds no *.pkr.hcl or *.pkr.json file, only legacy JSON (${legacy.join(', ')}); a folder is read as HCL, as Packer 1.6.6 does`,
            fix: `give kiln the legacy template itself: ${legacy.map((n) => path.join(abs, n)).join(' or ')}`,
          }
        : {
            message: `${abs} holds no *.pkr.hcl or *.pkr.json file`,
            fix: 'point kiln at a *.pkr.hcl file or a folder of them',
          },
    ]);
  }
  const files = fileNames.map(readHcl);
  const autoVarFiles = (isDir ? readdirSync(abs) : [])
    .filter((n) => n.endsWith('.auto.pkrvars.hcl'))
    .sort()
    .map((n) => path.join(abs, n));
  const now = new Date();
  const env = inputs.env ?? process.env;
  const problems: PackerProblem[] = [];
  const cwd = process.cwd();
  const ctxFor = (file: string, scope: Record<string, Value>, allowEnv = false): EvalContext => ({
    file,
    scope,
    allowEnv,
    env,
    cwd,
    now,
    root: dir,
    onFileRead: inputs.onFileRead,
  });
  const value = (a: Attribute, ctx: EvalContext): Value => evaluate(a.expr, ctx);

  // ---- variables ----
  const varDefs = new Map<
    string,
    { block: Block; file: string; type: VarType; sensitive: boolean; envDefault: boolean }
  >();
  const values = new Map<string, { v: Value; from: string; at?: Where }>();
  for (const f of files) {
    for (const b of blocksOf(f.body)) {
      if (b.type === 'variable' || b.type === 'local') {
        if (b.labels.length !== 1)
          problems.push({
            at: where(f.file, b.pos.line),
            message: `a ${b.type} block has one label, its name`,
            fix: `write ${b.type} "name" { ... }`,
          });
      }
      if (b.type !== 'variable' || b.labels.length !== 1) continue;
      const name = b.labels[0]!;
      if (varDefs.has(name))
        problems.push({
          at: where(f.file, b.pos.line),
          message: `variable "${name}" is declared twice`,
          fix: 'remove one of the declarations',
        });
      const attrs = new Map(attributesOf(b.body).map((a) => [a.name, a]));
      for (const a of attrs.keys()) {
        if (!['type', 'default', 'description', 'sensitive', 'nullable'].includes(a))
          problems.push({
            at: where(f.file, attrs.get(a)!.pos.line),
            field: `variable "${name}".${a}`,
            message: `unknown variable attribute "${a}"`,
            fix: 'a variable has type, default, description, sensitive and validation blocks',
          });
      }
      const type = typeOf(attrs.get('type')?.expr);
      const sens = attrs.get('sensitive');
      const sensitive = sens ? evaluate(sens.expr, ctxFor(f.file, {})) === true : false;
      const def = attrs.get('default');
      // A default read with env() is treated as sensitive: it is how templates take tokens from CI.
      // (Packer does not mask it; kiln does, in every message and file, and kiln import asks for it.)
      const envDefault = def ? refsOf(def.expr).calls.has('env') : false;
      varDefs.set(name, { block: b, file: f.file, type, sensitive, envDefault });
      if (def) {
        const v = value(def, ctxFor(f.file, {}, true));
        if (sensitive || envDefault) taint.sensitive(`var.${name}`, v, where(f.file, def.pos.line));
        values.set(name, {
          v: checkType(name, type, v, where(f.file, def.pos.line), 'default'),
          from: 'default',
          at: where(f.file, def.pos.line),
        });
      }
    }
  }
  if (problems.length) throw new PackerTemplateError(problems);
  const notes: string[] = [];
  const setVar = (name: string, v: Value, from: string, at?: Where) => {
    const def = varDefs.get(name);
    // Packer warns about a -var-file's undeclared variable ("Undefined variable") and refuses a -var's.
    if (!def && at && !from.startsWith('-var ')) {
      notes.push(
        `${at.file}:${at.line}: ${name}: ignored: the template declares no variable "${name}" (Packer warns too)`,
      );
      return;
    }
    if (!def) {
      throw new PackerTemplateError([
        {
          at,
          message: `${from}: there is no variable "${name}" in the template`,
          fix: `declare it with variable "${name}" { type = string } or fix the name (variables: ${[...varDefs.keys()].join(', ') || 'none'})`,
        },
      ]);
    }
    // Registered before the type check, whose error would quote it.
    if (def.sensitive) taint.sensitive(`var.${name}`, v, at);
    values.set(name, { v: checkType(name, def.type, v, at, from), from, at });
  };
  /** A -var or PKR_VAR_ text, registered as a secret before it is parsed (a parse error quotes it). */
  const textFor = (name: string, text: string, label: string): Value => {
    if (varDefs.get(name)?.sensitive) taint.sensitive(`var.${name}`, text);
    return fromText(name, varDefs.get(name)!.type, text, label);
  };
  for (const [k, v] of Object.entries(env)) {
    if (k.startsWith('PKR_VAR_') && v !== undefined && varDefs.has(k.slice(8)))
      setVar(k.slice(8), textFor(k.slice(8), v, k), k);
  }
  for (const vf of [...autoVarFiles, ...(inputs.varFiles ?? [])]) {
    const file = path.resolve(vf);
    if (file.endsWith('.json')) {
      let data: unknown;
      try {
        data = JSON.parse(readFileSync(file, 'utf8'));
      } catch (e) {
        throw new PackerTemplateError([
          { message: `${file}: ${(e as Error).message}`, fix: 'give a JSON object of variable values' },
        ]);
      }
      if (!isObject(data as Value))
        throw new PackerTemplateError([
          { message: `${file}: a variables file is an object of name: value`, fix: 'write {"name": "value"}' },
        ]);
      // Each value with its line: a problem with it (a wrong type, a use that fails) names the var file's line.
      // (A value nested too deeply for the line finder is named by its file only.)
      let lineOf: ((p: (string | number)[]) => number) | undefined;
      try {
        lineOf = readJson(file, '').lineOf;
      } catch {
        lineOf = undefined;
      }
      for (const [k, v] of Object.entries(data as Record<string, Value>))
        setVar(k, v, file, lineOf ? where(file, lineOf([k])) : undefined);
      continue;
    }
    const parsed = readHcl(file);
    for (const item of parsed.body.items) {
      if (item.kind === 'block')
        throw new PackerTemplateError([
          {
            at: where(file, item.pos.line),
            message: 'a variables file holds only name = value lines',
            fix: `remove the "${item.type}" block`,
          },
        ]);
      setVar(item.name, evaluate(item.expr, ctxFor(file, {})), file, where(file, item.pos.line));
    }
  }
  for (const assignment of inputs.vars ?? []) {
    const eq = assignment.indexOf('=');
    if (eq <= 0)
      throw new PackerTemplateError([
        { message: `-var ${JSON.stringify(assignment)}: expected name=value`, fix: 'write -var name=value' },
      ]);
    const name = assignment.slice(0, eq);
    const def = varDefs.get(name);
    if (!def) setVar(name, null, `-var ${name}`);
    setVar(name, textFor(name, assignment.slice(eq + 1), `-var ${name}`), `-var ${name}`);
  }
  const varScope: Record<string, Value> = {};
  const variables: PackerVariable[] = [];
  for (const [name, def] of varDefs) {
    const got = values.get(name);
    if (!got) {
      problems.push({
        at: where(def.file, def.block.pos.line),
        field: `variable "${name}"`,
        message: 'has no value: it has no default and none was given',
        fix: `give one: -var ${name}=..., a -var-file, PKR_VAR_${name}, or add default = ... to the variable`,
      });
      continue;
    }
    Object.defineProperty(varScope, name, { value: got.v, enumerable: true });
    // An env() default stays a secret only while it is the value used (a -var replaces it).
    const sensitive = def.sensitive || (def.envDefault && got.from === 'default');
    if (!sensitive) taint.forget(`var.${name}`);
    variables.push({ name, value: got.v, sensitive, from: got.from, at: got.at });
  }
  if (problems.length) throw new PackerTemplateError(problems);
  for (const [name, def] of varDefs) {
    for (const vb of blocksOf(def.block.body, 'validation')) {
      const attrs = new Map(attributesOf(vb.body).map((a) => [a.name, a]));
      const cond = attrs.get('condition');
      if (!cond) continue;
      const ok = evaluate(cond.expr, ctxFor(def.file, { var: { [name]: varScope[name]! } }));
      if (ok !== true) {
        const msg = attrs.get('error_message');
        const text = msg ? String(evaluate(msg.expr, ctxFor(def.file, {}))) : 'the validation condition is false';
        const got = values.get(name)!;
        problems.push({
          at: where(def.file, vb.pos.line),
          field: `variable "${name}"`,
          message: `invalid value (from ${got.from}): ${text}`,
          fix: `give ${name} a value the validation accepts`,
        });
      }
    }
  }
  if (problems.length) throw new PackerTemplateError(problems);

  // ---- locals, in any order: each is evaluated once what it refers to is known ----
  const pathScope = { root: dir, cwd };
  const pending: { name: string; expr: Expr; file: string; sensitive: boolean }[] = [];
  for (const f of files) {
    for (const b of blocksOf(f.body, 'locals'))
      for (const a of attributesOf(b.body))
        pending.push({ name: a.name, expr: a.expr, file: f.file, sensitive: false });
    for (const b of blocksOf(f.body, 'local')) {
      const attrs = new Map(attributesOf(b.body).map((a) => [a.name, a]));
      const e = attrs.get('expression');
      if (!e) {
        problems.push({
          at: where(f.file, b.pos.line),
          message: `local "${b.labels[0]}" has no expression`,
          fix: 'add expression = ...',
        });
        continue;
      }
      pending.push({
        name: b.labels[0] ?? '',
        expr: e.expr,
        file: f.file,
        sensitive: attrs.get('sensitive') ? evaluate(attrs.get('sensitive')!.expr, ctxFor(f.file, {})) === true : false,
      });
    }
  }
  // Data sources arrived in Packer 1.7; kiln runs data "null" (pure: output = input) and names the rest.
  const dataScope: Record<string, Value> = {};
  const dataNull: Record<string, Value> = {};
  for (const f of files) {
    for (const b of blocksOf(f.body, 'data')) {
      const [type = '', name = ''] = b.labels;
      const ref = `data.${type}.${name}`;
      if (type !== 'null') {
        problems.push({
          at: where(f.file, b.pos.line),
          field: `data "${b.labels.join('" "')}"`,
          message: `kiln does not run the "${type}" data source (Packer 1.6.6 has no data sources; they arrived in Packer 1.7)`,
          fix: `replace ${ref}.<attribute> with a variable (variable "${`${type}_${name}`.replace(/-/g, '_')}" { ... }, given with -var or a -var-file) and refer to var.${`${type}_${name}`.replace(/-/g, '_')}`,
        });
        continue;
      }
      const attrs = new Map(attributesOf(b.body).map((a) => [a.name, a]));
      const extra = [...attrs.keys()].filter((k) => k !== 'input');
      if (b.labels.length !== 2 || !attrs.get('input') || extra.length || blocksOf(b.body).length) {
        problems.push({
          at: where(f.file, b.pos.line),
          field: `data "${b.labels.join('" "')}"`,
          message: 'a null data source has two labels ("null" and a name) and one attribute, input',
          fix: `write data "null" "${name || 'NAME'}" { input = ... } and refer to ${ref}.output`,
        });
        continue;
      }
      pending.push({ name: `\0data:${name}`, expr: attrs.get('input')!.expr, file: f.file, sensitive: false });
    }
  }
  if (problems.length) throw new PackerTemplateError(problems);
  Object.defineProperty(dataScope, 'null', { value: dataNull, enumerable: true });
  const localAt = new Map(pending.map((p) => [p.name, where(p.file, p.expr.pos.line)]));
  const localScope: Record<string, Value> = {};
  const secretsFromLocals: PackerVariable[] = [];
  while (pending.length) {
    let progressed = false;
    let lastError: HclError | undefined;
    const errors = new Map<string, HclError>();
    for (const p of [...pending]) {
      try {
        const v = evaluate(
          p.expr,
          ctxFor(p.file, {
            var: varScope,
            local: localScope,
            path: pathScope,
            packer: { version: '1.6.6' },
            ...(Object.keys(dataNull).length ? { data: dataScope } : {}),
          }),
        );
        const ref = p.name.startsWith('\0data:') ? `data.${p.name.slice(6)}` : `local.${p.name}`;
        if (p.sensitive) taint.sensitive(ref, v, where(p.file, p.expr.pos.line));
        else taint.value(p.expr, v, where(p.file, p.expr.pos.line), ref.replace('.', '_'), ref);
        if (p.name.startsWith('\0data:'))
          Object.defineProperty(dataNull, p.name.slice(6), { value: { output: v, input: v }, enumerable: true });
        else Object.defineProperty(localScope, p.name, { value: v, enumerable: true });
        if (p.sensitive) secretsFromLocals.push({ name: `local.${p.name}`, value: v, sensitive: true, from: 'local' });
        pending.splice(pending.indexOf(p), 1);
        progressed = true;
      } catch (e) {
        if (!(e instanceof HclError)) throw e;
        lastError = e;
        errors.set(p.name, e);
      }
    }
    if (!progressed) throw stuckLocalsError(pending, errors) ?? lastError!;
  }

  // ---- sources ----
  const sources = new Map<string, { block: Block; file: string }>();
  for (const f of files) {
    for (const b of blocksOf(f.body, 'source')) {
      if (b.labels.length !== 2) {
        problems.push({
          at: where(f.file, b.pos.line),
          message: 'a source block has two labels: the builder and a name',
          fix: 'write source "qemu" "name" { ... }',
        });
        continue;
      }
      const key = `${b.labels[0]}.${b.labels[1]}`;
      if (sources.has(key))
        problems.push({
          at: where(f.file, b.pos.line),
          message: `source ${key} is declared twice`,
          fix: 'give each source its own name',
        });
      sources.set(key, { block: b, file: f.file });
    }
  }
  const known = new Set(['variable', 'locals', 'local', 'source', 'build', 'packer', 'data']);
  for (const f of files) {
    for (const b of blocksOf(f.body)) {
      if (b.type === 'dynamic')
        problems.push({
          at: where(f.file, b.pos.line),
          field: `dynamic "${b.labels.join('" "')}"`,
          message:
            'a dynamic block at the top of a file (Packer 1.6.6 refuses it too: "Blocks of type "dynamic" are not expected here")',
          fix: 'write the blocks out, or use dynamic inside a build or source block',
        });
      else if (!known.has(b.type))
        problems.push({
          at: where(f.file, b.pos.line),
          message: `unknown block "${b.type}"`,
          fix: 'a Packer template has variable, locals, local, source, build and packer blocks',
        });
    }
    for (const a of attributesOf(f.body))
      problems.push({
        at: where(f.file, a.pos.line),
        message: `"${a.name} = ..." outside any block`,
        fix: 'put it in a locals { } block or in a source',
      });
  }
  if (problems.length) throw new PackerTemplateError(problems);

  // The locals and variables a field's expression reads, where each was written (a local's line, a
  // -var-file's line): a problem with the field's value names them too.
  const viaOf = (expr: Expr): Field['via'] => {
    const via: NonNullable<Field['via']> = [];
    for (const ref of refsOf(expr).roots) {
      const [ns, name = ''] = ref.split('.') as [string, string];
      const at =
        ns === 'local'
          ? localAt.get(name)
          : ns === 'var'
            ? values.get(name)?.at
            : ns === 'data'
              ? localAt.get(`\0data:${name}`)
              : undefined;
      if (at) via.push({ ref, at });
    }
    return via.length ? via : undefined;
  };
  const fieldsOf = (body: Body, file: string, ctx: EvalContext, skip: string[] = []): Map<string, Field> => {
    const out = new Map<string, Field>();
    for (const item of expandDynamic(body, ctx).items) {
      if (item.kind === 'attribute') {
        if (skip.includes(item.name)) continue;
        const v = evaluate(item.expr, ctx);
        taint.value(item.expr, v, where(file, item.pos.line), item.name);
        out.set(item.name, { value: v, at: where(file, item.pos.line), via: viaOf(item.expr) });
      } else {
        // Nested blocks become lists of maps under their type (e.g. a provisioner's nested settings).
        const prev = out.get(item.type);
        const inner: Record<string, Value> = {};
        for (const [k, f] of fieldsOf(item.body, file, ctx)) inner[k] = f.value;
        out.set(item.type, {
          value: [...(Array.isArray(prev?.value) ? prev.value : []), inner],
          at: prev?.at ?? where(file, item.pos.line),
        });
      }
    }
    return out;
  };

  // ---- builds ----
  const builds: PackerBuild[] = [];
  const refused: PackerTemplate['refused'] = [];
  const baseScope = {
    var: varScope,
    local: localScope,
    path: pathScope,
    packer: { version: '1.6.6' },
    ...(Object.keys(dataNull).length ? { data: dataScope } : {}),
  };
  let description: string | undefined;
  for (const f of files) {
    for (const written of blocksOf(f.body, 'build')) {
      const ctx0 = ctxFor(f.file, { ...baseScope, build: buildRefs('') });
      const b: Block = { ...written, body: expandDynamic(written.body, ctx0) };
      const attrs = new Map(attributesOf(b.body).map((a) => [a.name, a]));
      const buildName = attrs.get('name') ? String(value(attrs.get('name')!, ctx0)) : undefined;
      if (attrs.get('description')) description ??= String(value(attrs.get('description')!, ctx0));
      for (const a of attrs.keys()) {
        if (!['name', 'description', 'sources'].includes(a))
          problems.push({
            at: where(f.file, attrs.get(a)!.pos.line),
            field: `build.${a}`,
            message: `unknown build attribute "${a}"`,
            fix: 'a build has name, description, sources, source, provisioner and post-processor(s) blocks',
          });
      }
      // The sources this build runs: `sources = [...]` and nested `source "..." { overrides }` blocks.
      const refs: { ref: string; overrides?: Block; at: Where }[] = [];
      const sourcesAttr = attrs.get('sources');
      if (sourcesAttr) {
        const list = value(
          sourcesAttr,
          ctxFor(f.file, {
            ...baseScope,
            source: Object.fromEntries(
              [...new Set([...sources.keys()].map((k) => k.split('.')[0]!))].map((t) => [
                t,
                Object.fromEntries(
                  [...sources.keys()]
                    .filter((k) => k.startsWith(`${t}.`))
                    .map((k) => [k.slice(t.length + 1), `source.${k}`]),
                ),
              ]),
            ),
          }),
        );
        if (!Array.isArray(list))
          problems.push({
            at: where(f.file, sourcesAttr.pos.line),
            field: 'build.sources',
            message: `must be a list of "source.TYPE.NAME", not a ${typeName(list)}`,
            fix: 'write sources = ["source.qemu.NAME"]',
          });
        else for (const s of list) refs.push({ ref: String(s), at: where(f.file, sourcesAttr.pos.line) });
      }
      for (const sb of blocksOf(b.body, 'source'))
        refs.push({ ref: sb.labels[0] ?? '', overrides: sb, at: where(f.file, sb.pos.line) });
      for (const r of refs) {
        // Packer reads a reference by its last two words, so "sources.file.x" (boxcutter's spelling) is source.file.x.
        const words = r.ref.split('.');
        const key = words.length === 3 ? words.slice(1).join('.') : r.ref.replace(/^source\./, '');
        const src = sources.get(key);
        if (!src) {
          problems.push({
            at: r.at,
            field: 'build.sources',
            message: `no source named ${r.ref}`,
            fix: `declare source "${key.split('.')[0]}" "${key.split('.')[1] ?? 'NAME'}" { ... }, or use one of: ${[...sources.keys()].map((k) => `source.${k}`).join(', ') || 'none declared'}`,
          });
          continue;
        }
        const [type, srcName] = src.block.labels as [string, string];
        let name = srcName;
        const overrideAttrs = r.overrides
          ? new Map(attributesOf(r.overrides.body).map((a) => [a.name, a]))
          : new Map<string, Attribute>();
        if (overrideAttrs.get('name')) name = String(value(overrideAttrs.get('name')!, ctx0));
        const fullName = `${buildName ? `${buildName}.` : ''}${type}.${name}`;
        if (type !== 'qemu') {
          refused.push({ fullName, type, at: where(src.file, src.block.pos.line) });
          continue;
        }
        const ctx = ctxFor(src.file, { ...baseScope, source: { name, type }, build: buildRefs(buildName ?? '') });
        const fields = fieldsOf(src.block.body, src.file, ctx);
        if (r.overrides)
          for (const [k, v] of fieldsOf(r.overrides.body, f.file, { ...ctx, file: f.file }, ['name'])) fields.set(k, v);
        const stepCtx = ctxFor(f.file, ctx.scope);
        const step = (sb: Block): PackerStep => {
          const fs = fieldsOf(sb.body, f.file, stepCtx);
          const list = (k: string) => {
            const v = fs.get(k)?.value;
            fs.delete(k);
            return Array.isArray(v) ? v.map(String) : undefined;
          };
          return {
            type: sb.labels[0] ?? '',
            fields: fs,
            at: where(f.file, sb.pos.line),
            only: list('only'),
            except: list('except'),
          };
        };
        const provisioners: PackerStep[] = [];
        const post: PackerStep[][] = [];
        for (const item of blocksOf(b.body)) {
          if (item.type === 'provisioner') provisioners.push(step(item));
          else if (item.type === 'post-processor') post.push([step(item)]);
          else if (item.type === 'post-processors') post.push(blocksOf(item.body, 'post-processor').map(step));
          else if (item.type === 'error-cleanup-provisioner')
            problems.push({
              at: where(f.file, item.pos.line),
              field: 'error-cleanup-provisioner',
              message:
                "kiln has no error-cleanup provisioner: a failed build's VM and disk are removed (or kept with --on-error=abort)",
              fix: 'remove the block; use --on-error=abort to inspect a failure',
            });
          else if (item.type === 'hcp_packer_registry')
            problems.push({
              at: where(f.file, item.pos.line),
              field: 'hcp_packer_registry',
              message: 'kiln does not publish to HCP Packer',
              fix: 'remove the block',
            });
          else if (item.type !== 'source')
            problems.push({
              at: where(f.file, item.pos.line),
              message: `unknown block "${item.type}" in a build`,
              fix: 'a build holds source, provisioner, post-processor and post-processors blocks',
            });
        }
        const applies = (s: PackerStep) =>
          (!s.only || s.only.some((p) => globMatch(p, `${type}.${name}`) || globMatch(p, fullName))) &&
          !s.except?.some((p) => globMatch(p, `${type}.${name}`) || globMatch(p, fullName));
        builds.push({
          fullName,
          source: {
            type,
            name,
            fields,
            at: where(src.file, src.block.pos.line),
            ...(name !== srcName ? { buildName: srcName } : {}),
          },
          provisioners: provisioners.filter(applies),
          postProcessors: post.map((chain) => chain.filter(applies)).filter((c) => c.length),
        });
      }
    }
  }
  if (problems.length) throw new PackerTemplateError(problems);
  if (!builds.length && !refused.length) {
    throw new PackerTemplateError([
      {
        at: where(files[0]!.file, 1),
        message: 'the template has no build block that uses a source',
        fix: 'add build { sources = ["source.qemu.NAME"] }',
      },
    ]);
  }
  return {
    file: files[0]!.file,
    dir,
    language: 'hcl',
    description,
    variables: [...variables, ...secretsFromLocals],
    builds,
    refused,
    text: files.map((f) => f.text).join('\n'),
    secrets,
    ...(notes.length ? { notes } : {}),
  };
}
