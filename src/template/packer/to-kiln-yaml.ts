/**
 * kiln import's core: a Packer template as a kiln template tree that keeps the Packer variables as kiln
 * variables. Packer's expressions are not translated one by one; the template is evaluated with a
 * stand-in text for each variable (two different sets of them), and where a stand-in comes out intact
 * in a field, the field is `${var.NAME}` around the same text: what kiln's interpolation computes.
 * Fields that differ otherwise between the two evaluations were computed by functions kiln does not
 * have (upper(var.x), var.mem * 2): they are written with the values Packer gives them, and said so.
 * A bool variable is found the same way by evaluating once with it true and once false. A variable
 * that changes the template's shape (a conditional block, a key) is written out as its value.
 * When every variable has a value (a default or a -var), the result is checked against Packer's own
 * evaluation field by field: what kiln would compute from the YAML is what Packer computes.
 */
import path from 'node:path';
import { statSync } from 'node:fs';
import { TemplateError } from '../errors.js';
import { interpolateString, type Scalar } from '../interpolate.js';
import type { VariableInputs } from '../variables.js';
import { asTemplateError, readPackerTemplate, type PackerLoad } from './index.js';
import { globMatch, loadHclTemplate } from './hcl-template.js';
import { loadJsonTemplate } from './json-template.js';
import type { Value } from './eval.js';
import type { Where } from './model.js';
import { declaredVariables, type DeclaredVariable } from './import-declarations.js';
import { escapeOwnSyntax, hideSecrets, secretVariables, type SecretVariable } from './import-secrets.js';
import { hasUrlScheme } from '../../util/url.js';

/** How a variable is carried over: stand-in texts (letters, or digits where a number is parsed from it), true/false, or its value. */
type Mode = 'alpha' | 'lower' | 'digits' | 'bool' | 'value';

export interface KilnVariable {
  name: string;
  type: 'string' | 'number' | 'bool';
  default?: Scalar;
  description?: string;
  sensitive: boolean;
  envDefault: boolean;
}

export interface SymbolicImport {
  /** The kiln template tree: description, builds (variables are the caller's, from `variables`). */
  builds: unknown[];
  description?: string;
  load: PackerLoad;
  variables: KilnVariable[];
  /** Variables written out as their values, and why. */
  written: { name: string; value: Value; why: string }[];
  /** Kiln paths (JSON) of fields computed by Packer functions from variables, written as values. */
  computed: Set<string>;
  secretVars: SecretVariable[];
  /** Values for checking the result: the variables' values where known, else their stand-ins. */
  checkValues: Record<string, Scalar>;
  /** Variables without a value (required, none given): the check skips the fields that use them. */
  unknown: string[];
  /** Every text never to print: the secrets of the stand-in evaluation and of Packer's own. */
  secretTexts: string[];
  language: 'hcl' | 'json';
}

const alpha = (set: number, i: number) => `KlnV${set}x${i}Q`;
const digits = (set: number, i: number) => String(7_000_000_000 + set * 100_000_000 + i);
/** Lower-case letters only, for a variable whose validation or use wants them (`can(regex("^[a-z]+$", var.x))`). */
const letters = (n: number, width: number) =>
  Array.from({ length: width }, (_x, k) => String.fromCharCode(97 + (Math.floor(n / 26 ** (width - 1 - k)) % 26))).join(
    '',
  );
const lower = (set: number, i: number) => `kilnv${letters(set, 1)}${letters(i, 3)}`;
const sentinelPattern = /KlnV\d+x\d+Q|7[0-9]00\d{6}|kilnv[a-z]{4}/;

interface Options {
  only?: string[];
  except?: string[];
  dir: string;
}

/** The texts that stand for variable i in set s, by mode. */
function standIn(mode: Mode, set: number, i: number): string | undefined {
  return mode === 'alpha'
    ? alpha(set, i)
    : mode === 'lower'
      ? lower(set, i)
      : mode === 'digits'
        ? digits(set, i)
        : undefined;
}

function isDir(p: string): boolean {
  try {
    return statSync(p).isDirectory();
  } catch {
    return false;
  }
}

