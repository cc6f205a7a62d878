/**
 * Which values of a Packer template must never be printed. A sensitive variable's value is masked by
 * its text, but HCL functions turn it into other texts (base64encode, upper, format("%x")...) that no
 * list of encodings covers. So taint is tracked instead: an expression that refers to a sensitive
 * variable (or to a local or data source computed from one) gives a tainted value, and every text in
 * that value is masked as exactly as the secret itself. Values read by file()/templatefile() are
 * tainted the same way (a template in a pull request must not print a CI secret file through
 * `kiln validate`); env() in a variable's default makes that variable sensitive (it is how templates
 * read tokens from CI). The text forms in errors.ts' secretForms are only the backstop for a message
 * about an expression that failed half-way, before its value existed.
 */
import type { Expr } from './hcl.js';
import { isObject, type Value } from './eval.js';
import type { PackerSecret, Where } from './model.js';

/** What an expression reads: var.X / local.X / data.X references, the functions it calls, values bound by a dynamic block. */
export interface Refs {
  roots: Set<string>;
  calls: Set<string>;
  bound: Value[];
}

export function refsOf(node: unknown, out: Refs = { roots: new Set(), calls: new Set(), bound: [] }): Refs {
  if (!node || typeof node !== 'object') return out;
  if (Array.isArray(node)) {
    for (const n of node) refsOf(n, out);
    return out;
  }
  const e = node as Expr & Record<string, unknown>;
  switch (e.kind) {
    case 'getattr':
      if (e.target.kind === 'variable' && (e.target.name === 'var' || e.target.name === 'local')) {
        out.roots.add(`${e.target.name}.${e.name}`);
        return out;
      }
      // data.null.NAME.output
      if (e.target.kind === 'getattr' && e.target.target.kind === 'variable' && e.target.target.name === 'data') {
        out.roots.add(`data.${e.name}`);
        return out;
      }
      break;
    case 'index':
      if (
        e.target.kind === 'variable' &&
        (e.target.name === 'var' || e.target.name === 'local') &&
        e.key.kind === 'literal'
      ) {
        out.roots.add(`${e.target.name}.${String(e.key.value)}`);
        return out;
      }
      break;
    case 'variable':
      // The whole namespace (for k, v in var: ...): everything in it counts as read.
      if (e.name === 'var' || e.name === 'local' || e.name === 'data') out.roots.add(`${e.name}.*`);
      return out;
    case 'call':
      out.calls.add(e.name);
      break;
    case 'bound':
      out.bound.push(...Object.values(e.names as Record<string, Value>));
      break;
    default:
      break;
  }
  for (const [k, v] of Object.entries(e)) if (k !== 'pos' && k !== 'names') refsOf(v, out);
  return out;
}

/** The texts in a value (strings and numbers), each with its key path ("0", "user"): what a message could quote. */
export function leaves(v: Value, key: string[] = []): { text: string; key: string[]; number?: true }[] {
  if (typeof v === 'string') return [{ text: v, key }];
  if (typeof v === 'number') return [{ text: String(v), key, number: true }];
  if (Array.isArray(v)) return v.flatMap((x, i) => leaves(x, [...key, String(i)]));
  if (isObject(v)) return Object.entries(v).flatMap(([k, x]) => leaves(x, [...key, k]));
  return [];
}

/**
 * The values of a string template's ${...} parts, found by matching its literal text around them
 * ("echo ${base64encode(var.pw)} | base64 -d": only the middle is a secret). Undefined when the
 * template has directives (%{ if }) or the text does not line up (strip markers): then the whole
 * string counts.
 */
function templatePieces(
  parts: Extract<Expr, { kind: 'template' }>['parts'],
  value: string,
): { part: Expr; text: string }[] | undefined {
  if (!parts.every((p) => p.kind === 'text' || p.kind === 'interp')) return undefined;
  const esc = (t: string) => t.replace(/[.*+?^${}()|[\]\\]/g, '\\$&');
  const interps = parts.filter((p): p is Extract<typeof p, { kind: 'interp' }> => p.kind === 'interp');
  const source = parts
    .map((p, i) => (p.kind === 'text' ? esc(p.text) : i === parts.length - 1 ? '([\\s\\S]*)' : '([\\s\\S]*?)'))
    .join('');
  const m = new RegExp(`^${source}$`).exec(value);
  if (!m) return undefined;
  return interps.map((p, i) => ({ part: p.expr, text: m[i + 1]! }));
}

/** A kiln variable name for a Packer name (local.x -> local_x) and a key path inside it. */
export function kilnName(name: string, key: string[] = []): string {
  return [name, ...key]
    .join('_')
    .replace(/^local\./, 'local_')
    .replace(/[^A-Za-z0-9_]/g, '_');
}

/** The secrets found while a template is read, and which names are tainted. */
export class Taint {
  /** var.X, local.X, data.X -> the sensitive variables they come from. */
  private readonly sources = new Map<string, string[]>();
  private readonly fileRoots = new Set<string>();

  constructor(readonly secrets: PackerSecret[] = []) {}

