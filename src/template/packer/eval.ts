/**
 * Evaluates HCL expressions the way Packer does, for the parts of a template kiln reads: variables,
 * locals, path.root, source.*, build.* (which become kiln's ${build.*} references, known at run time)
 * and the functions real templates call. Every failure names file:line:column.
 */
import { createHash, randomUUID } from 'node:crypto';
import { existsSync, readFileSync, realpathSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { HclError, maxHclDepth, parseHclTemplate, type Expr, type Pos, type TemplatePart } from './hcl.js';
import { arityProblem, typeProblem } from './signatures.js';

export type Value = string | number | boolean | null | Value[] | { [key: string]: Value };

export interface EvalContext {
  file: string;
  /** Top-level names: var, local, path, source, build... */
  scope: Record<string, Value>;
  /** env() is allowed only in variable defaults, as in Packer. */
  allowEnv?: boolean;
  env?: NodeJS.ProcessEnv;
  /** Folder relative file() paths resolve against (Packer: the working directory; path.root is explicit). */
  cwd: string;
  /** Fixed for one load, so that timestamp() is the same wherever it is used. */
  now: Date;
  /** The template's folder: a file()/templatefile()/fileexists()/filebase64() path outside it is reported. */
  root?: string;
  /** Told of every path a function reads (or tests), with whether it is outside `root`. */
  onFileRead?: (read: FileRead) => void;
  /** The templatefile() being rendered, if any (Packer refuses templatefile() inside one). */
  inTemplateFile?: { file: string; caller: string };
}

/** A path a template's function read, and where. */
export interface FileRead {
  fn: string;
  path: string;
  file: string;
  pos: Pos;
  outside: boolean;
  root?: string;
}

/** The warning for a read outside the template's folder, one line. */
export function fileReadNote(r: FileRead): string {
  return `${r.file}:${r.pos.line}:${r.pos.column}: ${r.fn}() reads ${r.path}, outside the template's folder${r.root ? ` ${r.root}` : ''} (Packer allows it; check that the template should read it, as its content can reach messages and the guest)`;
}

/**
 * Texts read by file(), templatefile() and filebase64() (content -> path), so that no message echoes a
 * file's content (a CI secret a template points at): kiln's own messages below show "the content of
 * <path>" instead, and readFromFile() lets other messages do the same. Bounded: the newest 256 reads.
 */
const readTexts = new Map<string, string>();
const maxReadTexts = 256;

function rememberRead(text: string, file: string): void {
  readTexts.delete(text);
  readTexts.set(text, file);
  if (readTexts.size > maxReadTexts) readTexts.delete(readTexts.keys().next().value!);
}

/** The file a string was read from (or holds the whole content of), if file() and friends read it. */
export function readFromFile(s: string): string | undefined {
  const exact = readTexts.get(s);
  if (exact !== undefined) return exact;
  for (const [text, file] of readTexts) {
    const core = text.trim();
    if ((core.length >= 4 && s.includes(core)) || (s.length >= 8 && text.includes(s))) return file;
  }
  return undefined;
}

/** Every text read from a file so far (for masking in messages kiln prints elsewhere). */
export const textsReadFromFiles = (): string[] => [...readTexts.keys()];

/** A value as a message shows it: JSON, except a file's content, shown as where it came from. */
function shown(v: Value): string {
  const text = JSON.stringify(v) ?? String(v);
  if (typeof v !== 'string' && (typeof v !== 'object' || v === null)) return text;
  const from = readFromFile(typeof v === 'string' ? v : text);
  return from ? `(the content of ${from}, not shown)` : text;
}

export const isObject = (v: Value | undefined): v is { [key: string]: Value } =>
  typeof v === 'object' && v !== null && !Array.isArray(v);

export function typeName(v: Value): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'list';
  if (typeof v === 'object') return 'map';
  return typeof v;
}

function fail(ctx: EvalContext, pos: Pos, problem: string, fix?: string): never {
  throw new HclError(ctx.file, pos, problem, fix);
}

function asString(ctx: EvalContext, v: Value, pos: Pos, what = 'a string'): string {
  if (typeof v === 'string') return v;
  if (typeof v === 'number' || typeof v === 'boolean') return String(v);
  fail(ctx, pos, `${what} is needed here, but the value is ${v === null ? 'null' : `a ${typeName(v)}`}`);
}
function asNumber(ctx: EvalContext, v: Value, pos: Pos): number {
  if (typeof v === 'number') return v;
  if (typeof v === 'string' && v.trim() !== '' && Number.isFinite(Number(v))) return Number(v);
  fail(ctx, pos, `a number is needed here, but the value is ${shown(v)}`);
}
function asBool(ctx: EvalContext, v: Value, pos: Pos): boolean {
  if (typeof v === 'boolean') return v;
  if (v === 'true' || v === 'false') return v === 'true';
  fail(ctx, pos, `true or false is needed here, but the value is ${shown(v)}`);
}
function asList(ctx: EvalContext, v: Value, pos: Pos): Value[] {
  if (Array.isArray(v)) return v;
  fail(ctx, pos, `a list is needed here, but the value is ${v === null ? 'null' : `a ${typeName(v)}`}`);
}
function asMap(ctx: EvalContext, v: Value, pos: Pos): { [key: string]: Value } {
  if (isObject(v)) return v;
  fail(ctx, pos, `a map is needed here, but the value is ${v === null ? 'null' : `a ${typeName(v)}`}`);
}