export function importPacker(file: string, inputs: VariableInputs, o: Options): SymbolicImport {
  const abs = path.resolve(file);
  const language: 'hcl' | 'json' = /\.json$/.test(abs) && !/\.pkr\.json$/.test(abs) && !isDir(abs) ? 'json' : 'hcl';
  let decls: DeclaredVariable[];
  try {
    decls = declaredVariables(abs, language, inputs.env ?? process.env);
  } catch (e) {
    throw asTemplateError(e, abs);
  }
  const userVars = inputs.vars ?? [];

  /** -var texts: each variable in `modes` as its stand-in of `set`; bools true (false: the one named `flip`, or all with flip '*'). */
  const assign = (modes: Map<string, Mode>, set: number, flip?: string): string[] =>
    decls.flatMap((d, i) => {
      const m = modes.get(d.name);
      if (m === 'bool') return [`${d.name}=${flip !== '*' && d.name !== flip}`];
      const t = m && standIn(m, set, i);
      if (t === undefined) return [];
      return [
        `${d.name}=${d.untyped && language === 'hcl' && (m === 'alpha' || m === 'lower') ? JSON.stringify(t) : t}`,
      ];
    });
  // -only/-except pick builds by name in each evaluation (a name may hold a variable).
  const read = (vars: string[]) =>
    readPackerTemplate(abs, { ...inputs, vars: [...userVars, ...vars] }, selectBuilds(abs, language, inputs, vars, o));

  // The variables' own values (defaults, -var...); a required one not given is "unknown": it keeps a
  // stand-in in Packer's evaluation too, and a field computed from it cannot be written.
  const initial = new Map<string, Mode>(decls.map((d) => [d.name, initialMode(d)]));
  const unknown = new Set<string>();
  try {
    read([]);
  } catch (e) {
    if (
      !(e instanceof TemplateError) ||
      !e.problems.every((p) => /has no value|required variable not set/.test(p.message))
    )
      throw e;
    for (const p of e.problems) {
      const m = /variable "([^"]+)"|variables\.([A-Za-z0-9_-]+)/.exec(`${p.path.join(' ')} ${p.message}`);
      const name = m?.[1] ?? m?.[2];
      if (name) unknown.add(name);
    }
  }
  const written: SymbolicImport['written'] = [];
  for (const d of decls) {
    if (initial.get(d.name) !== 'value' || !unknown.has(d.name)) continue;
    throw needValue(d, 'kiln variables are strings, numbers and bools; kiln import writes this one as its value', abs);
  }
  const onlyUnknown = (modes: Map<string, Mode>) => new Map([...modes].filter(([n]) => unknown.has(n)));
  const bases = (modes: Map<string, Mode>) => {
    const u = onlyUnknown(modes);
    const b1 = read(assign(u, 1));
    return { b1, b2: u.size ? read(assign(u, 2, '*')) : b1 };
  };
  // Values are filled in from Packer's evaluation once one has worked.
  for (const d of decls) {
    if (initial.get(d.name) === 'value')
      written.push({
        name: d.name,
        value: null,
        why:
          d.type === 'complex'
            ? 'a list or map: kiln variables are scalars'
            : 'its default uses a Packer function kiln does not have',
      });
  }

  const attempt = (modes: Map<string, Mode>) => {
    const s1 = read(assign(modes, 1));
    const s2 = read(assign(modes, 2));
    const flips = decls
      .filter((d) => modes.get(d.name) === 'bool')
      .map((d) => ({ name: d.name, load: read(assign(modes, 1, d.name)) }));
    return merge(decls, modes, s1, s2, flips, bases(modes), o.dir);
  };

  let modes = initial;
  let result: ReturnType<typeof merge>;
  try {
    result = attempt(modes);
  } catch (first) {
    if (first instanceof TemplateError && (first as TemplateError & { needsValues?: true }).needsValues)
      throw withStandInsNamed(first, decls, undefined, abs);
    // Which variables the stand-ins do not work for: tried one at a time, each in the modes it allows.
    const symbolic = decls.filter((d) => modes.get(d.name) !== 'value');
    const chosen = new Map<string, Mode>([...modes].filter(([, m]) => m === 'value'));
    for (const d of symbolic) {
      const tries: Mode[] =
        d.type === 'bool' ? ['bool'] : d.type === 'number' ? ['digits'] : ['alpha', 'lower', 'digits'];
      let ok: Mode = 'value';
      for (const m of tries) {
        const alone = new Map<string, Mode>(
          decls.map((x) => [
            x.name,
            x.name === d.name ? m : unknown.has(x.name) ? (chosen.get(x.name) ?? initial.get(x.name)!) : 'value',
          ]),
        );
        try {
          attempt(alone);
          ok = m;
          break;
        } catch {
          /* the next mode, or its value */
        }
      }
      if (ok === 'value' && unknown.has(d.name)) throw withStandInsNamed(first, decls, d, abs);
      chosen.set(d.name, ok);
      if (ok === 'value')
        written.push({
          name: d.name,
          value: null,
          why: "it decides the template's shape (a block, a key, a list's length) or a value kiln checks, so it cannot be a kiln variable",
        });
    }
    modes = chosen;
    try {
      result = attempt(modes);
    } catch {
      throw withStandInsNamed(first, decls, undefined, abs);
    }
  }

  const known = new Map(
    result.base.template.variables.filter((v) => !unknown.has(v.name)).map((v) => [v.name, v.value]),
  );
  for (const w of written) w.value = known.get(w.name) ?? null;
  const variables: KilnVariable[] = decls
    .filter((d) => modes.get(d.name) !== 'value')
    .map((d) => kilnVariable(d, modes.get(d.name)!, language));
  const checkValues: Record<string, Scalar> = {};
  decls.forEach((d, i) => {
    const m = modes.get(d.name)!;
    if (m === 'value') return;
    const v = known.get(d.name);
    checkValues[d.name] =
      v === undefined || v === null || typeof v === 'object'
        ? m === 'bool'
          ? true
          : m === 'digits'
            ? Number(digits(1, i))
            : standIn(m, 1, i)!
        : m === 'digits'
          ? Number(v)
          : v;
  });
  return {
    ...result,
    load: result.s1,
    variables,
    written,
    checkValues,
    unknown: [...unknown],
    secretTexts: [...new Set([...result.baseSecrets, ...result.s1.secrets])],
    language,
  };
}

