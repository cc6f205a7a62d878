/**
 * Why locals cannot be evaluated. Locals are evaluated in any order, each once what it refers to is
 * known; when none can go on, either one of them fails on its own (its error is the cause), or every
 * one waits for another, which is a cycle (a = local.b, b = local.a): said with its members and their
 * file:line, not as "local.b is not defined".
 */
import { HclError, type Expr, type TemplatePart } from './hcl.js';

export interface PendingLocal {
  name: string;
  expr: Expr;
  file: string;
}

/** "local.a", or "data.null.x" for a null data source (kept in the pending list as "\0data:x"). */
const display = (name: string) => (name.startsWith('\0data:') ? `data.null.${name.slice(6)}` : `local.${name}`);

/** The locals (and null data sources) an expression refers to, by their pending names. */
export function referencedLocals(e: Expr): Set<string> {
  const out = new Set<string>();
  const stack: (Expr | TemplatePart)[] = [e];
  const keyOf = (x: Expr): string | undefined =>
    x.kind === 'literal' && typeof x.value === 'string' ? x.value : undefined;
  while (stack.length) {
    const x = stack.pop()!;
    switch (x.kind) {
      case 'getattr':
      case 'index': {
        const name = x.kind === 'getattr' ? x.name : keyOf(x.key);
        if (x.target.kind === 'variable' && x.target.name === 'local' && name !== undefined) out.add(name);
        // data.null.NAME
        const t = x.target;
        if (
          name !== undefined &&
          t.kind === 'getattr' &&
          t.name === 'null' &&
          t.target.kind === 'variable' &&
          t.target.name === 'data'
        )
          out.add(`\0data:${name}`);
        stack.push(x.target);
        if (x.kind === 'index') stack.push(x.key);
        break;
      }
      case 'template':
        stack.push(...x.parts);
        break;
      case 'tuple':
        stack.push(...x.items);
        break;
      case 'object':
        for (const it of x.items) stack.push(it.key, it.value);
        break;
      case 'splat':
        stack.push(x.target);
        if (x.each) stack.push(x.each);
        break;
      case 'call':
        stack.push(...x.args);
        break;
      case 'unary':
        stack.push(x.operand);
        break;
      case 'binary':
        stack.push(x.left, x.right);
        break;
      case 'conditional':
        stack.push(x.cond, x.then, x.else);
        break;
      case 'for':
        if ('value' in x && 'grouping' in x) {
          stack.push(x.collection, x.value);
          if (x.key) stack.push(x.key);
          if (x.cond) stack.push(x.cond);
        } else stack.push(x.collection, ...x.body);
        break;
      case 'bound':
        stack.push(x.expr);
        break;
      case 'interp':
        stack.push(x.expr);
        break;
      case 'if':
        stack.push(x.cond, ...x.then, ...x.else);
        break;
      default:
        break;
    }
  }
  return out;
}

/**
 * The error to report when none of `pending` could be evaluated: the own error of one that waits for no
 * other pending one, else the cycle they form. `errors` holds each one's error by name.
 */
export function stuckLocalsError(pending: PendingLocal[], errors: Map<string, HclError>): HclError | undefined {
  const byName = new Map(pending.map((p) => [p.name, p]));
  const waitsFor = new Map(pending.map((p) => [p.name, [...referencedLocals(p.expr)].filter((n) => byName.has(n))]));
  const independent = pending.find((p) => !waitsFor.get(p.name)!.length);
  if (independent) return errors.get(independent.name);
  // Every one waits for another: following the first wait from anywhere must come back round.
  const seen = new Map<string, number>();
  const path: string[] = [];
  let at = pending[0]!.name;
  while (!seen.has(at)) {
    seen.set(at, path.length);
    path.push(at);
    at = waitsFor.get(at)![0]!;
  }
  const cycle = path.slice(seen.get(at)!);
  const first = byName.get(cycle[0]!)!;
  const member = (n: string) => {
    const p = byName.get(n)!;
    return `${display(n)} (${p.file}:${p.expr.pos.line})`;
  };
  const chain = [...cycle.map(member), display(cycle[0]!)].join(' -> ');
  const problem =
    cycle.length === 1
      ? `${display(cycle[0]!)} refers to itself: ${chain}`
      : `locals refer to each other in a cycle, so none of them has a value: ${chain}`;
  return new HclError(
    first.file,
    first.expr.pos,
    problem,
    'break the cycle: compute one of them from variables or other locals only',
  );
}
