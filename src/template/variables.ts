/**
 * Variable values come from, lowest to highest precedence: the template's defaults, --var-file files
 * (in order), KILN_VAR_<name> environment variables, --var name=value flags (in order).
 */
import { readFileSync } from 'node:fs';
import YAML from 'yaml';
import type { VariableDef } from './schema.js';
import type { Scalar } from './interpolate.js';
import { closest, type FieldProblem } from './errors.js';

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

export class VariableError extends Error {
  constructor(readonly source: string, readonly problems: FieldProblem[]) {
    super(problems.map((p) => `${source}: ${p.path.join('.')}: ${p.message}${p.fix ? `\n  fix: ${p.fix}` : ''}`).join('\n'));
    this.name = 'VariableError';
  }
}

function coerce(name: string, def: VariableDef, raw: unknown, source: string): Scalar {
  const fail = (fix: string): never => {
    throw new VariableError(source, [{ path: ['variables', name], message: `${JSON.stringify(raw)} is not a ${def.type}`, fix }]);
  };
  switch (def.type) {
    case 'number': {
      const n = typeof raw === 'number' ? raw : Number(String(raw).trim());
      if (String(raw).trim() === '' || !Number.isFinite(n)) fail(`give a number, e.g. ${name}=2`);
      return n;
    }
    case 'bool': {
      if (typeof raw === 'boolean') return raw;
      const s = String(raw).toLowerCase();
      if (s === 'true') return true;
      if (s === 'false') return false;
      return fail(`give true or false, e.g. ${name}=true`);
    }
    default:
      if (typeof raw === 'object' && raw !== null) fail('give a plain string');
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
  const set = (name: string, raw: unknown, source: string) => {
    const def = defs[name];
    if (!def) {
      const guess = closest(name, names);
      throw new VariableError(source, [{
        path: [name], message: `variable "${name}" is not declared in ${templateFile}`,
        fix: guess ? `did you mean "${guess}"?` : `declare it under "variables:" in ${templateFile}, or remove it`,
      }]);
    }
    values[name] = coerce(name, def, raw, source);
    origin[name] = source;
  };

  for (const [name, def] of Object.entries(defs)) {
    if (def.default !== undefined) set(name, def.default, `${templateFile} (default)`);
  }
  for (const file of inputs.varFiles ?? []) {
    let text: string;
    try { text = readFileSync(file, 'utf8'); } catch (e) {
      throw new VariableError(file, [{ path: [], message: `cannot read var file: ${(e as Error).message}`, fix: 'check the --var-file path' }]);
    }
    let data: unknown;
    try { data = YAML.parse(text); } catch (e) {
      throw new VariableError(file, [{ path: [], message: `not valid YAML/JSON: ${(e as Error).message}` }]);
    }
    if (data === null || typeof data !== 'object' || Array.isArray(data)) {
      throw new VariableError(file, [{ path: [], message: 'a var file is a map of name: value', fix: 'write e.g. "ssh_user: debian"' }]);
    }
    for (const [k, v] of Object.entries(data)) set(k, v, file);
  }
  for (const [key, v] of Object.entries(inputs.env ?? {})) {
    if (key.startsWith('KILN_VAR_') && v !== undefined && defs[key.slice(9)]) set(key.slice(9), v, `environment ${key}`);
  }
  for (const pair of inputs.vars ?? []) {
    const eq = pair.indexOf('=');
    if (eq <= 0) throw new VariableError('--var', [{ path: [pair], message: 'expected name=value', fix: `write --var ${pair || 'name'}=value` }]);
    set(pair.slice(0, eq), pair.slice(eq + 1), `--var ${pair.slice(0, eq)}`);
  }

  const missing = names.filter((n) => values[n] === undefined);
  if (missing.length) {
    throw new VariableError(templateFile, missing.map((n) => ({
      path: ['variables', n], message: `variable "${n}" has no default and no value was given`,
      fix: `pass --var ${n}=..., a --var-file, or set KILN_VAR_${n}`,
    })));
  }
  const sensitive = new Set(names.filter((n) => defs[n]!.sensitive));
  const secrets = [...sensitive].map((n) => String(values[n])).filter((s) => s.length >= 3);
  return { values, sensitive, secrets, origin };
}