/** How deep lists and maps nest in a value, counted without recursion and up to `limit` + 1. */
export function valueDepth(v: Value, limit = Infinity): number {
  let max = 0;
  const stack: [Value, number][] = [[v, 0]];
  while (stack.length) {
    const [x, d] = stack.pop()!;
    if (d > max) max = d;
    if (max > limit) return max;
    if (x !== null && typeof x === 'object') for (const c of Object.values(x)) stack.push([c, d + 1]);
  }
  return max;
}

function equal(a: Value, b: Value): boolean {
  return JSON.stringify(a) === JSON.stringify(b);
}

/** An own property only: var.constructor must not find Object.prototype's. */
const own = (o: { [key: string]: Value }, k: string): Value | undefined => (Object.hasOwn(o, k) ? o[k] : undefined);

function set(o: { [key: string]: Value }, k: string, v: Value): void {
  Object.defineProperty(o, k, { value: v, enumerable: true, writable: true, configurable: true });
}

/**
 * How deep evaluation may recurse. The parser already bounds a tree's depth (maxHclDepth); this is the
 * backstop for what the tree does not show (dynamic blocks' bindings, templates), so that nothing ends
 * in "Maximum call stack size exceeded" without a location.
 */
export const maxEvalDepth = 1000;
let evalDepth = 0;

export function evaluate(e: Expr, ctx: EvalContext, locals: Record<string, Value> = {}): Value {
  if (evalDepth >= maxEvalDepth)
    fail(
      ctx,
      e.pos,
      `the expression is evaluated more than ${maxEvalDepth} levels deep here`,
      'flatten it: move inner parts into locals (local.x)',
    );
  evalDepth++;
  try {
    const v = evaluateNode(e, ctx, locals);
    // HCL's numbers are arbitrary-precision; kiln's are doubles: an overflow is said here, not as "null" later.
    if (typeof v === 'number' && !Number.isFinite(v))
      fail(
        ctx,
        e.pos,
        `the number is out of range (${v > 0 ? 'above about 1.8e308' : v < 0 ? 'below about -1.8e308' : 'not a number'})`,
        'keep numbers within about ±1.8e308',
      );
    return v;
  } catch (err) {
    // A value nested too deep for a comparison or an encoding (from a -var-file, say): said here, located.
    if (err instanceof RangeError && /call stack/i.test(err.message))
      fail(
        ctx,
        e.pos,
        'a value here nests too deeply to work with',
        'flatten the value (a -var-file or jsondecode() input nested hundreds of levels deep)',
      );
    throw err;
  } finally {
    evalDepth--;
  }
}