function initialMode(d: DeclaredVariable): Mode {
  if (d.type === 'complex') return 'value';
  // A legacy default that uses another template function ({{timestamp}}) has no kiln equivalent.
  if (typeof d.default === 'string' && /\{\{/.test(d.default.replace(/\{\{-?\s*user\s+`[^`]+`\s*-?\}\}/g, '')))
    return 'value';
  return d.type === 'bool' ? 'bool' : d.type === 'number' ? 'digits' : 'alpha';
}

function kilnVariable(d: DeclaredVariable, mode: Mode, language: 'hcl' | 'json'): KilnVariable {
  const type = mode === 'bool' ? 'bool' : mode === 'digits' ? 'number' : 'string';
  let def: Scalar | undefined;
  if (!d.sensitive && !d.envDefault && d.default !== undefined && d.default !== null && typeof d.default !== 'object') {
    def =
      type === 'number'
        ? Number(d.default)
        : type === 'bool'
          ? d.default === true || d.default === 'true'
          : String(d.default);
    // Legacy {{user `x`}} in a default is kiln's ${var.x} (kiln fills variables into defaults too); a literal ${var. is escaped.
    if (typeof def === 'string') {
      def = escapeOwnSyntax(def) as string;
      if (language === 'json')
        def = def.replace(/\{\{-?\s*user\s+`([^`]+)`\s*-?\}\}/g, (_m, n: string) => `\${var.${n}}`);
    }
  }
  const parts = [d.description, ...d.validations.map((v) => `Packer checks: ${v}; kiln does not`)].filter(Boolean);
  return {
    name: d.name,
    type,
    ...(def !== undefined ? { default: def } : {}),
    ...(parts.length ? { description: parts.join('. ') } : {}),
    sensitive: d.sensitive || d.envDefault,
    envDefault: d.envDefault,
  };
}

function needValue(d: DeclaredVariable, why: string, file: string): TemplateError {
  return new TemplateError(d.at.file, [
    {
      path: [],
      line: d.at.line,
      message: `variable "${d.name}" has no value, and kiln import needs one: ${why}`,
      fix: `give it to kiln import: -var ${d.name}=... or a -var-file${d.at.file === file ? '' : ` (declared in ${d.at.file})`}`,
    },
  ]);
}

/** A load's error with the stand-in texts named as the variables they stand for. */
function withStandInsNamed(
  e: unknown,
  decls: DeclaredVariable[],
  culprit: DeclaredVariable | undefined,
  file: string,
): unknown {
  if (!(e instanceof TemplateError)) return e;
  const index = (l: string) => [...l].reduce((n, c) => n * 26 + c.charCodeAt(0) - 97, 0);
  const name = (t: string) =>
    t.replace(/KlnV\d+x(\d+)Q|7[0-9]00(\d{6})|kilnv[a-z]([a-z]{3})/g, (m, a?: string, b?: string, c?: string) => {
      const d = decls[c ? index(c) : Number(a ?? b)];
      return d ? `<the value of var.${d.name}>` : m;
    });
  const problems = e.problems.map((p) => ({ ...p, message: name(p.message), ...(p.fix ? { fix: name(p.fix) } : {}) }));
  if (culprit)
    problems.push({
      path: [],
      line: undefined,
      message: `kiln import cannot keep variable "${culprit.name}" (${path.basename(culprit.at.file)}:${culprit.at.line}) as a kiln variable: the template needs its value (above)`,
      fix: `give it to kiln import: -var ${culprit.name}=...; it is then written out as that value`,
    });
  return new TemplateError(e.file ?? file, problems);
}

/** -only/-except as Packer's globs over full build names; either matching nothing is an error. */
function selectBuilds(
  file: string,
  language: 'hcl' | 'json',
  inputs: VariableInputs,
  vars: string[],
  o: Options,
): string[] | undefined {
  if (!o.only?.length && !o.except?.length) return undefined;
  let names: string[];
  try {
    const t =
      language === 'json'
        ? loadJsonTemplate(file, { ...inputs, vars: [...(inputs.vars ?? []), ...vars] })
        : loadHclTemplate(file, { ...inputs, vars: [...(inputs.vars ?? []), ...vars] });
    names = [...t.builds.map((b) => b.fullName), ...t.refused.map((r) => r.fullName)];
  } catch (e) {
    throw asTemplateError(e, file);
  }
  const none = [...(o.only ?? []).map((p) => ['-only', p]), ...(o.except ?? []).map((p) => ['-except', p])].filter(
    ([, p]) => !names.some((n) => globMatch(p!, n)),
  );
  if (none.length)
    throw new TemplateError(
      file,
      none.map(([flag, p]) => ({
        path: [],
        message: `${flag}=${p} matches no build`,
        fix: `the template's builds: ${names.join(', ')}`,
      })),
    );
  const kept = names.filter(
    (n) => (!o.only?.length || o.only.some((p) => globMatch(p, n))) && !(o.except ?? []).some((p) => globMatch(p, n)),
  );
  if (!kept.length)
    throw new TemplateError(file, [
      {
        path: [],
        message: '-only/-except leave no build to import',
        fix: `the template's builds: ${names.join(', ')}`,
      },
    ]);
  // Exact names from here on: a name may hold glob characters ({{user `x`}} in an HCL name).
  return kept.map((n) => n.replace(/[*?[\]{}\\]/g, '\\$&'));
}

// ---- the two evaluations compared, field by field ----

const pathKeys = new Set([
  'base_image',
  'iso',
  'http_directory',
  'private_key_file',
  'output_directory',
  'source',
  'script',
  'playbook_file',
  'playbook_dir',
  'manifest_file',
  'hiera_config_path',
  'inventory_directory',
  'scripts',
  'cd_files',
  'floppy_files',
  'module_paths',
]);

/** A path relative to the YAML's folder when it is near (the files can move together), else absolute. */
function near(dir: string, p: string): string {
  const rel = path.relative(dir, p) || '.';
  return rel.startsWith(`..${path.sep}..${path.sep}`) ? p : rel;
}

/** Absolute paths made relative to the YAML's folder where they are near it. */
function relativize(node: unknown, dir: string, key?: string): unknown {
  if (typeof node === 'string') {
    if (key && pathKeys.has(key) && path.isAbsolute(node) && !hasUrlScheme(node)) return near(dir, node);
    if (key === 'checksum' && node.startsWith('file:/')) return `file:${near(dir, node.slice(5))}`;
    return node;
  }
  if (Array.isArray(node)) return node.map((v) => relativize(v, dir, key));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, relativize(v, dir, k)]));
  return node;
}

