/**
 * Variable values come from, lowest to highest precedence: the template's defaults, --var-file files
 * (in order), KILN_VAR_<name> environment variables, --var name=value flags (in order).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import type { VariableDef } from './schema.js';
import type { Scalar } from './interpolate.js';
import { TemplateError, closest, formatPath, type FieldProblem } from './errors.js';

export interface VariableInputs {
  vars?: string[];          // "name=value"
  varFiles?: string[];      // YAML or JSON maps
  env?: NodeJS.ProcessEnv;
}

export interface ResolvedVariables {
  values: Record<string, Scalar>;
  sensitive: Set<string>;   // names
  /** The secret values themselves, to mask wherever they would be printed. */
  secrets: string[];
  origin: Record<string, string>;
}

/** A problem with a value given from outside the template: a --var, a --var-file, a KILN_VAR_ variable. */
export class VariableError extends Error {
  constructor(readonly source: string, readonly problems: FieldProblem[]) {
    super(problems.map((p) => `${source}: ${formatPath(p.path)}: ${p.message}${p.fix ? `\n  fix: ${p.fix}` : ''}`).join('\n'));
    this.name = 'VariableError';
  }
}

/** Where a value came from, which decides who gets blamed and how the fix is spelt. */
interface ValueSource { label: string; kind: 'default' | 'file' | 'flag' }

function coerce(name: string, def: VariableDef, raw: unknown, from: ValueSource, templateFile: string): Scalar {
  const fail = (example: string): never => {
    const problem = { message: `${JSON.stringify(raw) ?? String(raw)} is not ${def.type === 'bool' ? 'true or false' : `a ${def.type}`}` };
    if (from.kind === 'default') {
      throw new TemplateError(templateFile, [{ ...problem, path: ['variables', name, 'default'], fix: `make the default a ${def.type}, e.g. default: ${example}, or change "type"` }]);
    }
    const fix = from.kind === 'file' ? `give ${def.type === 'bool' ? 'true or false' : `a ${def.type}`}, e.g. ${name}: ${example}` : `give ${def.type === 'bool' ? 'true or false' : `a ${def.type}`}, e.g. ${name}=${example}`;
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

export function resolveVariables(
  defs: Record<string, VariableDef>,
  inputs: VariableInputs,
  templateFile: string,
): ResolvedVariables {
  const values: Record<string, Scalar> = {};
  const origin: Record<string, string> = {};
  const names = Object.keys(defs);
  const set = (name: string, raw: unknown, from: ValueSource) => {
    // Own properties only: "constructor" or "__proto__" must not find Object.prototype's.
    const def = Object.hasOwn(defs, name) ? defs[name] : undefined;
    if (!def) {
      const guess = closest(name, names);
      throw new VariableError(from.label, [{
        path: [name], message: `variable "${name}" is not declared in ${templateFile}`,
        fix: guess ? `did you mean "${guess}"?` : `declare it under "variables:" in ${templateFile}, or remove it`,
      }]);
    }
    Object.defineProperty(values, name, { value: coerce(name, def, raw, from, templateFile), enumerable: true, writable: true, configurable: true });
    Object.defineProperty(origin, name, { value: from.label, enumerable: true, writable: true, configurable: true });
  };

  for (const [name, def] of Object.entries(defs)) {
    if (def.default !== undefined) set(name, def.default, { label: `${templateFile} (default)`, kind: 'default' });
  }
  for (const file of inputs.varFiles ?? []) {
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new VariableError(file, [{
        path: ['--var-file'],
        message: code === 'ENOENT' ? `file not found (looked for ${path.resolve(file)})` : `cannot read it: ${(e as Error).message}`,
        fix: 'check the --var-file path; it is relative to the current directory, not to the template',
      }]);
    }
    let data: unknown;
    try { data = YAML.parse(text, { uniqueKeys: true }); } catch (e) {
      throw new VariableError(file, [{ path: ['--var-file'], message: `not valid YAML/JSON: ${(e as Error).message.split('\n')[0]}`, fix: 'write one "name: value" per line' }]);
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new VariableError(file, [{ path: ['--var-file'], message: 'a var file is a map of name: value', fix: 'write e.g. "ssh_user: debian"' }]);
    }
    for (const [k, v] of Object.entries(data)) set(k, v, { label: file, kind: 'file' });
  }
  for (const [key, v] of Object.entries(inputs.env ?? {})) {
    const name = key.slice(9);
    if (key.startsWith('KILN_VAR_') && v !== undefined && Object.hasOwn(defs, name)) set(name, v, { label: `environment ${key}`, kind: 'flag' });
  }
  for (const pair of inputs.vars ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new VariableError('--var', [{ path: [pair], message: 'expected name=value', fix: `write --var ${pair || 'name'}=value` }]);
    set(pair.slice(0, eq), pair.slice(eq + 1), { label: `--var ${pair.slice(0, eq)}`, kind: 'flag' });
  }

  const missing = names.filter((n) => !Object.hasOwn(values, n));
  if (missing.length) {
    throw new TemplateError(templateFile, missing.map((n) => ({
      path: ['variables', n], message: `variable "${n}" has no default and no value was given`,
      fix: `pass --var ${n}=..., a --var-file, or set KILN_VAR_${n}`,
    })));
  }
  const sensitive = new Set(names.filter((n) => defs[n]!.sensitive));
  const secrets = [...sensitive].map((n) => String(values[n])).filter((s) => s.length >= 3);
  return { values, sensitive, secrets, origin };
}