function evaluateNode(e: Expr, ctx: EvalContext, locals: Record<string, Value>): Value {
  const ev = (x: Expr, l = locals) => evaluate(x, ctx, l);
  switch (e.kind) {
    case 'literal':
      return e.value;
    case 'template':
      return renderTemplate(e.parts, ctx, locals, e.pos);
    case 'tuple':
      return e.items.map((x) => ev(x));
    case 'object': {
      const out: { [key: string]: Value } = {};
      for (const it of e.items)
        set(out, it.bareKey ?? asString(ctx, ev(it.key), it.key.pos, 'a map key'), ev(it.value));
      return out;
    }
    case 'variable': {
      if (Object.hasOwn(locals, e.name)) return locals[e.name]!;
      const v = own(ctx.scope, e.name);
      if (v === undefined) {
        const known = ['var', 'local', 'path', 'source', 'build'].filter((n) => Object.hasOwn(ctx.scope, n));
        fail(
          ctx,
          e.pos,
          `unknown name "${e.name}"`,
          `Packer templates refer to ${known.map((k) => `${k}.<name>`).join(', ')}`,
        );
      }
      return v;
    }
    case 'getattr': {
      const t = ev(e.target);
      if (!isObject(t)) fail(ctx, e.pos, `cannot take ".${e.name}" of ${t === null ? 'null' : `a ${typeName(t)}`}`);
      const v = own(t, e.name);
      if (v === undefined) {
        const base = e.target.kind === 'variable' ? e.target.name : 'the map';
        const names = Object.keys(t);
        fail(
          ctx,
          e.pos,
          `${base}.${e.name} is not defined`,
          names.length ? `${base} has: ${names.slice(0, 20).join(', ')}` : `declare it first`,
        );
      }
      return v;
    }
    case 'index': {
      const t = ev(e.target);
      const k = ev(e.key);
      if (Array.isArray(t)) {
        const n = asNumber(ctx, k, e.key.pos);
        if (!Number.isInteger(n) || n < 0 || n >= t.length)
          fail(ctx, e.key.pos, `index ${n} is outside the list (it has ${t.length} item${t.length === 1 ? '' : 's'})`);
        return t[n]!;
      }
      if (isObject(t)) {
        const key = asString(ctx, k, e.key.pos, 'a map key');
        const v = own(t, key);
        if (v === undefined)
          fail(ctx, e.key.pos, `the map has no key ${shown(key)}`, `it has: ${Object.keys(t).slice(0, 20).join(', ')}`);
        return v;
      }
      fail(ctx, e.pos, `cannot index ${t === null ? 'null' : `a ${typeName(t)}`}`);
    }
    case 'splat': {
      const t = ev(e.target);
      const items = t === null ? [] : Array.isArray(t) ? t : [t];
      return items.map((item) => (e.each ? evaluate(e.each, ctx, { ...locals, '\0splat': item }) : item));
    }
    case 'splatItem':
      return locals['\0splat'] ?? null;
    case 'bound':
      return ev(e.expr, { ...locals, ...(e.names as Record<string, Value>) });
    case 'call':
      return callFunction(e, ctx, locals);
    case 'unary': {
      const v = ev(e.operand);
      return e.op === '!' ? !asBool(ctx, v, e.operand.pos) : -asNumber(ctx, v, e.operand.pos);
    }
    case 'binary': {
      if (e.op === '&&') return asBool(ctx, ev(e.left), e.left.pos) && asBool(ctx, ev(e.right), e.right.pos);
      if (e.op === '||') return asBool(ctx, ev(e.left), e.left.pos) || asBool(ctx, ev(e.right), e.right.pos);
      const a = ev(e.left);
      const b = ev(e.right);
      if (e.op === '==') return equal(a, b);
      if (e.op === '!=') return !equal(a, b);
      const x = asNumber(ctx, a, e.left.pos);
      const y = asNumber(ctx, b, e.right.pos);
      switch (e.op) {
        case '+':
          return x + y;
        case '-':
          return x - y;
        case '*':
          return x * y;
        case '/':
          if (y === 0) fail(ctx, e.right.pos, 'division by zero');
          return x / y;
        case '%':
          if (y === 0) fail(ctx, e.right.pos, 'division by zero');
          return x % y;
        case '<':
          return x < y;
        case '>':
          return x > y;
        case '<=':
          return x <= y;
        case '>=':
          return x >= y;
      }
      fail(ctx, e.pos, `unknown operator ${e.op}`);
    }
    case 'conditional':
      return asBool(ctx, ev(e.cond), e.cond.pos) ? ev(e.then) : ev(e.else);
    case 'for': {
      const coll = ev(e.collection);
      const pairs: [Value, Value][] = Array.isArray(coll)
        ? coll.map((v, i) => [i, v])
        : isObject(coll)
          ? Object.entries(coll)
          : fail(ctx, e.collection.pos, `a for expression needs a list or a map, not ${typeName(coll)}`);
      const outList: Value[] = [];
      const outMap: { [key: string]: Value } = {};
      for (const [k, v] of pairs) {
        const l = { ...locals, [e.valueVar]: v, ...(e.keyVar ? { [e.keyVar]: k } : {}) };
        if (e.cond && !asBool(ctx, evaluate(e.cond, ctx, l), e.cond.pos)) continue;
        const value = evaluate(e.value, ctx, l);
        if (!e.object) {
          outList.push(value);
          continue;
        }
        const key = asString(ctx, evaluate(e.key!, ctx, l), e.key!.pos, 'a map key');
        if (e.grouping) {
          const prev = own(outMap, key);
          set(outMap, key, [...(Array.isArray(prev) ? prev : []), value]);
          continue;
        }
        if (own(outMap, key) !== undefined)
          fail(
            ctx,
            e.key!.pos,
            `two items have the key ${shown(key)}`,
            'add "..." after the value to group them, or make the keys unique',
          );
        set(outMap, key, value);
      }
      return e.object ? outMap : outList;
    }
  }
}

function renderTemplate(parts: TemplatePart[], ctx: EvalContext, locals: Record<string, Value>, pos: Pos): Value {
  // A template that is exactly one interpolation keeps the value's own type (HCL's rule).
  const only = parts[0];
  if (parts.length === 1 && only?.kind === 'interp') return evaluate(only.expr, ctx, locals);
  let out = '';
  for (const p of parts) {
    switch (p.kind) {
      case 'text':
        out += p.text;
        break;
      case 'interp': {
        const v = evaluate(p.expr, ctx, locals);
        if (v === null) fail(ctx, p.expr.pos, 'null cannot be written into a string', 'give the variable a value');
        out += asString(ctx, v, p.expr.pos, 'a string (or number or bool) to write into the text');
        break;
      }
      case 'if':
        out += String(
          renderTemplate(asBool(ctx, evaluate(p.cond, ctx, locals), p.cond.pos) ? p.then : p.else, ctx, locals, pos) ??
            '',
        );
        break;
      case 'for': {
        const coll = evaluate(p.collection, ctx, locals);
        const pairs: [Value, Value][] = Array.isArray(coll)
          ? coll.map((v, i) => [i, v])
          : isObject(coll)
            ? Object.entries(coll)
            : fail(ctx, p.collection.pos, `%{for} needs a list or a map, not ${typeName(coll)}`);
        for (const [k, v] of pairs) {
          const r = renderTemplate(
            p.body,
            ctx,
            { ...locals, [p.valueVar]: v, ...(p.keyVar ? { [p.keyVar]: k } : {}) },
            pos,
          );
          out += r === null ? '' : asString(ctx, r, pos);
        }
        break;
      }
    }
  }
  return out;
}