/** A load's builds as kiln YAML would hold them: own syntax escaped, paths relative, secrets as variables. */
function canonical(
  load: PackerLoad,
  dir: string,
  isStandIn: (t: string) => boolean,
): { tree: unknown[]; secretVars: SecretVariable[] } {
  const secretVars = secretVariables(load.template, isStandIn);
  return {
    tree: hideSecrets(relativize(unanchor(escapeOwnSyntax(load.mapped.raw.builds)), dir), secretVars) as unknown[],
    secretVars,
  };
}

/**
 * A path that starts with a variable ("${var.image}", made absolute against the current folder by the
 * mapping) is written as the variable: an absolute value stays absolute, and a relative one is then
 * relative to the YAML's folder, as every kiln path is (Packer: to the folder it runs in).
 */
function unanchor(node: unknown, key?: string): unknown {
  const cwd = `${process.cwd()}${path.sep}`;
  if (typeof node === 'string')
    return key &&
      pathKeys.has(key) &&
      node.startsWith(cwd) &&
      /^(KlnV\d+x\d+Q|7[0-9]00\d{6}|kilnv[a-z]{4})/.test(node.slice(cwd.length))
      ? node.slice(cwd.length)
      : node;
  if (Array.isArray(node)) return node.map((v) => unanchor(v, key));
  if (node && typeof node === 'object')
    return Object.fromEntries(Object.entries(node).map(([k, v]) => [k, unanchor(v, k)]));
  return node;
}

