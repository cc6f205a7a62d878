/**
 * The variables a Packer template declares, as kiln import carries them over: type, default,
 * description, sensitivity and validation blocks (which kiln has no equivalent for: they become part
 * of the description). Read from the files themselves, not from a load: a load needs every variable's
 * value, and kiln import must not.
 */
import { readFileSync, readdirSync, statSync } from 'node:fs';
import path from 'node:path';
import YAML from 'yaml';
import { attributesOf, blocksOf, parseHcl, type Attribute, type Body } from './hcl.js';
import { parseHclJson } from './hcl-json.js';
import { evaluate, isObject, type Value } from './eval.js';
import { refsOf } from './taint.js';
import type { Where } from './model.js';

export interface DeclaredVariable {
  name: string;
  /** 'complex': list, map, object...: kiln variables are scalars, so such a value is written out. */
  type: 'string' | 'number' | 'bool' | 'complex';
  /** HCL type `any` (or none): a -var text is read as HCL there, so a string is given quoted. */
  untyped: boolean;
  default?: Value;
  description?: string;
  sensitive: boolean;
  /** The default reads env() / {{env}}: treated as a secret (see taint.ts), written without it. */
  envDefault: boolean;
  /** Packer's validation blocks, as text for the description (kiln has no validation). */
  validations: string[];
  at: Where;
}

const lineText = (text: string, line: number) => text.split('\n')[line - 1]?.trim() ?? '';

function hclFiles(target: string): string[] {
  const abs = path.resolve(target);
  if (!statSync(abs).isDirectory()) return [abs];
  return readdirSync(abs)
    .filter((n) => n.endsWith('.pkr.hcl') || n.endsWith('.pkr.json'))
    .sort()
    .map((n) => path.join(abs, n));
}

function typeOf(
  a: Attribute | undefined,
  def: Value | undefined,
): { type: DeclaredVariable['type']; untyped: boolean } {
  const e = a?.expr;
  if (e && e.kind === 'variable' && ['string', 'number', 'bool'].includes(e.name))
    return { type: e.name as 'string', untyped: false };
  if (e && !(e.kind === 'variable' && e.name === 'any')) return { type: 'complex', untyped: false };
  // `any` or no type: the default's kind decides (no default: a string, as -var gives one).
  if (def === undefined || def === null || typeof def === 'string') return { type: 'string', untyped: true };
  if (typeof def === 'number') return { type: 'number', untyped: true };
  if (typeof def === 'boolean') return { type: 'bool', untyped: true };
  return { type: 'complex', untyped: true };
}

function hclDeclarations(target: string, env: NodeJS.ProcessEnv): DeclaredVariable[] {
  const out: DeclaredVariable[] = [];
  for (const file of hclFiles(target)) {
    const text = readFileSync(file, 'utf8');
    const body: Body = file.endsWith('.json') ? parseHclJson(text, file) : parseHcl(text, file);
    const ctx = { file, scope: {}, allowEnv: true, env, cwd: process.cwd(), now: new Date(), root: path.dirname(file) };
    for (const b of blocksOf(body, 'variable')) {
      const name = b.labels[0];
      if (!name) continue;
      const attrs = new Map(attributesOf(b.body).map((a) => [a.name, a]));
      const d = attrs.get('default');
      const envDefault = d ? refsOf(d.expr).calls.has('env') : false;
      // An env() default is a secret's value: not read here (it is never written out).
      const def = d && !envDefault ? evaluate(d.expr, ctx) : undefined;
      const desc = attrs.get('description');
      const sens = attrs.get('sensitive');
      const validations = blocksOf(b.body, 'validation').map((vb) => {
        const va = new Map(attributesOf(vb.body).map((a) => [a.name, a]));
        const cond = va.get('condition');
        const msg = va.get('error_message');
        const condText = cond ? lineText(text, cond.pos.line).replace(/^condition\s*=\s*/, '') : '?';
        let msgText = '';
        try {
          msgText = msg ? String(evaluate(msg.expr, ctx)) : '';
        } catch {
          /* a message that needs more than literals: the condition says enough */
        }
        return `${condText}${msgText ? ` ("${msgText}")` : ''} (${path.basename(file)}:${vb.pos.line})`;
      });
      out.push({
        name,
        ...typeOf(attrs.get('type'), def),
        ...(d && !envDefault ? { default: def } : {}),
        ...(desc ? { description: String(evaluate(desc.expr, ctx)) } : {}),
        sensitive: sens ? evaluate(sens.expr, ctx) === true : false,
        envDefault,
        validations,
        at: { file, line: b.pos.line },
      });
    }
  }
  return out;
}

/** Legacy JSON: every variable a string, required when its default is null, sensitive by "sensitive-variables". */
function jsonDeclarations(file: string): DeclaredVariable[] {
  const text = readFileSync(file, 'utf8');
  const lines = new YAML.LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: lines });
  const raw = doc.toJS() as Record<string, Value>;
  const vars = isObject(raw.variables) ? raw.variables : {};
  const sensitive = new Set(Array.isArray(raw['sensitive-variables']) ? raw['sensitive-variables'].map(String) : []);
  const lineOf = (name: string) => {
    const node = doc.getIn(['variables', name], true) as { range?: [number, number, number] } | undefined;
    return node?.range ? lines.linePos(node.range[0]).line : 1;
  };
  return Object.entries(vars).map(([name, v]) => {
    const envDefault = typeof v === 'string' && /\{\{-?\s*env\b/.test(v);
    return {
      name,
      type: 'string' as const,
      untyped: false,
      ...(v !== null && !envDefault ? { default: typeof v === 'object' ? v : String(v) } : {}),
      sensitive: sensitive.has(name),
      envDefault,
      validations: [],
      at: { file, line: lineOf(name) },
    };
  });
}

export function declaredVariables(
  target: string,
  language: 'hcl' | 'json',
  env: NodeJS.ProcessEnv,
): DeclaredVariable[] {
  return language === 'json' ? jsonDeclarations(path.resolve(target)) : hclDeclarations(target, env);
}

/** Which locals each attribute of the template reads, by "file:line" (for the comment on a field rendered from one). */
export function localsByLine(target: string, language: 'hcl' | 'json'): Map<string, string[]> {
  const out = new Map<string, string[]>();
  if (language === 'json') return out;
  const walk = (body: Body, file: string) => {
    for (const item of body.items) {
      if (item.kind === 'block') {
        walk(item.body, file);
        continue;
      }
      const locals = [...refsOf(item.expr).roots].filter((r) => r.startsWith('local.') && !r.endsWith('.*'));
      if (locals.length) out.set(`${file}:${item.pos.line}`, locals);
    }
  };
  for (const file of hclFiles(target)) {
    try {
      const text = readFileSync(file, 'utf8');
      walk(file.endsWith('.json') ? parseHclJson(text, file) : parseHcl(text, file), file);
    } catch {
      /* the load reports a file that does not parse */
    }
  }
  return out;
}
