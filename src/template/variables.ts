/**
 * Variable values come from, lowest to highest precedence: the template's defaults, --var-file files
 * (in order), KILN_VAR_<name> environment variables, --var name=value flags (in order). Wherever a
 * value comes from, `${var.NAME}` in it is filled in from the other variables.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { VariableDef } from './schema.js';
import { interpolateString, type Scalar } from './interpolate.js';
import { TemplateError, closest, formatPath, problemsAsError, type FieldProblem } from './errors.js';
import { KilnError } from '../util/errors.js';

export interface VariableInputs {
  vars?: string[]; // "name=value"
  varFiles?: string[]; // YAML or JSON maps
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedVariables {
  values: Record<string, Scalar>;
  /** Names: declared sensitive, or filled in from a variable that is. */
  sensitive: Set<string>;
  /** The secret values themselves, to mask wherever they would be printed. */
  secrets: string[];
  origin: Record<string, string>;
}

/** A problem with a value given from outside the template: a --var, a --var-file, a KILN_VAR_ variable. */
export class VariableError extends KilnError {
  constructor(
    readonly source: string,
    readonly problems: FieldProblem[],
  ) {
    super(...problemsAsError(problems, (p) => `${source}: ${formatPath(p.path)}: ${p.message}`));
    this.name = 'VariableError';
  }
}

/** Where a value came from, which decides who gets blamed and how the fix is spelt. */
interface ValueSource {
  label: string;
  kind: 'default' | 'file' | 'flag';
}

/** `secret`: the value is sensitive, or was filled in from one, and is not quoted in the error. */
function coerce(
  name: string,
  def: VariableDef,
  raw: unknown,
  from: ValueSource,
  templateFile: string,
  secret = false,
): Scalar {
  const fail = (example: string): never => {
    const problem = {
      message: `${secret ? 'the value (sensitive, not shown)' : (JSON.stringify(raw) ?? String(raw))} is not ${def.type === 'bool' ? 'true or false' : `a ${def.type}`}`,
    };
    if (from.kind === 'default') {
      throw new TemplateError(templateFile, [
        {
          ...problem,
          path: ['variables', name, 'default'],
          fix: `make the default a ${def.type}, e.g. default: ${example}, or change "type"`,
        },
      ]);
    }
    const fix =
      from.kind === 'file'
        ? `give ${def.type === 'bool' ? 'true or false' : `a ${def.type}`}, e.g. ${name}: ${example}`
        : `give ${def.type === 'bool' ? 'true or false' : `a ${def.type}`}, e.g. ${name}=${example}`;
    throw new VariableError(from.label, [{ ...problem, path: ['variables', name], fix }]);
  };
  switch (def.type) {
    case 'number': {
      const n = typeof raw === 'number' ? raw : typeof raw === 'string' ? Number(raw.trim()) : NaN;
      if ((typeof raw === 'string' && raw.trim() === '') || !Number.isFinite(n)) fail('2');
      return n;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const s = typeof raw === 'string' ? raw.toLowerCase() : '';
      if (s === 'true') return true;
      if (s === 'false') return false;
      return fail('true');
    }
    default:
      if (typeof raw === 'object' && raw !== null) fail('"text"');
      if (raw === null) fail('"text"');
      return String(raw);
  }
}

/** A value as given, before other variables in it are filled in and it is checked against its type. */
interface GivenValue {
  raw: unknown;
  from: ValueSource;
}