  /** A sensitive variable (or local): its value and each element of it are secrets of their own. */
  sensitive(ref: string, value: Value, at?: Where): void {
    this.sources.set(ref, [ref]);
    const name = ref.replace(/^var\./, '');
    for (const l of leaves(value))
      this.add({
        text: l.text,
        kind: 'variable',
        from: [ref],
        name: kilnName(name, l.key),
        at,
        ...(l.number ? { number: true } : {}),
      });
  }

  /** No longer sensitive (an env() default replaced by a -var value): its texts are released. */
  forget(ref: string): void {
    this.sources.delete(ref);
    for (let i = this.secrets.length - 1; i >= 0; i--) {
      const s = this.secrets[i]!;
      if (s.kind === 'variable' && s.from.length === 1 && s.from[0] === ref) this.secrets.splice(i, 1);
    }
  }

  /**
   * The taint of an expression's value: the sensitive variables it reads, and whether it read a file.
   * A value bound by a dynamic block counts when it holds a secret's text.
   */
  of(expr: Expr): { from: string[]; file: boolean } | undefined {
    const refs = refsOf(expr);
    const from = new Set<string>();
    let file = refs.calls.has('file') || refs.calls.has('templatefile');
    for (const r of refs.roots) {
      if (r.endsWith('.*')) {
        const ns = r.slice(0, -1);
        for (const [k, v] of this.sources) if (k.startsWith(ns)) v.forEach((x) => from.add(x));
        for (const k of this.fileRoots) if (k.startsWith(ns)) file = true;
        continue;
      }
      this.sources.get(r)?.forEach((x) => from.add(x));
      if (this.fileRoots.has(r)) file = true;
    }
    if (refs.bound.length) {
      const texts = new Set(leaves(refs.bound).map((l) => l.text));
      for (const s of this.secrets)
        if (texts.has(s.text)) {
          s.from.forEach((x) => from.add(x));
          if (s.kind === 'file') file = true;
        }
    }
    return from.size || file ? { from: [...from], file } : undefined;
  }

  /** A value computed by an expression: when the expression is tainted, its texts become secrets; a local or data source passes its taint on. */
  value(expr: Expr, value: Value, at: Where, name: string, ref?: string): void {
    const t = this.of(expr);
    if (!t) return;
    if (ref) {
      if (t.from.length) this.sources.set(ref, t.from);
      if (t.file) this.fileRoots.add(ref);
    }
    this.texts(expr, value, at, name, []);
  }

  /**
   * The texts of a tainted value, item by item where the expression is a list or map written out: in
   * ["<esc>", "root ${var.pw}<enter>"] only the second is a secret (masking "<esc>" everywhere, or
   * making kiln import ask for it, would help nobody).
   */
  private texts(expr: Expr, value: Value, at: Where, name: string, key: string[]): void {
    const t = this.of(expr);
    if (!t) return;
    if (expr.kind === 'tuple' && Array.isArray(value) && value.length === expr.items.length) {
      expr.items.forEach((item, i) => this.texts(item, value[i]!, at, name, [...key, String(i)]));
      return;
    }
    if (expr.kind === 'template' && typeof value === 'string') {
      const pieces = templatePieces(expr.parts, value);
      if (pieces) {
        const tainted = pieces.filter((p) => this.of(p.part));
        tainted.forEach(({ text }, i) =>
          this.add({
            text,
            kind: t.from.length ? 'derived' : 'file',
            from: t.from,
            name: kilnName(name, tainted.length > 1 ? [...key, `part${i + 1}`] : key),
            at,
          }),
        );
        return;
      }
    }
    if (expr.kind === 'object' && isObject(value)) {
      const keyOf = (k: Expr, bare?: string) =>
        bare ?? (k.kind === 'literal' ? String(k.value) : k.kind === 'variable' ? k.name : undefined);
      const items = expr.items.map((it) => ({ k: keyOf(it.key, it.bareKey), it }));
      if (items.every(({ k }) => k !== undefined && Object.hasOwn(value, k))) {
        for (const { k, it } of items) {
          if (this.of(it.key))
            this.add({
              text: k!,
              kind: t.from.length ? 'derived' : 'file',
              from: t.from,
              name: kilnName(name, [...key, 'key']),
              at,
            });
          this.texts(it.value, value[k!]!, at, name, [...key, k!]);
        }
        return;
      }
    }
    for (const l of leaves(value, key)) {
      this.add({
        text: l.text,
        kind: t.from.length ? 'derived' : 'file',
        from: t.from,
        name: kilnName(name, l.key),
        at,
        ...(l.number ? { number: true } : {}),
      });
    }
  }

  private add(s: PackerSecret): void {
    if (s.text === '') return;
    // One entry per text. A variable's own value outranks a derived one, which outranks a file's
    // content: the entry names the variable kiln import asks for.
    const rank = { variable: 0, derived: 1, file: 2 };
    const i = this.secrets.findIndex((x) => x.text === s.text);
    if (i < 0) this.secrets.push(s);
    else if (rank[s.kind] < rank[this.secrets[i]!.kind]) this.secrets[i] = s;
  }
}