/** Go's fmt verbs as HCL's format() knows them: %s %d %f %q %v %t %%, with width/precision. */
function formatString(ctx: EvalContext, pos: Pos, spec: string, args: Value[]): string {
  let n = 0;
  return spec.replace(
    /%([-+ 0#]*)(\d+)?(?:\.(\d+))?([a-zA-Z%])/g,
    (_m, flags: string, width: string | undefined, prec: string | undefined, verb: string) => {
      if (verb === '%') return '%';
      if (n >= args.length) fail(ctx, pos, `format() has more verbs than arguments in ${shown(spec)}`);
      const a = args[n++]!;
      let s: string;
      switch (verb) {
        case 's':
          s = asString(ctx, a, pos);
          break;
        case 'd':
          s = String(Math.trunc(asNumber(ctx, a, pos)));
          break;
        case 'f':
          s = asNumber(ctx, a, pos).toFixed(prec ? Number(prec) : 6);
          break;
        case 'q':
          s = JSON.stringify(asString(ctx, a, pos));
          break;
        case 't':
          s = String(asBool(ctx, a, pos));
          break;
        case 'v':
          s = typeof a === 'string' || typeof a === 'number' || typeof a === 'boolean' ? String(a) : JSON.stringify(a);
          break;
        case 'x':
          s = typeof a === 'number' ? Math.trunc(a).toString(16) : Buffer.from(asString(ctx, a, pos)).toString('hex');
          break;
        default:
          fail(ctx, pos, `format() verb %${verb} is not supported by kiln`, 'use %s, %d, %f, %q, %t, %v or %x');
      }
      if (width && s.length < Number(width))
        s = flags.includes('-') ? s.padEnd(Number(width)) : s.padStart(Number(width), flags.includes('0') ? '0' : ' ');
      return s;
    },
  );
}

/** HCL's formatdate() spec letters: YYYY YY MMMM MMM MM M DD D EEEE EEE hh h HH H mm m ss s ZZZ Z 'literal'. */
function formatDate(spec: string, d: Date): string {
  const pad = (x: number, w = 2) => String(x).padStart(w, '0');
  const months = [
    'January',
    'February',
    'March',
    'April',
    'May',
    'June',
    'July',
    'August',
    'September',
    'October',
    'November',
    'December',
  ];
  const days = ['Sunday', 'Monday', 'Tuesday', 'Wednesday', 'Thursday', 'Friday', 'Saturday'];
  const tokens: Record<string, () => string> = {
    YYYY: () => String(d.getUTCFullYear()),
    YY: () => pad(d.getUTCFullYear() % 100),
    MMMM: () => months[d.getUTCMonth()]!,
    MMM: () => months[d.getUTCMonth()]!.slice(0, 3),
    MM: () => pad(d.getUTCMonth() + 1),
    M: () => String(d.getUTCMonth() + 1),
    DD: () => pad(d.getUTCDate()),
    D: () => String(d.getUTCDate()),
    EEEE: () => days[d.getUTCDay()]!,
    EEE: () => days[d.getUTCDay()]!.slice(0, 3),
    hh: () => pad(d.getUTCHours()),
    h: () => String(d.getUTCHours()),
    HH: () => pad(d.getUTCHours() % 12 || 12),
    H: () => String(d.getUTCHours() % 12 || 12),
    AA: () => (d.getUTCHours() < 12 ? 'AM' : 'PM'),
    aa: () => (d.getUTCHours() < 12 ? 'am' : 'pm'),
    mm: () => pad(d.getUTCMinutes()),
    m: () => String(d.getUTCMinutes()),
    ss: () => pad(d.getUTCSeconds()),
    s: () => String(d.getUTCSeconds()),
    ZZZZZ: () => '+00:00',
    ZZZZ: () => '+0000',
    ZZZ: () => 'UTC',
    Z: () => 'Z',
  };
  let out = '';
  let i = 0;
  while (i < spec.length) {
    if (spec[i] === "'") {
      const end = spec.indexOf("'", i + 1);
      if (end === i + 1) {
        out += "'";
        i += 2;
        continue;
      }
      out += spec.slice(i + 1, end < 0 ? spec.length : end);
      i = end < 0 ? spec.length : end + 1;
      continue;
    }
    const tok = Object.keys(tokens).find((t) => spec.startsWith(t, i));
    if (tok) {
      out += tokens[tok]!();
      i += tok.length;
      continue;
    }
    out += spec[i];
    i++;
  }
  return out;
}

/** Go's reference-time layout (2006-01-02 15:04:05), for legacy_isotime(). */
function goLayout(layout: string, d: Date): string {
  const pad = (n: number) => String(n).padStart(2, '0');
  const parts: [string, string][] = [
    ['2006', String(d.getUTCFullYear())],
    ['01', pad(d.getUTCMonth() + 1)],
    ['02', pad(d.getUTCDate())],
    ['15', pad(d.getUTCHours())],
    ['04', pad(d.getUTCMinutes())],
    ['05', pad(d.getUTCSeconds())],
  ];
  let out = '';
  for (let i = 0; i < layout.length;) {
    const hit = parts.find(([k]) => layout.startsWith(k, i));
    if (hit) {
      out += hit[1];
      i += hit[0].length;
    } else {
      out += layout[i];
      i++;
    }
  }
  return out;
}

const rfc3339 = (d: Date) => d.toISOString().replace(/\.\d{3}Z$/, 'Z');

type Fn = (args: Value[], ctx: EvalContext, pos: Pos, argPos: Pos[]) => Value;

function flatten(v: Value[]): Value[] {
  return v.flatMap((x) => (Array.isArray(x) ? flatten(x) : [x]));
}

const functions: Record<string, Fn> = {
  // strings
  join: ([sep, ...lists], ctx, pos) =>
    flatten(lists.map((l) => asList(ctx, l!, pos)))
      .map((x) => asString(ctx, x, pos))
      .join(asString(ctx, sep!, pos)),
  split: ([sep, s], ctx, pos) => asString(ctx, s!, pos).split(asString(ctx, sep!, pos)),
  format: ([spec, ...args], ctx, pos) => formatString(ctx, pos, asString(ctx, spec!, pos), args),
  formatlist: ([spec, ...args], ctx, pos) => {
    const len = Math.max(...args.map((a) => (Array.isArray(a) ? a.length : 1)));
    return Array.from({ length: len }, (_, i) =>
      formatString(
        ctx,
        pos,
        asString(ctx, spec!, pos),
        args.map((a) => (Array.isArray(a) ? a[i]! : a)),
      ),
    );
  },
  lower: ([s], ctx, pos) => asString(ctx, s!, pos).toLowerCase(),
  upper: ([s], ctx, pos) => asString(ctx, s!, pos).toUpperCase(),
  title: ([s], ctx, pos) => asString(ctx, s!, pos).replace(/\b\w/g, (c) => c.toUpperCase()),
  replace: ([s, from, to], ctx, pos) => {
    const str = asString(ctx, s!, pos);
    const f = asString(ctx, from!, pos);
    const t = asString(ctx, to!, pos);
    // "/re/" is a regular expression (HCL's rule), anything else a plain substring.
    if (f.length > 1 && f.startsWith('/') && f.endsWith('/'))
      return str.replace(new RegExp(f.slice(1, -1), 'g'), t.replace(/\$\{(\d+)\}/g, '$$$1'));
    return str.split(f).join(t);
  },
  regex_replace: ([s, re, to], ctx, pos) =>
    asString(ctx, s!, pos).replace(
      new RegExp(asString(ctx, re!, pos), 'g'),
      asString(ctx, to!, pos).replace(/\$\{(\d+)\}/g, '$$$1'),
    ),
  trimspace: ([s], ctx, pos) => asString(ctx, s!, pos).trim(),
  trim: ([s, cut], ctx, pos) => {
    const c = [...asString(ctx, cut!, pos)];
    let x = asString(ctx, s!, pos);
    while (x && c.includes(x[0]!)) x = x.slice(1);
    while (x && c.includes(x[x.length - 1]!)) x = x.slice(0, -1);
    return x;
  },
  trimprefix: ([s, p], ctx, pos) => {
    const x = asString(ctx, s!, pos);
    const q = asString(ctx, p!, pos);
    return x.startsWith(q) ? x.slice(q.length) : x;
  },
  trimsuffix: ([s, p], ctx, pos) => {
    const x = asString(ctx, s!, pos);
    const q = asString(ctx, p!, pos);
    return q && x.endsWith(q) ? x.slice(0, -q.length) : x;
  },
  chomp: ([s], ctx, pos) => asString(ctx, s!, pos).replace(/(\r?\n)+$/, ''),
  substr: ([s, off, len], ctx, pos) => {
    const x = [...asString(ctx, s!, pos)];
    let o = asNumber(ctx, off!, pos);
    const l = asNumber(ctx, len!, pos);
    if (o < 0) o += x.length;
    return x.slice(o, l < 0 ? undefined : o + l).join('');
  },
  strrev: ([s], ctx, pos) => [...asString(ctx, s!, pos)].reverse().join(''),
  startswith: ([s, p], ctx, pos) => asString(ctx, s!, pos).startsWith(asString(ctx, p!, pos)),
  endswith: ([s, p], ctx, pos) => asString(ctx, s!, pos).endsWith(asString(ctx, p!, pos)),
  strcontains: ([s, p], ctx, pos) => asString(ctx, s!, pos).includes(asString(ctx, p!, pos)),
  indent: ([n, s], ctx, pos) =>
    asString(ctx, s!, pos)
      .split('\n')
      .map((l, i) => (i ? ' '.repeat(asNumber(ctx, n!, pos)) + l : l))
      .join('\n'),
  // collections
  concat: (lists, ctx, pos) => lists.flatMap((l) => asList(ctx, l, pos)),
  flatten: ([l], ctx, pos) => flatten(asList(ctx, l!, pos)),
  length: ([v], ctx, pos) =>
    typeof v === 'string'
      ? [...v].length
      : Array.isArray(v)
        ? v.length
        : isObject(v!)
          ? Object.keys(v).length
          : fail(ctx, pos, 'length() needs a string, list or map'),
  element: ([l, i], ctx, pos) => {
    const x = asList(ctx, l!, pos);
    if (!x.length) fail(ctx, pos, 'element() of an empty list');
    return x[asNumber(ctx, i!, pos) % x.length]!;
  },
  index: ([l, v], ctx, pos) => {
    const i = asList(ctx, l!, pos).findIndex((x) => equal(x, v!));
    if (i < 0) fail(ctx, pos, 'index(): the value is not in the list');
    return i;
  },
  contains: ([l, v], ctx, pos) => asList(ctx, l!, pos).some((x) => equal(x, v!)),
  distinct: ([l], ctx, pos) => asList(ctx, l!, pos).filter((x, i, a) => a.findIndex((y) => equal(x, y)) === i),
  compact: ([l], ctx, pos) => asList(ctx, l!, pos).filter((x) => x !== null && x !== ''),
  reverse: ([l], ctx, pos) => [...asList(ctx, l!, pos)].reverse(),
  sort: ([l], ctx, pos) =>
    asList(ctx, l!, pos)
      .map((x) => asString(ctx, x, pos))
      .sort(),
  slice: ([l, a, b], ctx, pos) => asList(ctx, l!, pos).slice(asNumber(ctx, a!, pos), asNumber(ctx, b!, pos)),
  range: (args, ctx, pos) => {
    const n = args.map((a) => asNumber(ctx, a, pos));
    const [start, end, step] = n.length === 1 ? [0, n[0]!, 1] : [n[0]!, n[1]!, n[2] ?? 1];
    if (step === 0) fail(ctx, pos, 'range(): the step must not be zero');
    const out: number[] = [];
    for (let x = start; step > 0 ? x < end : x > end; x += step) {
      out.push(x);
      if (out.length > 1024) fail(ctx, pos, 'range() makes more than 1024 numbers');
    }
    return out;
  },
  keys: ([m], ctx, pos) => Object.keys(asMap(ctx, m!, pos)).sort(),
  values: ([m], ctx, pos) => {
    const x = asMap(ctx, m!, pos);
    return Object.keys(x)
      .sort()
      .map((k) => x[k]!);
  },
  lookup: ([m, k, d], ctx, pos) => {
    const v = own(asMap(ctx, m!, pos), asString(ctx, k!, pos));
    if (v !== undefined) return v;
    if (d !== undefined) return d;
    fail(
      ctx,
      pos,
      `lookup(): the map has no key ${shown(k!)} and no default was given`,
      'add a default as the third argument',
    );
  },
  merge: (maps, ctx, pos) => {
    const out: { [key: string]: Value } = {};
    for (const m of maps) if (m !== null) for (const [k, v] of Object.entries(asMap(ctx, m, pos))) set(out, k, v);
    return out;
  },
  zipmap: ([ks, vs], ctx, pos) => {
    const out: { [key: string]: Value } = {};
    asList(ctx, ks!, pos).forEach((k, i) => set(out, asString(ctx, k, pos), asList(ctx, vs!, pos)[i] ?? null));
    return out;
  },
  coalesce: (args, ctx, pos) => {
    const v = args.find((a) => a !== null && a !== '');
    if (v === undefined) fail(ctx, pos, 'coalesce(): every argument is null or empty');
    return v;
  },
  coalescelist: (args, ctx, pos) => args.find((a) => asList(ctx, a, pos).length > 0) ?? [],
  min: (args, ctx, pos) => Math.min(...args.map((a) => asNumber(ctx, a, pos))),
  max: (args, ctx, pos) => Math.max(...args.map((a) => asNumber(ctx, a, pos))),
  abs: ([n], ctx, pos) => Math.abs(asNumber(ctx, n!, pos)),
  ceil: ([n], ctx, pos) => Math.ceil(asNumber(ctx, n!, pos)),
  floor: ([n], ctx, pos) => Math.floor(asNumber(ctx, n!, pos)),
  parseint: ([s, b], ctx, pos) => parseInt(asString(ctx, s!, pos), asNumber(ctx, b!, pos)),
  // conversions
  tostring: ([v], ctx, pos) => (v === null ? null : asString(ctx, v!, pos)),
  tonumber: ([v], ctx, pos) => (v === null ? null : asNumber(ctx, v!, pos)),
  tobool: ([v], ctx, pos) => (v === null ? null : asBool(ctx, v!, pos)),
  tolist: ([v], ctx, pos) => asList(ctx, v!, pos),
  toset: ([v], ctx, pos) => asList(ctx, v!, pos).filter((x, i, a) => a.findIndex((y) => equal(x, y)) === i),
  tomap: ([v], ctx, pos) => asMap(ctx, v!, pos),
  jsonencode: ([v]) => JSON.stringify(v),
  jsondecode: ([s], ctx, pos) => {
    let v: Value;
    try {
      v = JSON.parse(asString(ctx, s!, pos)) as Value;
    } catch (e) {
      fail(ctx, pos, `jsondecode(): ${(e as Error).message}`);
    }
    // As deep as the syntax may nest, so that comparing or encoding the value cannot exhaust the stack.
    if (valueDepth(v, maxHclDepth) > maxHclDepth)
      fail(
        ctx,
        pos,
        `jsondecode(): the JSON nests more than ${maxHclDepth} levels deep`,
        'flatten the JSON; no template value nests this deep',
      );
    return v;
  },
  base64encode: ([s], ctx, pos) => Buffer.from(asString(ctx, s!, pos)).toString('base64'),
  base64decode: ([s], ctx, pos) => Buffer.from(asString(ctx, s!, pos), 'base64').toString('utf8'),
  urlencode: ([s], ctx, pos) => encodeURIComponent(asString(ctx, s!, pos)),
  // hashes and ids
  sha256: ([s], ctx, pos) =>
    createHash('sha256')
      .update(asString(ctx, s!, pos))
      .digest('hex'),
  sha512: ([s], ctx, pos) =>
    createHash('sha512')
      .update(asString(ctx, s!, pos))
      .digest('hex'),
  sha1: ([s], ctx, pos) =>
    createHash('sha1')
      .update(asString(ctx, s!, pos))
      .digest('hex'),
  md5: ([s], ctx, pos) =>
    createHash('md5')
      .update(asString(ctx, s!, pos))
      .digest('hex'),
  uuidv4: () => randomUUID(),
  // time
  timestamp: (_a, ctx) => rfc3339(ctx.now),
  formatdate: ([spec, t], ctx, pos) => {
    const d = new Date(asString(ctx, t!, pos));
    if (Number.isNaN(d.getTime()))
      fail(
        ctx,
        pos,
        `formatdate(): ${shown(t!)} is not an RFC 3339 time`,
        'pass timestamp() or a time like 2024-01-02T03:04:05Z',
      );
    return formatDate(asString(ctx, spec!, pos), d);
  },
  timeadd: ([t, dur], ctx, pos) => {
    const d = new Date(asString(ctx, t!, pos));
    const m = /^(-?)(?:(\d+)h)?(?:(\d+)m)?(?:(\d+)s)?$/.exec(asString(ctx, dur!, pos));
    if (!m || Number.isNaN(d.getTime())) fail(ctx, pos, 'timeadd() needs an RFC 3339 time and a duration like "1h30m"');
    const ms = ((Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0)) * 60 + Number(m[4] ?? 0)) * 1000 * (m[1] ? -1 : 1);
    return rfc3339(new Date(d.getTime() + ms));
  },
  legacy_isotime: ([layout], ctx, pos) => goLayout(asString(ctx, layout!, pos), ctx.now),
  // files and paths
  abspath: ([p], ctx, pos) => path.resolve(ctx.cwd, asString(ctx, p!, pos)),
  basename: ([p], ctx, pos) => path.basename(asString(ctx, p!, pos)),
  dirname: ([p], ctx, pos) => path.dirname(asString(ctx, p!, pos)),
  pathexpand: ([p], ctx, pos) => asString(ctx, p!, pos).replace(/^~(?=$|\/)/, os.homedir()),
  fileexists: ([p], ctx, pos) => existsSync(noteRead(ctx, pos, 'fileexists', asString(ctx, p!, pos))),
  file: ([p], ctx, pos) => readText(ctx, pos, asString(ctx, p!, pos), 'file'),
  templatefile: ([p, vars], ctx, pos) => {
    const file = path.resolve(ctx.cwd, asString(ctx, p!, pos));
    if (ctx.inTemplateFile) {
      const itself = ctx.inTemplateFile.file === file;
      fail(
        ctx,
        pos,
        `templatefile() is called inside the template ${ctx.inTemplateFile.file}${itself ? ', which it renders again (a template that includes itself never ends)' : ` (rendered by ${ctx.inTemplateFile.caller}), for ${file}`}; Packer does not permit templatefile() inside a templatefile() template`,
        'render the inner template first (e.g. in a local) and pass its text in the vars map',
      );
    }
    const text = readText(ctx, pos, file, 'templatefile');
    const tpl = parseHclTemplate(text, file);
    // Only the given variables (and functions) are visible inside, as in Terraform and Packer.
    const inner: EvalContext = {
      ...ctx,
      file,
      scope: {},
      allowEnv: false,
      inTemplateFile: { file, caller: `${ctx.file}:${pos.line}` },
    };
    const v = evaluate(tpl, inner, { ...(vars === undefined ? {} : asMap(ctx, vars, pos)) });
    return typeof v === 'string' ? v : asString(ctx, v, pos);
  },
  filebase64: ([p], ctx, pos) =>
    Buffer.from(readText(ctx, pos, asString(ctx, p!, pos), 'filebase64')).toString('base64'),
};

const realOrSame = (p: string): string => {
  try {
    return realpathSync(p);
  } catch {
    return p;
  }
};

/** The absolute path a function reads, told to ctx.onFileRead with whether it leaves the template's folder. */
function noteRead(ctx: EvalContext, pos: Pos, fn: string, p: string): string {
  const file = path.resolve(ctx.cwd, p);
  if (ctx.onFileRead) {
    // Through symlinks too: a link in the folder to /run/secrets/x reads outside it.
    const rel = ctx.root ? path.relative(realOrSame(ctx.root), realOrSame(file)) : '';
    const outside = ctx.root !== undefined && (rel === '..' || rel.startsWith(`..${path.sep}`) || path.isAbsolute(rel));
    ctx.onFileRead({ fn, path: file, file: ctx.file, pos, outside, root: ctx.root });
  }
  return file;
}

function readText(ctx: EvalContext, pos: Pos, p: string, fn: string): string {
  const file = noteRead(ctx, pos, fn, p);
  try {
    const text = readFileSync(file, 'utf8');
    rememberRead(text, file);
    return text;
  } catch (e) {
    fail(
      ctx,
      pos,
      `cannot read ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
      "check the path; relative paths are relative to the folder kiln runs in (use path.root for the template's folder)",
    );
  }
}

export const functionNames = (): string[] => [...Object.keys(functions), 'env', 'can', 'try'];

function callFunction(e: Expr & { kind: 'call' }, ctx: EvalContext, locals: Record<string, Value>): Value {
  const known = e.name === 'env' || Object.hasOwn(functions, e.name);
  if (!known && e.name !== 'try' && e.name !== 'can')
    fail(ctx, e.pos, `kiln does not know the function ${e.name}()`, `kiln knows: ${functionNames().sort().join(', ')}`);
  const usage = (n: number) => arityProblem(e.name, n);
  // can() and try() take expressions: counted as written. The others once a final "..." is expanded.
  if (!e.expandFinal && usage(e.args.length))
    fail(ctx, e.pos, usage(e.args.length)!, "give the arguments Packer's documentation lists for it");
  if (e.name === 'try') {
    for (const a of e.args) {
      try {
        return evaluate(a, ctx, locals);
      } catch (err) {
        if (!(err instanceof HclError)) throw err;
      }
    }
    fail(ctx, e.pos, 'try(): every argument failed');
  }
  if (e.name === 'can') {
    try {
      evaluate(e.args[0]!, ctx, locals);
      return true;
    } catch (err) {
      if (!(err instanceof HclError)) throw err;
      return false;
    }
  }
  let args = e.args.map((a) => evaluate(a, ctx, locals));
  if (e.expandFinal) {
    args = [...args.slice(0, -1), ...asList(ctx, args[args.length - 1] ?? null, e.pos)];
    if (usage(args.length))
      fail(
        ctx,
        e.pos,
        `${usage(args.length)!} (after expanding the final list with "...")`,
        "give the arguments Packer's documentation lists for it",
      );
  }
  const badType = typeProblem(e.name, args, typeName);
  if (badType) fail(ctx, e.args[Math.min(badType[0], e.args.length - 1)]?.pos ?? e.pos, badType[1]);
  if (e.name === 'env') {
    if (!ctx.allowEnv)
      fail(
        ctx,
        e.pos,
        "env() can only be used in a variable's default (as in Packer)",
        'give the variable default = env("NAME") and use var.<name> here',
      );
    return (ctx.env ?? process.env)[asString(ctx, args[0] ?? null, e.pos)] ?? '';
  }
  const fn = Object.hasOwn(functions, e.name) ? functions[e.name] : undefined;
  if (!fn)
    fail(ctx, e.pos, `kiln does not know the function ${e.name}()`, `kiln knows: ${functionNames().sort().join(', ')}`);
  try {
    return fn(
      args,
      ctx,
      e.pos,
      e.args.map((a) => a.pos),
    );
  } catch (err) {
    // A bad regular expression, an out-of-range value: the template's mistake, said as such.
    if (
      err instanceof HclError ||
      !(err instanceof Error) ||
      (err instanceof RangeError && /call stack/i.test(err.message))
    )
      throw err;
    fail(ctx, e.pos, `${e.name}(): ${err.message}`);
  }
}