function merge(
  decls: DeclaredVariable[],
  modes: Map<string, Mode>,
  s1: PackerLoad,
  s2: PackerLoad,
  flips: { name: string; load: PackerLoad }[],
  base: { b1: PackerLoad; b2: PackerLoad },
  dir: string,
) {
  const texts = (set: number) =>
    decls
      .map((d, i) => ({ name: d.name, text: standIn(modes.get(d.name)!, set, i) }))
      .filter((x): x is { name: string; text: string } => x.text !== undefined);
  const t1 = texts(1);
  const t2 = texts(2);
  const isStandIn = (t: string) => [...t1, ...t2].some((x) => x.text === t);
  const c1 = canonical(s1, dir, isStandIn);
  const c2 = canonical(s2, dir, isStandIn);
  const cf = flips.map((f) => ({ name: f.name, tree: canonical(f.load, dir, isStandIn).tree }));
  const pb = canonical(base.b1, dir, isStandIn);
  const cb = pb.tree;
  const cb2 = base.b2 === base.b1 ? cb : canonical(base.b2, dir, isStandIn).tree;
  const symbolic = (v: unknown, set: typeof t1): unknown => {
    if (typeof v === 'number') {
      const w = set.find((x) => x.text === String(v));
      return w ? `\${var.${w.name}}` : v;
    }
    if (typeof v !== 'string') return v;
    let s = v;
    for (const x of set) s = s.split(x.text).join(`\${var.${x.name}}`);
    return s;
  };
  // What kiln computes from a field: variables filled in (secrets' variables stay as references on both sides).
  const values: Record<string, Scalar> = {};
  for (const v of base.b1.template.variables) {
    const i = decls.findIndex((x) => x.name === v.name);
    const m = modes.get(v.name);
    if (i < 0 || !m || m === 'value' || v.value === null || typeof v.value === 'object') continue;
    // A required variable without a value holds its stand-in in Packer's evaluation too; a known
    // secret's text is a reference there already (hideSecrets), and stays one on both sides.
    const stand = standIn(m, 1, i);
    if ((decls[i]!.sensitive || decls[i]!.envDefault) && !(stand !== undefined && String(v.value) === stand)) continue;
    values[v.name] = m === 'digits' ? Number(v.value) : v.value;
  }
  // A reference without a value here (a secret's variable) is left as it is, on both sides.
  const kiln = (v: unknown): unknown =>
    typeof v === 'string' ? interpolateString(v, { var: values }, () => {}, 'var') : v;
  const computed = new Set<string>();
  const kindOf = (v: unknown) => (Array.isArray(v) ? 'list' : v && typeof v === 'object' ? 'map' : 'leaf');
  type Trees = { a: unknown; b: unknown; fs: unknown[]; p1: unknown; p2: unknown };
  const child = (t: Trees, k: string | number): Trees => {
    const at = (x: unknown) => (x as Record<string | number, unknown>)[k];
    return { a: at(t.a), b: at(t.b), fs: t.fs.map(at), p1: at(t.p1), p2: at(t.p2) };
  };
  const walk = (t: Trees, at: (string | number)[]): unknown => {
    const all = [t.b, ...t.fs, t.p1, t.p2];
    const kind = kindOf(t.a);
    if (all.some((x) => kindOf(x) !== kind)) throw shapeDiffers(at, s1);
    if (kind === 'list') {
      const l = t.a as unknown[];
      if (all.some((x) => (x as unknown[]).length !== l.length)) throw shapeDiffers(at, s1);
      return l.map((_x, i) => walk(child(t, i), [...at, i]));
    }
    if (kind === 'map') {
      const keys = Object.keys(t.a as object);
      const same = (x: unknown) => {
        const k = Object.keys(x as object);
        return k.length === keys.length && keys.every((y) => k.includes(y));
      };
      if (!all.every(same)) throw shapeDiffers(at, s1);
      return Object.fromEntries(keys.map((k) => [k, walk(child(t, k), [...at, k])]));
    }
    const { a, b } = t;
    let candidate: unknown;
    const flipped = t.fs.map((f, i) => ({ f, name: cf[i]!.name })).filter((x) => x.f !== a);
    const r1 = symbolic(a, t1);
    const plain = r1 === symbolic(b, t2) && !sentinelPattern.test(String(r1));
    if (!flipped.length) candidate = a === b ? a : plain ? r1 : undefined;
    else if (flipped.length === 1 && plain) {
      // A bool: true here, false in the evaluation where it was false ("VERBOSE=true" -> "VERBOSE=${var.verbose}").
      const ref = `\${var.${flipped[0]!.name}}`;
      const f = symbolic(flipped[0]!.f, t1);
      if (a === true && f === false) candidate = ref;
      else if (
        typeof r1 === 'string' &&
        typeof f === 'string' &&
        r1.includes('true') &&
        r1.split('true').join('false') === f
      )
        candidate = r1.split('true').join(ref);
    }
    // Checked against Packer's own values: a stand-in that a function turned into something else
    // (lower() of lower-case text, a comparison) is caught here.
    if (candidate !== undefined && kiln(candidate) === kiln(t.p1)) return candidate;
    // A path led by a variable: Packer's value, relative to the current folder, is the path Packer uses.
    const key = [...at].reverse().find((k) => typeof k === 'string');
    if (
      typeof candidate === 'string' &&
      candidate.startsWith('${var.') &&
      key &&
      pathKeys.has(key) &&
      typeof t.p1 === 'string'
    ) {
      if (path.resolve(String(kiln(candidate))) === path.resolve(dir, t.p1)) return candidate;
    }
    // Computed by a function: written as Packer's value, unless it depends on a variable without one.
    if (JSON.stringify(t.p1) !== JSON.stringify(t.p2)) throw computedNeedsValues(at, s1);
    computed.add(JSON.stringify(['builds', ...at]));
    return t.p1;
  };
  const builds = walk({ a: c1.tree, b: c2.tree, fs: cf.map((f) => f.tree), p1: cb, p2: cb2 }, []) as unknown[];
  // The secrets' variables the result refers to: a field written as Packer's value names those of
  // Packer's own evaluation; the same name in both is one variable (the stand-in one's texts are not secrets).
  const text = JSON.stringify(builds);
  const byName = new Map<string, SecretVariable>();
  for (const v of [...pb.secretVars, ...c1.secretVars])
    if (text.includes(`\${var.${v.name}}`)) byName.set(v.name, { ...v, used: true });
  return {
    builds,
    description: s1.mapped.raw.description,
    computed,
    secretVars: [...byName.values()],
    s1,
    base: base.b1,
    baseSecrets: base.b1.secrets,
  };
}

