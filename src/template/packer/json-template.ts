/**
 * Packer's legacy JSON templates ({"variables", "builders", "provisioners", "post-processors"}) read
 * into kiln's Packer model, with {{user `x`}} and the other load-time template functions filled in, and
 * the line of every field (JSON is read with the YAML parser, which knows where each node is).
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import YAML, { LineCounter, isMap, isScalar, isSeq, type Node } from 'yaml';
import { isObject, type Value } from './eval.js';
import { GoTemplateError, renderGoTemplate, type GoTemplateContext } from './gotemplate.js';
import { Taint } from './taint.js';
import { PackerTemplateError, type PackerSecret, type Field, type PackerBuild, type PackerProblem, type PackerStep, type PackerTemplate, type PackerVariable, type Where } from './model.js';
import { globMatch, type PackerInputs } from './hcl-template.js';

/** `secrets` is filled in as values are read, so that an error thrown half-way can still be masked. */
export function loadJsonTemplate(target: string, inputs: PackerInputs, secrets: PackerSecret[] = []): PackerTemplate {
  const taint = new Taint(secrets);
  const file = path.resolve(target);
  const text = readFileSync(file, 'utf8');
  const counter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: counter, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new PackerTemplateError([{ at: { file, line: e.linePos?.[0]?.line ?? 1 }, message: `syntax error: ${e.message.split('\n')[0]}`, fix: 'fix the JSON syntax at that line' }]);
  }
  const raw = doc.toJS() as Record<string, Value>;
  const lineOf = (p: (string | number)[]): number => {
    for (let n = p.length; n >= 0; n--) {
      const node = doc.getIn(p.slice(0, n), true) as Node | undefined;
      if (node && (isScalar(node) || isMap(node) || isSeq(node)) && node.range) {
        if (n === p.length && n > 0 && isMap(doc.getIn(p.slice(0, n - 1), true))) {
          const parent = doc.getIn(p.slice(0, n - 1), true) as YAML.YAMLMap;
          const pair = parent.items.find((it) => isScalar(it.key) && it.key.value === p[n - 1]);
          if (pair && isScalar(pair.key) && pair.key.range) return counter.linePos(pair.key.range[0]).line;
        }
        return counter.linePos(node.range[0]).line;
      }
    }
    return 1;
  };
  const at = (...p: (string | number)[]): Where => ({ file, line: lineOf(p) });
  const problems: PackerProblem[] = [];
  const now = new Date();
  const env = inputs.env ?? process.env;
  const known = ['variables', 'sensitive-variables', 'builders', 'provisioners', 'post-processors', 'description', 'min_packer_version', '_comment'];
  for (const k of Object.keys(raw)) {
    if (!known.includes(k) && !k.startsWith('_')) problems.push({ at: at(k), field: k, message: `unknown top-level key "${k}"`, fix: `a legacy Packer template has ${known.join(', ')}` });
  }

  // ---- variables: defaults (with {{env}}), then -var-file, then -var; each may use earlier ones ----
  const defs = isObject(raw.variables ?? {}) ? (raw.variables ?? {}) as Record<string, Value> : {};
  const sensitive = new Set(Array.isArray(raw['sensitive-variables']) ? raw['sensitive-variables'].map(String) : []);
  // A default read from the environment ({{env `CI_TOKEN`}}) is treated as sensitive, as in HCL (see taint.ts).
  const envDefaults = new Set(Object.keys(defs).filter((n) => typeof defs[n] === 'string' && /\{\{-?\s*env\b/.test(defs[n] as string)));
  const user: Record<string, string> = {};
  const origin: Record<string, string> = {};
  const ctx = (extra: Partial<GoTemplateContext> = {}): GoTemplateContext => ({ user, env, now, templateDir: path.dirname(file), ...extra });
  const render = (s: string, where: Where, field: string, extra: Partial<GoTemplateContext> = {}): string => {
    try { return renderGoTemplate(s, ctx(extra)); } catch (e) {
      if (!(e instanceof GoTemplateError)) throw e;
      problems.push({ at: where, field, message: e.problem, fix: e.fix });
      return s;
    }
  };
  for (const [name, v] of Object.entries(defs)) {
    if (v !== null && typeof v === 'object') { problems.push({ at: at('variables', name), field: `variables.${name}`, message: 'a legacy template\'s variable is a string', fix: 'write its default as a string' }); continue; }
    // A null default makes the variable required, as in Packer ("required variable not set").
    if (v === null) continue;
    // Rendered once -var and -var-file are in: a default may use a variable given only there.
    user[name] = String(v);
    origin[name] = 'default';
    if (sensitive.has(name)) taint.sensitive(`var.${name}`, user[name]);
  }
  // Packer 1.6.6 takes a legacy template's -var/-var-file variables whether declared or not (kubernetes-sigs/
  // image-builder's var files rely on it); a {{user}} of a name set nowhere is still an error in kiln.
  const set = (name: string, v: string, from: string) => {
    if (sensitive.has(name)) taint.sensitive(`var.${name}`, v);
    user[name] = v;
    origin[name] = from;
  };
  for (const vf of inputs.varFiles ?? []) {
    let data: unknown;
    try { data = JSON.parse(readFileSync(path.resolve(vf), 'utf8')); } catch (e) { throw new PackerTemplateError([{ message: `${vf}: ${(e as Error).message}`, fix: 'a legacy template\'s -var-file is a JSON object of name: value' }]); }
    if (!isObject(data as Value)) throw new PackerTemplateError([{ message: `${vf}: a variables file is a JSON object`, fix: 'write {"name": "value"}' }]);
    for (const [k, v] of Object.entries(data as Record<string, Value>)) set(k, String(v), vf);
  }
  for (const a of inputs.vars ?? []) {
    const eq = a.indexOf('=');
    if (eq <= 0) throw new PackerTemplateError([{ message: `-var ${JSON.stringify(a)}: expected name=value`, fix: 'write -var name=value' }]);
    set(a.slice(0, eq), a.slice(eq + 1), `-var ${a.slice(0, eq)}`);
  }
  const required = Object.keys(defs).filter((n) => defs[n] === null && !Object.hasOwn(user, n));
  if (required.length) {
    throw new PackerTemplateError(required.map((n) => ({
      at: at('variables', n), field: `variables.${n}`, message: 'required variable not set (its default is null)',
      fix: `give it: -var ${n}=... or a -var-file with "${n}"`,
    })));
  }
  // Packer: a variable whose value is {{user `other`}} sees the other's final value.
  // Defaults in order, each seeing the values rendered before it; {{env}} only in defaults, as in Packer.
  for (let pass = 0; pass < 2; pass++) {
    for (const name of Object.keys(user)) {
      if (!user[name]!.includes('{{')) continue;
      const allowEnv = origin[name] === 'default';
      if (pass === 0) { try { user[name] = renderGoTemplate(user[name]!, ctx({ allowEnv })); } catch { /* again below, with the others rendered */ } }
      else user[name] = render(user[name]!, at('variables', name), `variables.${name}`, { allowEnv });
    }
  }
  // The values as rendered: a sensitive one (or one read from the environment by its default) is a secret,
  // and so is one whose text was filled in from a secret ({{user `password`}} inside another default).
  const isSecret = (name: string) => sensitive.has(name) || (envDefaults.has(name) && origin[name] === 'default');
  for (const name of Object.keys(user)) if (isSecret(name)) taint.sensitive(`var.${name}`, user[name]!, at('variables', name));
  const variables: PackerVariable[] = Object.keys(user).map((name) => ({ name, value: user[name]!, sensitive: isSecret(name), from: origin[name]!, at: at('variables', name) }));

  // ---- every string rendered; fields keep their line ----
  const renderTree = (v: Value, p: (string | number)[], extra: Partial<GoTemplateContext>): Value => {
    if (typeof v === 'string') {
      // A post-processor's own runtime values ({{ .Provider }}, {{ .BuildName }}) stay as written: kiln names its files itself.
      if (p[0] === 'post-processors') { try { return renderGoTemplate(v, ctx(extra)); } catch { return v; } }
      return render(v, at(...p), p.join('.'), { ...extra, executeCommand: p.includes('execute_command') });
    }
    if (Array.isArray(v)) return v.map((x, i) => renderTree(x, [...p, i], extra));
    if (isObject(v)) { const o: Record<string, Value> = {}; for (const [k, x] of Object.entries(v)) o[k] = renderTree(x, [...p, k], extra); return o; }
    return v;
  };
  const fieldsOf = (obj: Record<string, Value>, p: (string | number)[], extra: Partial<GoTemplateContext>, skip: string[]): Map<string, Field> => {
    const out = new Map<string, Field>();
    for (const [k, v] of Object.entries(obj)) if (!skip.includes(k)) out.set(k, { value: renderTree(v, [...p, k], extra), at: at(...p, k) });
    return out;
  };

  const builders = Array.isArray(raw.builders) ? raw.builders : [];
  if (!builders.length) problems.push({ at: at('builders'), field: 'builders', message: 'a legacy template needs a "builders" list with at least one builder', fix: 'add "builders": [{"type": "qemu", ...}]' });
  const builds: PackerBuild[] = [];
  const refused: PackerTemplate['refused'] = [];
  const names = new Set<string>();
  builders.forEach((b, i) => {
    if (!isObject(b)) { problems.push({ at: at('builders', i), field: `builders[${i}]`, message: 'a builder is an object', fix: 'write {"type": "qemu", ...}' }); return; }
    const type = String(b.type ?? '');
    const name = String(b.name ?? type);
    if (names.has(name)) problems.push({ at: at('builders', i), field: `builders[${i}].name`, message: `two builders are named "${name}"`, fix: 'give each builder its own "name"' });
    names.add(name);
    if (type !== 'qemu') { refused.push({ fullName: name, type, at: at('builders', i) }); return; }
    const extra = { buildName: name };
    const step = (s: Value, p: (string | number)[]): PackerStep | undefined => {
      if (typeof s === 'string') return { type: s, fields: new Map(), at: at(...p) };
      if (!isObject(s)) { problems.push({ at: at(...p), field: p.join('.'), message: 'expected an object with "type"', fix: 'write {"type": "shell", ...}' }); return undefined; }
      const only = Array.isArray(s.only) ? s.only.map(String) : undefined;
      const except = Array.isArray(s.except) ? s.except.map(String) : undefined;
      if ((only && !only.some((o) => globMatch(o, name))) || except?.some((o) => globMatch(o, name))) return undefined;
      const fields = fieldsOf(s, p, extra, ['type', 'only', 'except', 'override', 'keep_input_artifact']);
      const ov = isObject(s.override ?? null) ? (s.override as Record<string, Value>)[name] : undefined;
      if (isObject(ov ?? null)) for (const [k, f] of fieldsOf(ov as Record<string, Value>, [...p, 'override', name], extra, [])) fields.set(k, f);
      if (s.keep_input_artifact !== undefined) fields.set('keep_input_artifact', { value: s.keep_input_artifact, at: at(...p, 'keep_input_artifact') });
      return { type: String(s.type ?? ''), fields, at: at(...p) };
    };
    const provisioners = (Array.isArray(raw.provisioners) ? raw.provisioners : []).map((s, k) => step(s, ['provisioners', k])).filter((s): s is PackerStep => s !== undefined);
    const postProcessors = (Array.isArray(raw['post-processors']) ? raw['post-processors'] : []).map((pp, k) => (Array.isArray(pp) ? pp.map((s, n) => step(s, ['post-processors', k, n])) : [step(pp, ['post-processors', k])]).filter((s): s is PackerStep => s !== undefined)).filter((c) => c.length);
    builds.push({ fullName: name, source: { type, name, fields: fieldsOf(b, ['builders', i], extra, ['type', 'name']), at: at('builders', i) }, provisioners, postProcessors });
  });
  if (problems.length) throw new PackerTemplateError(problems);
  return { file, dir: path.dirname(file), language: 'json', description: typeof raw.description === 'string' ? raw.description : undefined, variables, builds, refused, text, secrets };
}