export function resolveVariables(
  defs: Record<string, VariableDef>,
  inputs: VariableInputs,
  templateFile: string,
): ResolvedVariables {
  const given = new Map<string, GivenValue>();
  const names = Object.keys(defs);
  const set = (name: string, raw: unknown, from: ValueSource) => {
    // Own properties only: "constructor" or "__proto__" must not find Object.prototype's.
    if (!Object.hasOwn(defs, name)) {
      const guess = closest(name, names);
      throw new VariableError(from.label, [
        {
          path: [name],
          message: `variable "${name}" is not declared in ${templateFile}`,
          fix: guess ? `did you mean "${guess}"?` : `declare it under "variables:" in ${templateFile}, or remove it`,
        },
      ]);
    }
    given.set(name, { raw, from });
  };
  for (const [name, def] of Object.entries(defs)) {
    if (def.default !== undefined) set(name, def.default, { label: `${templateFile} (default)`, kind: 'default' });
  }
  for (const file of inputs.varFiles ?? []) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new VariableError(file, [
        {
          path: ['--var-file'],
          message:
            code === 'ENOENT'
              ? `file not found (looked for ${path.resolve(file)})`
              : `cannot read it: ${(e as Error).message}`,
          fix: 'check the --var-file path; it is relative to the current directory, not to the template',
        },
      ]);
    }
    let data: unknown;
    try {
      data = YAML.parse(text, { uniqueKeys: true });
    } catch (e) {
      throw new VariableError(file, [
        {
          path: ['--var-file'],
          message: `not valid YAML/JSON: ${(e as Error).message.split('\n')[0]}`,
          fix: 'write one "name: value" per line',
        },
      ]);
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new VariableError(file, [
        { path: ['--var-file'], message: 'a var file is a map of name: value', fix: 'write e.g. "ssh_user: debian"' },
      ]);
    }
    for (const [k, v] of Object.entries(data)) set(k, v, { label: file, kind: 'file' });
  }
  for (const [key, v] of Object.entries(inputs.env ?? {})) {
    const name = key.slice(9);
    if (key.startsWith('KILN_VAR_') && v !== undefined && Object.hasOwn(defs, name))
      set(name, v, { label: `environment ${key}`, kind: 'flag' });
  }
  for (const pair of inputs.vars ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0)
      throw new VariableError('--var', [
        { path: [pair], message: 'expected name=value', fix: `write --var ${pair || 'name'}=value` },
      ]);
    set(pair.slice(0, eq), pair.slice(eq + 1), { label: `--var ${pair.slice(0, eq)}`, kind: 'flag' });
  }

  const missing = names.filter((n) => !given.has(n));
  if (missing.length) {
    throw new TemplateError(
      templateFile,
      missing.map((n) => ({
        path: ['variables', n],
        message: `variable "${n}" has no default and no value was given`,
        fix: `pass --var ${n}=..., a --var-file, or set KILN_VAR_${n}`,
      })),
    );
  }
  const values: Record<string, Scalar> = {};
  const origin: Record<string, string> = {};
  const resolving: string[] = [];
  /** Sensitive, or filled in from a sensitive variable: such a value is never quoted in an error. */
  const tainted = new Set(names.filter((n) => defs[n]!.sensitive));
  /**
   * A value may refer to other variables (default: "${var.user}-build"): those are resolved first,
   * depth-first, so the order of declaration does not matter and a loop is caught with its chain.
   */
  const resolve = (name: string): Scalar => {
    if (Object.hasOwn(values, name)) return values[name]!;
    const def = defs[name]!;
    const { raw, from } = given.get(name)!;
    const blame = (culprit: string, message: string, fix: string): never => {
      const source = given.get(culprit)!.from;
      if (source.kind === 'default')
        throw new TemplateError(templateFile, [{ path: ['variables', culprit, 'default'], message, fix }]);
      throw new VariableError(source.label, [{ path: ['variables', culprit], message, fix }]);
    };
    const loopStart = resolving.indexOf(name);
    if (loopStart >= 0) {
      // A value given from outside (--var, a var file) closes a loop that the defaults alone did not have.
      const members = resolving.slice(loopStart);
      const culprit = members.find((m) => given.get(m)!.from.kind !== 'default') ?? name;
      const from = members.indexOf(culprit);
      const chain = [...members.slice(from), ...members.slice(0, from), culprit];
      blame(
        culprit,
        `variables refer to each other in a loop: ${chain.join(' -> ')}`,
        `give one of them a value that does not refer back, e.g. a plain ${defs[culprit]!.type}; write $\${var.NAME} for a literal \${var.NAME}`,
      );
    }
    resolving.push(name);
    let expanded = raw;
    if (typeof raw === 'string') {
      const referenced: string[] = [];
      interpolateString(raw, { var: {} }, (ref) => referenced.push(ref.name), 'var');
      const known: Record<string, Scalar> = {};
      for (const ref of referenced) {
        if (!Object.hasOwn(defs, ref)) {
          const guess = closest(ref, names);
          blame(
            name,
            `undefined variable "${ref}"`,
            `declare "${ref}" under "variables:" or fix the reference \${var.${ref}}${guess ? ` (did you mean \${var.${guess}}?)` : ''}`,
          );
        }
        if (!Object.hasOwn(known, ref)) Object.defineProperty(known, ref, { value: resolve(ref), enumerable: true });
        if (tainted.has(ref)) tainted.add(name);
      }
      expanded = interpolateString(raw, { var: known }, () => {}, 'var');
    }
    resolving.pop();
    Object.defineProperty(values, name, {
      value: coerce(name, def, expanded, from, templateFile, tainted.has(name)),
      enumerable: true,
      writable: true,
      configurable: true,
    });
    Object.defineProperty(origin, name, { value: from.label, enumerable: true, writable: true, configurable: true });
    return values[name]!;
  };
  for (const name of names) resolve(name);

  // A variable filled in from a sensitive one ("x-${var.token}") is sensitive too: its whole value is
  // masked by name in the manifest and inspect, and by text wherever it is printed.
  const sensitive = new Set(names.filter((n) => tainted.has(n)));
  const secrets = [...new Set([...sensitive].map((n) => String(values[n])).filter((s) => s.length >= 3))];
  return { values, sensitive, secrets, origin };
}