/** A problem at a kiln path, told at the Packer field (file:line) it came from. */
function atPackerField(at: (string | number)[], load: PackerLoad, message: string, fix: string): TemplateError {
  const key = JSON.stringify(['builds', ...at]);
  // The field itself, or the nearest enclosing one that has an origin.
  const o =
    load.mapped.origins.get(key) ??
    [...load.mapped.origins]
      .filter(([k]) => key.startsWith(k.slice(0, -1)))
      .sort((x, y) => y[0].length - x[0].length)[0]?.[1];
  const where: Where = o ?? { file: load.template.file, line: 1 };
  return new TemplateError(where.file, [
    { path: [], line: where.line, message: `${o ? `${o.field}: ` : ''}${message}`, fix },
  ]);
}

/** A field computed from variables that have no value: kiln import cannot write it. */
function computedNeedsValues(at: (string | number)[], load: PackerLoad): TemplateError {
  return Object.assign(
    atPackerField(
      at,
      load,
      'this value is computed by Packer functions from variables that have no value; kiln has no functions, so kiln import writes it as its value',
      'give kiln import the variables it reads (-var name=... or a -var-file): they are kept as kiln variables, and this field is written with the value Packer computes',
    ),
    { needsValues: true as const },
  );
}

/** Variables decide whether this field exists (a conditional, a dynamic block, a key): kiln import needs their values. */
function shapeDiffers(at: (string | number)[], load: PackerLoad): TemplateError {
  return atPackerField(
    at,
    load,
    "which fields the template has here depends on a variable's value; a kiln template has no conditionals",
    'give kiln import the variables this field reads (-var name=...): it is then written with their values',
  );
}
