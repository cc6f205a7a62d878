/**
 * Packer's legacy JSON templates ({"variables", "builders", "provisioners", "post-processors"}) read
 * into kiln's Packer model, with {{user `x`}} and the other load-time template functions filled in, and
 * the line of every field (JSON is read with the YAML parser, which knows where each node is).
 */
import path from 'node:path';
import { isObject, type Value } from './eval.js';
import { GoTemplateError, escapeKiln, renderGoTemplate, type GoTemplateContext } from './gotemplate.js';
import { Taint } from './taint.js';
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
import { globMatch, type PackerInputs } from './hcl-template.js';
import { readJson } from './hcl-json.js';

/** `secrets` is filled in as values are read, so that an error thrown half-way can still be masked. */
export function loadJsonTemplate(target: string, inputs: PackerInputs, secrets: PackerSecret[] = []): PackerTemplate {
  const taint = new Taint(secrets);
  const file = path.resolve(target);
  const { text, raw: top, lineOf } = readJson(file, 'fix the JSON syntax at that line');
  if (!isObject(top))
    throw new PackerTemplateError([
      {
        at: { file, line: 1 },
        message: 'a legacy template is a JSON object with "builders"',
        fix: 'write {"builders": [{"type": "qemu", ...}]}',
      },
    ]);
  const raw = top as Record<string, Value>;
  const at = (...p: (string | number)[]): Where => ({ file, line: lineOf(p) });
  const problems: PackerProblem[] = [];
  const now = new Date();
  const env = inputs.env ?? process.env;
  const known = [
    'variables',
    'sensitive-variables',
    'builders',
    'provisioners',
    'post-processors',
    'description',
    'min_packer_version',
    '_comment',
  ];
  for (const k of Object.keys(raw)) {
    if (!known.includes(k) && !k.startsWith('_'))
      problems.push({
        at: at(k),
        field: k,
        message: `unknown top-level key "${k}"`,
        fix: `a legacy Packer template has ${known.join(', ')}`,
      });
  }

  // ---- variables: defaults (with {{env}}), then -var-file, then -var; each may use earlier ones ----
  const defs = isObject(raw.variables ?? {}) ? ((raw.variables ?? {}) as Record<string, Value>) : {};
  const sensitive = new Set(Array.isArray(raw['sensitive-variables']) ? raw['sensitive-variables'].map(String) : []);
  // A default read from the environment ({{env `CI_TOKEN`}}) is treated as sensitive, as in HCL (see taint.ts).
  // Packer renders every variable's value, -var-file and -var ones too, with {{env}} allowed.
  const readsEnv = (v: string) => /\{\{-?\s*env\b/.test(v);
  const user: Record<string, string> = {};
  const origin: Record<string, string> = {};
  /** Where each value was written: the template's "variables", a -var-file's line, or nowhere (-var). */
  const written: Record<string, Where | undefined> = {};
  /** {{user}} of names set nowhere, outside the variables section: "" as in Packer, said once (below). */
  const unset = new Map<string, Where>();
  const ctx = (extra: Partial<GoTemplateContext> = {}): GoTemplateContext => ({
    user,
    env,
    now,
    templateDir: path.dirname(file),
    ...extra,
  });
  const render = (s: string, where: Where, field: string, extra: Partial<GoTemplateContext> = {}): string => {
    try {
      return renderGoTemplate(s, ctx(extra));
    } catch (e) {
      if (!(e instanceof GoTemplateError)) throw e;
      problems.push({ at: where, field, message: e.problem, fix: e.fix });
      return s;
    }
  };
  for (const [name, v] of Object.entries(defs)) {
    if (v !== null && typeof v === 'object') {
      problems.push({
        at: at('variables', name),
        field: `variables.${name}`,
        message: "a legacy template's variable is a string",
        fix: 'write its default as a string',
      });
      continue;
    }
    // A null default makes the variable required, as in Packer ("required variable not set").
    if (v === null) continue;
    // Rendered once -var and -var-file are in: a default may use a variable given only there.
    user[name] = String(v);
    origin[name] = 'default';
    written[name] = at('variables', name);
    if (sensitive.has(name)) taint.sensitive(`var.${name}`, user[name]);
  }
  // Packer 1.6.6 takes a legacy template's -var/-var-file variables whether declared or not (kubernetes-sigs/
  // image-builder's var files rely on it).
  const set = (name: string, v: string, from: string, where?: Where) => {
    if (sensitive.has(name)) taint.sensitive(`var.${name}`, v);
    user[name] = v;
    origin[name] = from;
    written[name] = where;
  };
  for (const vf of inputs.varFiles ?? []) {
    const vfile = path.resolve(vf);
    let data: Value;
    let vline: (p: (string | number)[]) => number;
    try {
      ({ raw: data, lineOf: vline } = readJson(vfile, "a legacy template's -var-file is a JSON object of name: value"));
    } catch (e) {
      if (e instanceof PackerTemplateError) {
        problems.push(...e.problems);
        continue;
      }
      problems.push({
        message: `${vf}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        fix: 'check the -var-file path',
      });
      continue;
    }
    if (!isObject(data)) {
      problems.push({
        at: { file: vfile, line: 1 },
        message: 'a variables file is a JSON object',
        fix: 'write {"name": "value"}',
      });
      continue;
    }
    for (const [k, v] of Object.entries(data)) {
      if (v !== null && typeof v === 'object') {
        problems.push({
          at: { file: vfile, line: vline([k]) },
          field: k,
          message: "a legacy template's variable is a string",
          fix: 'write its value as a string',
        });
        continue;
      }
      set(k, String(v), vf, { file: vfile, line: vline([k]) });
    }
  }
  for (const a of inputs.vars ?? []) {
    const eq = a.indexOf('=');
    if (eq <= 0) {
      problems.push({ message: `-var ${JSON.stringify(a)}: expected name=value`, fix: 'write -var name=value' });
      continue;
    }
    set(a.slice(0, eq), a.slice(eq + 1), `-var ${a.slice(0, eq)}`);
  }
  // Reported with every other problem of the template, below; their {{user}} are not "set nowhere".
  const required = new Set(Object.keys(defs).filter((n) => defs[n] === null && !Object.hasOwn(user, n)));
  for (const n of required) {
    problems.push({
      at: at('variables', n),
      field: `variables.${n}`,
      message: 'required variable not set (its default is null)',
      fix: `give it: -var ${n}=... or a -var-file with "${n}"`,
    });
  }
  // Packer: a variable whose value is {{user `other`}} sees the other's final value; every value may read
  // {{env}} (Packer renders -var-file and -var values as it renders defaults). A {{user}} of a name set
  // nowhere is an error here, as in Packer ("treats all variables used to interpolate other user variables
  // as required"), unless that name is a required variable, reported above.
  const envRead = new Set(Object.keys(user).filter((n) => readsEnv(user[n]!)));
  const inVariables = (): Partial<GoTemplateContext> => ({
    allowEnv: true,
    ...(required.size
      ? {
          missingUser: (n: string) => {
            if (!required.has(n))
              throw new GoTemplateError(
                `{{user \`${n}\`}}: there is no variable "${n}"`,
                `declare "${n}" under "variables", or fix the name`,
              );
          },
        }
      : {}),
  });
  for (let pass = 0; pass < 2; pass++) {
    for (const name of Object.keys(user)) {
      if (!user[name]!.includes('{{')) continue;
      if (pass === 0) {
        try {
          user[name] = renderGoTemplate(user[name]!, ctx(inVariables()));
        } catch {
          /* again below, with the others rendered */
        }
      } else
        user[name] = render(
          user[name]!,
          written[name] ?? at('variables', name),
          written[name]?.file === file || !written[name] ? `variables.${name}` : name,
          inVariables(),
        );
    }
  }
  // The values as rendered: a sensitive one (or one read from the environment) is a secret, and so is
  // one whose text was filled in from a secret ({{user `password`}} inside another default).
  const isSecret = (name: string) => sensitive.has(name) || envRead.has(name);
  for (const name of Object.keys(user))
    if (isSecret(name)) taint.sensitive(`var.${name}`, user[name]!, written[name] ?? at('variables', name));
  const variables: PackerVariable[] = Object.keys(user).map((name) => ({
    name,
    value: user[name]!,
    sensitive: isSecret(name),
    from: origin[name]!,
    at: written[name] ?? at('variables', name),
  }));

  // ---- every string rendered; fields keep their line ----
  const renderTree = (v: Value, p: (string | number)[], given: Partial<GoTemplateContext>): Value => {
    const extra: Partial<GoTemplateContext> = {
      ...given,
      escapeKiln: true,
      missingUser: (n) => {
        if (required.has(n)) consequences.add(`${file}:${lineOf(p)}`);
        else if (!unset.has(n)) unset.set(n, at(...p));
      },
    };
    if (typeof v === 'string') {
      // A post-processor's own runtime values ({{ .Provider }}, {{ .BuildName }}) stay as written: kiln names its files itself.
      if (p[0] === 'post-processors') {
        try {
          return renderGoTemplate(v, ctx(extra));
        } catch {
          return escapeKiln(v);
        }
      }
      return render(v, at(...p), p.join('.'), { ...extra, executeCommand: p.includes('execute_command') });
    }
    if (Array.isArray(v)) return v.map((x, i) => renderTree(x, [...p, i], extra));
    if (isObject(v)) {
      const o: Record<string, Value> = {};
      for (const [k, x] of Object.entries(v)) o[k] = renderTree(x, [...p, k], extra);
      return o;
    }
    return v;
  };
  const consequences = new Set<string>();
  // The variables a field reads, where each was written: a problem with the value names them (a -var-file's line).
  const viaOf = (v: Value): Field['via'] => {
    const names = new Set<string>();
    const walk = (x: Value) => {
      if (typeof x === 'string') for (const m of x.matchAll(/\{\{-?\s*user\s+[`"]([^`"]+)[`"]/g)) names.add(m[1]!);
      else if (Array.isArray(x)) x.forEach(walk);
      else if (isObject(x)) Object.values(x).forEach(walk);
    };
    walk(v);
    const via = [...names].filter((n) => written[n]).map((n) => ({ ref: `{{user \`${n}\`}}`, at: written[n]! }));
    return via.length ? via : undefined;
  };
  const fieldsOf = (
    obj: Record<string, Value>,
    p: (string | number)[],
    extra: Partial<GoTemplateContext>,
    skip: string[],
  ): Map<string, Field> => {
    const out = new Map<string, Field>();
    for (const [k, v] of Object.entries(obj))
      if (!skip.includes(k)) out.set(k, { value: renderTree(v, [...p, k], extra), at: at(...p, k), via: viaOf(v) });
    return out;
  };

  const builders = Array.isArray(raw.builders) ? raw.builders : [];
  if (!builders.length)
    problems.push({
      at: at('builders'),
      field: 'builders',
      message: 'a legacy template needs a "builders" list with at least one builder',
      fix: 'add "builders": [{"type": "qemu", ...}]',
    });
  const builds: PackerBuild[] = [];
  const refused: PackerTemplate['refused'] = [];
  const names = new Set<string>();
  // Packer 1.6.6 renders a builder's name with the user variables ("ubuntu-{{user `version`}}" is the
  // build ubuntu-20.04 for -only and {{build_name}}), but matches provisioners' and post-processors'
  // only/except against the name as written, refusing one that names no builder.
  const rawNames = builders.map((b) => (isObject(b) ? String(b.name ?? b.type ?? '') : ''));
  const rendered = builders.map((b, i) =>
    isObject(b) && typeof b.name === 'string'
      ? render(b.name, at('builders', i, 'name'), `builders.${i}.name`)
      : rawNames[i]!,
  );
  const onlyExcept = (s: Record<string, Value>, p: (string | number)[]) => {
    for (const key of ['only', 'except'] as const) {
      if (!Array.isArray(s[key])) continue;
      for (const n of (s[key] as Value[]).map(String)) {
        if (rawNames.some((r) => r === n || globMatch(n, r))) continue;
        const k = rendered.indexOf(n);
        problems.push({
          at: at(...p, key),
          field: `${p.join('.')}.${key}`,
          message: `"${n}" names no builder`,
          fix:
            k >= 0
              ? `Packer 1.6.6 matches ${key} against the builder's name as written: write ${JSON.stringify(rawNames[k])}`
              : `the builders are ${rawNames.map((x) => JSON.stringify(x)).join(', ')}`,
        });
      }
    }
  };
  (Array.isArray(raw.provisioners) ? raw.provisioners : []).forEach((s, k) => {
    if (isObject(s)) onlyExcept(s, ['provisioners', k]);
  });
  (Array.isArray(raw['post-processors']) ? raw['post-processors'] : []).forEach((pp, k) => {
    if (Array.isArray(pp))
      pp.forEach((s, n) => {
        if (isObject(s)) onlyExcept(s, ['post-processors', k, n]);
      });
    else if (isObject(pp)) onlyExcept(pp, ['post-processors', k]);
  });
  builders.forEach((b, i) => {
    if (!isObject(b)) {
      problems.push({
        at: at('builders', i),
        field: `builders[${i}]`,
        message: 'a builder is an object',
        fix: 'write {"type": "qemu", ...}',
      });
      return;
    }
    const type = String(b.type ?? '');
    const rawName = rawNames[i]!;
    const name = rendered[i]!;
    if (names.has(name))
      problems.push({
        at: at('builders', i),
        field: `builders.${i}.name`,
        message: `two builders are named "${name}"`,
        fix: 'give each builder its own "name"',
      });
    names.add(name);
    if (type !== 'qemu') {
      refused.push({ fullName: name, type, at: at('builders', i) });
      return;
    }
    // {{ .Name }} is the vm_name in Packer's QEMU builder (default packer-<build name>).
    const vmName =
      typeof b.vm_name === 'string'
        ? (() => {
            try {
              return renderGoTemplate(b.vm_name, ctx({ buildName: name, user }));
            } catch {
              return undefined;
            }
          })()
        : `packer-${name}`;
    const extra: Partial<GoTemplateContext> = {
      buildName: name,
      buildType: type,
      ...(vmName !== undefined && !vmName.includes('{{') ? { vmName } : {}),
    };
    const step = (s: Value, p: (string | number)[]): PackerStep | undefined => {
      if (typeof s === 'string') return { type: s, fields: new Map(), at: at(...p) };
      if (!isObject(s)) {
        problems.push({
          at: at(...p),
          field: p.join('.'),
          message: 'expected an object with "type"',
          fix: 'write {"type": "shell", ...}',
        });
        return undefined;
      }
      const only = Array.isArray(s.only) ? s.only.map(String) : undefined;
      const except = Array.isArray(s.except) ? s.except.map(String) : undefined;
      // Packer compares the names exactly ("ubuntu-{{user `v`}}" would be a glob of alternatives); kiln also takes a glob.
      const named = (o: string) => o === rawName || globMatch(o, rawName);
      if ((only && !only.some(named)) || except?.some(named)) return undefined;
      const fields = fieldsOf(s, p, extra, ['type', 'only', 'except', 'override', 'keep_input_artifact']);
      // Packer looks overrides up by the builder's name as written, too.
      const ov = isObject(s.override ?? null) ? (s.override as Record<string, Value>)[rawName] : undefined;
      if (isObject(ov ?? null))
        for (const [k, f] of fieldsOf(ov as Record<string, Value>, [...p, 'override', rawName], extra, []))
          fields.set(k, f);
      if (s.keep_input_artifact !== undefined)
        fields.set('keep_input_artifact', { value: s.keep_input_artifact, at: at(...p, 'keep_input_artifact') });
      return { type: String(s.type ?? ''), fields, at: at(...p) };
    };
    const provisioners = (Array.isArray(raw.provisioners) ? raw.provisioners : [])
      .map((s, k) => step(s, ['provisioners', k]))
      .filter((s): s is PackerStep => s !== undefined);
    const postProcessors = (Array.isArray(raw['post-processors']) ? raw['post-processors'] : [])
      .map((pp, k) =>
        (Array.isArray(pp)
          ? pp.map((s, n) => step(s, ['post-processors', k, n]))
          : [step(pp, ['post-processors', k])]
        ).filter((s): s is PackerStep => s !== undefined),
      )
      .filter((c) => c.length);
    builds.push({
      fullName: name,
      source: { type, name, fields: fieldsOf(b, ['builders', i], extra, ['type', 'name']), at: at('builders', i) },
      provisioners,
      postProcessors,
    });
  });
  const notes = unset.size
    ? [
        `${file}: {{user}} of variable${unset.size === 1 ? '' : 's'} set nowhere, rendered as "" (as Packer does): ${[...unset].map(([n, w]) => `${n} (line ${w.line})`).join(', ')}; declare ${unset.size === 1 ? 'it' : 'them'} under "variables" or give ${unset.size === 1 ? 'it' : 'them'} with -var to silence this`,
      ]
    : [];
  const template: PackerTemplate = {
    file,
    dir: path.dirname(file),
    language: 'json',
    description: typeof raw.description === 'string' ? raw.description : undefined,
    variables,
    builds,
    refused,
    text,
    secrets,
    notes,
  };
  // The builds as read go with the problems: their mapping's problems are reported in the same run.
  if (problems.length) throw new PackerTemplateError(problems, template, consequences);
  return template;
}
