/**
 * A parser for HCL's native syntax (the language of *.pkr.hcl), written for kiln because no npm parser
 * keeps the order of differently-typed blocks (Packer runs provisioners in written order) or says where
 * anything is. It keeps every attribute and block in written order with its line and column, and its
 * errors name file:line:column. Covers what Packer templates use: blocks, attributes, comments, heredocs,
 * templates with ${...}, %{if}/%{for} and strip markers, tuples, objects, for expressions, function calls,
 * traversals, splats, operators and conditionals.
 */

export interface Pos {
  line: number;
  column: number;
}

export class HclError extends Error {
  constructor(
    readonly file: string,
    readonly pos: Pos,
    readonly problem: string,
    readonly fix?: string,
  ) {
    super(`${file}:${pos.line}:${pos.column}: ${problem}${fix ? `\n  fix: ${fix}` : ''}`);
    this.name = 'HclError';
  }
}

export type Expr =
  | { kind: 'literal'; value: string | number | boolean | null; pos: Pos }
  | { kind: 'template'; parts: TemplatePart[]; pos: Pos }
  | { kind: 'tuple'; items: Expr[]; pos: Pos }
  | { kind: 'object'; items: { key: Expr; value: Expr; bareKey?: string }[]; pos: Pos }
  | { kind: 'variable'; name: string; pos: Pos }
  | { kind: 'getattr'; target: Expr; name: string; pos: Pos }
  | { kind: 'index'; target: Expr; key: Expr; pos: Pos }
  | { kind: 'splat'; target: Expr; each: Expr | undefined; pos: Pos }
  | { kind: 'call'; name: string; args: Expr[]; expandFinal: boolean; pos: Pos }
  | { kind: 'unary'; op: '!' | '-'; operand: Expr; pos: Pos }
  | { kind: 'binary'; op: string; left: Expr; right: Expr; pos: Pos }
  | { kind: 'conditional'; cond: Expr; then: Expr; else: Expr; pos: Pos }
  | {
      kind: 'for';
      keyVar?: string;
      valueVar: string;
      collection: Expr;
      key?: Expr;
      value: Expr;
      cond?: Expr;
      grouping: boolean;
      object: boolean;
      pos: Pos;
    }
  /** The value a splat's "each" expression starts from. */
  | { kind: 'splatItem'; pos: Pos }
  /** Not parsed: an expression of a dynamic block's content with its iterator bound (dynamic.ts). */
  | { kind: 'bound'; names: Record<string, unknown>; expr: Expr; pos: Pos };

export type TemplatePart =
  | { kind: 'text'; text: string }
  | { kind: 'interp'; expr: Expr }
  | { kind: 'if'; cond: Expr; then: TemplatePart[]; else: TemplatePart[] }
  | { kind: 'for'; keyVar?: string; valueVar: string; collection: Expr; body: TemplatePart[] };

export interface Attribute {
  kind: 'attribute';
  name: string;
  expr: Expr;
  pos: Pos;
}
export interface Block {
  kind: 'block';
  type: string;
  labels: string[];
  body: Body;
  pos: Pos;
}
export interface Body {
  items: (Attribute | Block)[];
}

const idStart = /[A-Za-z_]/;
const idChar = /[A-Za-z0-9_-]/;

/** A raw piece of a template before %{if}/%{for} are nested: strip markers still attached. */
type Flat =
  | { kind: 'text'; text: string }
  | { kind: 'interp'; expr: Expr; stripL: boolean; stripR: boolean }
  | {
      kind: 'directive';
      word: 'if' | 'else' | 'endif' | 'for' | 'endfor';
      expr?: Expr;
      keyVar?: string;
      valueVar?: string;
      stripL: boolean;
      stripR: boolean;
      pos: Pos;
    };

const binaryLevels: string[][] = [['||'], ['&&'], ['==', '!='], ['>=', '<=', '>', '<'], ['+', '-'], ['*', '/', '%']];

/**
 * How deep blocks, brackets, calls, conditionals and operator chains may nest. Real templates stay under
 * 20; without a limit, 50k nested "[" (or "1+1+...") exhaust the JavaScript stack here or in the
 * evaluator with no location. Every level of the tree the parser builds counts, so the evaluator and any
 * later walk of the tree stay far from the stack's end too.
 */
export const maxHclDepth = 256;

class Parser {
  private i = 0;
  private readonly lineStarts: number[] = [0];
  /** >0 inside (), [] and {} of an expression, where newlines are just space. */
  private nest = 0;
  /** Levels of the tree being built (see maxHclDepth). */
  private depth = 0;

  constructor(
    private readonly src: string,
    private readonly file: string,
  ) {
    for (let k = 0; k < src.length; k++) if (src[k] === '\n') this.lineStarts.push(k + 1);
  }

  posAt(offset: number): Pos {
    let lo = 0;
    let hi = this.lineStarts.length - 1;
    while (lo < hi) {
      const mid = (lo + hi + 1) >> 1;
      if (this.lineStarts[mid]! <= offset) lo = mid;
      else hi = mid - 1;
    }
    return { line: lo + 1, column: offset - this.lineStarts[lo]! + 1 };
  }

  private pos(): Pos {
    return this.posAt(this.i);
  }

  fail(problem: string, fix?: string, at = this.i): never {
    throw new HclError(this.file, this.posAt(at), problem, fix);
  }

  /** One level deeper; fails at maxHclDepth with where and what. */
  private enter(what: string, at = this.i): void {
    if (++this.depth > maxHclDepth) {
      this.fail(
        `${what} nest more than ${maxHclDepth} levels deep here`,
        'flatten it: move inner parts into locals (local.x) or split the value; no real template nests this deep',
        at,
      );
    }
  }

  private peek(n = 0): string {
    return this.src[this.i + n] ?? '';
  }
  private startsWith(s: string): boolean {
    return this.src.startsWith(s, this.i);
  }
  private describe(): string {
    if (this.i >= this.src.length) return 'the end of the file';
    const c = this.src[this.i]!;
    return c === '\n' ? 'the end of the line' : JSON.stringify(c);
  }

  /** Spaces and comments; newlines too when `newlines` (or inside brackets). */
  private skip(newlines = this.nest > 0): void {
    for (;;) {
      const c = this.peek();
      if (c === ' ' || c === '\t' || c === '\r' || c === '\uFEFF') {
        this.i++;
        continue;
      }
      if (c === '\n' && newlines) {
        this.i++;
        continue;
      }
      if (c === '#' || (c === '/' && this.peek(1) === '/')) {
        while (this.i < this.src.length && this.src[this.i] !== '\n') this.i++;
        continue;
      }
      if (c === '/' && this.peek(1) === '*') {
        const end = this.src.indexOf('*/', this.i + 2);
        if (end < 0) this.fail('a /* comment is never closed', 'close it with */');
        this.i = end + 2;
        continue;
      }
      return;
    }
  }

  private expect(s: string, what = `"${s}"`, fix?: string): void {
    this.skip();
    if (!this.startsWith(s)) this.fail(`expected ${what}, found ${this.describe()}`, fix);
    this.i += s.length;
  }

  private identifier(): string {
    const start = this.i;
    if (!idStart.test(this.peek())) this.fail(`expected a name, found ${this.describe()}`);
    while (this.i < this.src.length && idChar.test(this.src[this.i]!)) this.i++;
    return this.src.slice(start, this.i);
  }

  // ---- bodies ----

  body(closing: boolean): Body {
    const items: Body['items'] = [];
    const seen = new Map<string, Pos>();
    for (;;) {
      this.skip(true);
      if (this.i >= this.src.length) {
        if (closing) this.fail('a block is never closed', 'add the missing "}"');
        return { items };
      }
      if (this.peek() === '}') {
        if (!closing) this.fail('"}" without a block to close', 'remove it, or open the block it should close');
        return { items };
      }
      const pos = this.pos();
      const name = this.identifier();
      this.skip(false);
      if (this.peek() === '=' && this.peek(1) !== '=') {
        this.i++;
        const expr = this.expression();
        const prev = seen.get(name);
        if (prev)
          this.fail(
            `attribute "${name}" is set twice (also at line ${prev.line})`,
            'remove one of them',
            this.src.length && this.offsetOf(pos),
          );
        seen.set(name, pos);
        items.push({ kind: 'attribute', name, expr, pos });
        this.endOfItem();
        continue;
      }
      const labels: string[] = [];
      for (;;) {
        this.skip(false);
        const c = this.peek();
        if (c === '{') break;
        if (c === '"') {
          labels.push(this.quotedLabel());
          continue;
        }
        if (idStart.test(c)) {
          labels.push(this.identifier());
          continue;
        }
        this.fail(
          `expected "=" or "{" after "${name}", found ${this.describe()}`,
          `write ${name} = <value> for an attribute, or ${name} "label" { ... } for a block`,
        );
      }
      this.i++;
      const savedNest = this.nest;
      this.nest = 0;
      this.enter('blocks', this.offsetOf(pos));
      // A one-line block: `name { a = 1 }`.
      const inner = this.body(true);
      this.depth--;
      this.nest = savedNest;
      this.i++; // "}"
      items.push({ kind: 'block', type: name, labels, body: inner, pos });
      this.endOfItem();
    }
  }

  private offsetOf(p: Pos): number {
    return this.lineStarts[p.line - 1]! + p.column - 1;
  }

  private endOfItem(): void {
    this.skip(false);
    const c = this.peek();
    if (c === '\n' || c === '' || c === '}') return;
    this.fail(`expected the end of the line, found ${this.describe()}`, 'put each attribute and block on its own line');
  }

  private quotedLabel(): string {
    const start = this.i;
    const t = this.quoted();
    if (t.kind === 'literal') return String(t.value);
    this.fail(
      'a block label is a plain string; it cannot contain ${...} or %{...}',
      'write the label without interpolation',
      start,
    );
  }

  // ---- expressions ----

  wholeExpression(): Expr {
    this.nest = 1;
    const e = this.expression();
    this.skip(true);
    if (this.i < this.src.length) this.fail(`expected the end of the value, found ${this.describe()}`);
    return e;
  }

  expression(): Expr {
    this.skip();
    this.enter('brackets, braces, parentheses, function calls, templates and conditionals');
    const cond = this.binary(0);
    this.skip();
    if (this.peek() === '?') {
      this.i++;
      this.nest++;
      const then = this.expression();
      this.expect(':', '":" of a conditional (cond ? a : b)');
      this.nest--;
      const otherwise = this.expression();
      this.depth--;
      return { kind: 'conditional', cond, then, else: otherwise, pos: cond.pos };
    }
    this.depth--;
    return cond;
  }

  private binary(level: number): Expr {
    if (level >= binaryLevels.length) return this.unary();
    const depth = this.depth;
    let left = this.binary(level + 1);
    for (;;) {
      this.skip();
      // Longer operators come first in each level, so ">=" is never read as ">".
      const op = binaryLevels[level]!.find((o) => this.startsWith(o) && !(o === '>' && this.peek(-1) === '='));
      if (!op) {
        this.depth = depth;
        return left;
      }
      // Each operator of a chain (a + b + c ...) is one more level of the tree.
      this.enter('operators (a + b + ...) in one chain');
      this.i += op.length;
      const right = this.binary(level + 1);
      left = { kind: 'binary', op, left, right, pos: left.pos };
    }
  }

  private unary(): Expr {
    this.skip();
    const c = this.peek();
    if ((c === '!' && this.peek(1) !== '=') || c === '-') {
      const pos = this.pos();
      this.enter('unary operators (! and -)');
      this.i++;
      const operand = this.unary();
      this.depth--;
      return { kind: 'unary', op: c as '!' | '-', operand, pos };
    }
    return this.postfix(this.primary());
  }

  private postfix(target: Expr): Expr {
    const depth = this.depth;
    try {
      return this.postfixChain(target);
    } finally {
      this.depth = depth;
    }
  }

  private postfixChain(target: Expr): Expr {
    for (;;) {
      // Each step of a traversal (a.b[0].c ...) is one more level of the tree.
      this.enter('attribute and index steps (a.b[0]...) in one traversal');
      const save = this.i;
      this.skip();
      const pos = this.pos();
      if (this.peek() === '.' && this.peek(1) === '*') {
        this.i += 2;
        return { kind: 'splat', target, each: this.splatRest({ kind: 'splatItem', pos }, true), pos };
      }
      if (this.peek() === '.' && this.peek(1) !== '.') {
        this.i++;
        if (/[0-9]/.test(this.peek())) {
          const start = this.i;
          while (/[0-9]/.test(this.peek())) this.i++;
          target = {
            kind: 'index',
            target,
            key: { kind: 'literal', value: Number(this.src.slice(start, this.i)), pos },
            pos,
          };
        } else {
          target = { kind: 'getattr', target, name: this.identifier(), pos };
        }
        continue;
      }
      if (this.peek() === '[') {
        this.i++;
        this.nest++;
        this.skip();
        if (this.peek() === '*') {
          this.i++;
          this.expect(']');
          this.nest--;
          return { kind: 'splat', target, each: this.splatRest({ kind: 'splatItem', pos }, false), pos };
        }
        const key = this.expression();
        this.expect(']', '"]" closing the index');
        this.nest--;
        target = { kind: 'index', target, key, pos };
        continue;
      }
      this.i = save;
      return target;
    }
  }

  /** The traversal after a splat, applied to each element. */
  private splatRest(item: Expr, attrOnly: boolean): Expr | undefined {
    let each: Expr = item;
    let any = false;
    for (;;) {
      this.enter('attribute and index steps (a.b[0]...) in one traversal');
      const save = this.i;
      this.skip();
      const pos = this.pos();
      if (this.peek() === '.' && idStart.test(this.peek(1))) {
        this.i++;
        each = { kind: 'getattr', target: each, name: this.identifier(), pos };
        any = true;
        continue;
      }
      if (!attrOnly && this.peek() === '[') {
        this.i++;
        this.nest++;
        const key = this.expression();
        this.expect(']');
        this.nest--;
        each = { kind: 'index', target: each, key, pos };
        any = true;
        continue;
      }
      this.i = save;
      return any ? each : undefined;
    }
  }

  private primary(): Expr {
    this.skip();
    const pos = this.pos();
    const c = this.peek();
    if (/[0-9]/.test(c)) {
      const number = /[0-9]+(\.[0-9]+)?([eE][+-]?[0-9]+)?/y;
      number.lastIndex = this.i;
      const m = number.exec(this.src)!;
      const value = Number(m[0]);
      // HCL's numbers are arbitrary-precision; kiln's are doubles: say so rather than carry Infinity on.
      if (!Number.isFinite(value)) {
        const shown = m[0].length > 40 ? `${m[0].slice(0, 20)}...${m[0].slice(-10)}` : m[0];
        this.fail(
          `the number ${shown} is out of range (the largest is about 1.8e308)`,
          'write a smaller number, or a string in double quotes if it is not a number',
        );
      }
      this.i += m[0].length;
      return { kind: 'literal', value, pos };
    }
    if (c === '"') return this.quoted();
    if (c === '<' && this.peek(1) === '<') return this.heredoc();
    if (c === '(') {
      this.i++;
      this.nest++;
      const e = this.expression();
      this.expect(')', '")" closing the parenthesis');
      this.nest--;
      return e;
    }
    if (c === '[') return this.tuple();
    if (c === '{') return this.object();
    if (idStart.test(c)) {
      const name = this.identifier();
      if (name === 'true' || name === 'false') return { kind: 'literal', value: name === 'true', pos };
      if (name === 'null') return { kind: 'literal', value: null, pos };
      const save = this.i;
      this.skip();
      let fname = name;
      // Provider-namespaced functions (provider::x::f) are read as one name.
      while (this.startsWith('::')) {
        this.i += 2;
        fname += `::${this.identifier()}`;
      }
      if (this.peek() === '(') return this.call(fname, pos);
      this.i = save;
      return { kind: 'variable', name, pos };
    }
    if (this.i >= this.src.length) this.fail('expected a value, found the end of the file', 'finish the expression');
    if (c === '\n')
      this.fail(
        'expected a value, found the end of the line',
        'write the value after "=" on the same line (or open a bracket to continue it)',
      );
    this.fail(
      `expected a value, found ${this.describe()}`,
      'write a string in double quotes, a number, true/false, a list [...], a map {...}, or a reference like var.name',
    );
  }

  private call(name: string, pos: Pos): Expr {
    this.i++;
    this.nest++;
    const args: Expr[] = [];
    let expandFinal = false;
    for (;;) {
      this.skip();
      if (this.peek() === ')') break;
      args.push(this.expression());
      this.skip();
      if (this.startsWith('...')) {
        this.i += 3;
        expandFinal = true;
        this.skip();
      }
      if (this.peek() === ',') {
        this.i++;
        continue;
      }
      if (this.peek() !== ')') this.fail(`expected "," or ")" in the arguments of ${name}(), found ${this.describe()}`);
    }
    this.i++;
    this.nest--;
    return { kind: 'call', name, args, expandFinal, pos };
  }

  private forHeader(): { keyVar?: string; valueVar: string; collection: Expr } {
    this.skip();
    let valueVar = this.identifier();
    let keyVar: string | undefined;
    this.skip();
    if (this.peek() === ',') {
      this.i++;
      this.skip();
      keyVar = valueVar;
      valueVar = this.identifier();
    }
    this.skip();
    if (!this.startsWith('in') || idChar.test(this.peek(2)))
      this.fail(`expected "in" in a for expression, found ${this.describe()}`, 'write for x in collection');
    this.i += 2;
    const collection = this.expression();
    return { keyVar, valueVar, collection };
  }

  private isFor(): boolean {
    const save = this.i;
    this.skip();
    const yes = this.startsWith('for') && !idChar.test(this.peek(3)) && /\s/.test(this.peek(3));
    this.i = save;
    return yes;
  }

  private tuple(): Expr {
    const pos = this.pos();
    this.i++;
    this.nest++;
    if (this.isFor()) {
      this.skip();
      this.i += 3;
      const h = this.forHeader();
      this.expect(':', '":" after the for expression\'s collection');
      const value = this.expression();
      this.skip();
      let cond: Expr | undefined;
      if (this.startsWith('if') && !idChar.test(this.peek(2))) {
        this.i += 2;
        cond = this.expression();
      }
      this.expect(']', '"]" closing the for expression');
      this.nest--;
      return { kind: 'for', ...h, value, cond, grouping: false, object: false, pos };
    }
    const items: Expr[] = [];
    for (;;) {
      this.skip();
      if (this.peek() === ']') break;
      items.push(this.expression());
      this.skip();
      if (this.peek() === ',') {
        this.i++;
        continue;
      }
      if (this.peek() !== ']')
        this.fail(`expected "," or "]" in a list, found ${this.describe()}`, 'separate list items with ","');
    }
    this.i++;
    this.nest--;
    return { kind: 'tuple', items, pos };
  }

  private object(): Expr {
    const pos = this.pos();
    this.i++;
    this.nest++;
    if (this.isFor()) {
      this.skip();
      this.i += 3;
      const h = this.forHeader();
      this.expect(':', '":" after the for expression\'s collection');
      const key = this.expression();
      this.expect('=>', '"=>" between key and value in a map for expression');
      const value = this.expression();
      this.skip();
      let grouping = false;
      if (this.startsWith('...')) {
        this.i += 3;
        grouping = true;
        this.skip();
      }
      let cond: Expr | undefined;
      if (this.startsWith('if') && !idChar.test(this.peek(2))) {
        this.i += 2;
        cond = this.expression();
      }
      this.expect('}', '"}" closing the for expression');
      this.nest--;
      return { kind: 'for', ...h, key, value, cond, grouping, object: true, pos };
    }
    const items: { key: Expr; value: Expr; bareKey?: string }[] = [];
    for (;;) {
      this.skip(true);
      if (this.peek() === '}') break;
      const keyStart = this.i;
      const key = this.expression();
      // A bare name as a key is the name itself, not a variable (HCL's rule).
      const bareKey =
        key.kind === 'variable' && this.src.slice(keyStart, this.i).trim() === key.name ? key.name : undefined;
      this.skip();
      if (this.peek() !== '=' && this.peek() !== ':')
        this.fail(`expected "=" or ":" after a map key, found ${this.describe()}`, 'write key = value');
      this.i++;
      const value = this.expression();
      items.push({ key, value, bareKey });
      this.skip(false);
      if (this.peek() === ',') this.i++;
      this.skip(true);
      if (this.peek() !== '}' && this.i >= this.src.length) this.fail('a map is never closed', 'add the missing "}"');
    }
    this.i++;
    this.nest--;
    return { kind: 'object', items, pos };
  }

  // ---- templates ----

  private quoted(): Expr {
    const pos = this.pos();
    this.i++;
    const flat: Flat[] = [];
    let text = '';
    for (;;) {
      if (this.i >= this.src.length || this.peek() === '\n')
        this.fail(
          'a string is never closed',
          'close it with " on the same line (use a heredoc <<EOF for several lines)',
          this.offsetOf(pos),
        );
      const c = this.peek();
      if (c === '"') {
        this.i++;
        break;
      }
      if (c === '\\') {
        const e = this.peek(1);
        const simple: Record<string, string> = { n: '\n', t: '\t', r: '\r', '"': '"', '\\': '\\' };
        if (e in simple) {
          text += simple[e];
          this.i += 2;
          continue;
        }
        if (e === 'u' || e === 'U') {
          const len = e === 'u' ? 4 : 8;
          const hex = this.src.slice(this.i + 2, this.i + 2 + len);
          if (!new RegExp(`^[0-9a-fA-F]{${len}}$`).test(hex)) this.fail(`\\${e} needs ${len} hex digits`);
          text += String.fromCodePoint(parseInt(hex, 16));
          this.i += 2 + len;
          continue;
        }
        this.fail(
          `unknown escape \\${e} in a string`,
          'write \\\\ for a backslash; HCL knows \\n \\t \\r \\" \\\\ \\uNNNN',
        );
      }
      if (
        this.templateMarkup(
          flat,
          (t) => {
            text += t;
          },
          () => {
            if (text) flat.push({ kind: 'text', text });
            text = '';
          },
        )
      )
        continue;
      text += c;
      this.i++;
    }
    if (text) flat.push({ kind: 'text', text });
    return this.finishTemplate(flat, pos);
  }

  /** ${...}, %{...} and their escapes at the cursor; false when there is none. */
  private templateMarkup(flat: Flat[], addText: (t: string) => void, flush: () => void): boolean {
    if (this.startsWith('$${') || this.startsWith('%%{')) {
      addText(this.src.slice(this.i + 1, this.i + 3));
      this.i += 3;
      return true;
    }
    if (this.startsWith('${')) {
      flush();
      this.i += 2;
      const stripL = this.peek() === '~';
      if (stripL) this.i++;
      const saved = this.nest;
      this.nest = 1;
      const expr = this.expression();
      this.skip();
      const stripR = this.peek() === '~';
      if (stripR) this.i++;
      this.expect('}', '"}" closing ${');
      this.nest = saved;
      flat.push({ kind: 'interp', expr, stripL, stripR });
      return true;
    }
    if (this.startsWith('%{')) {
      flush();
      const pos = this.pos();
      this.i += 2;
      const stripL = this.peek() === '~';
      if (stripL) this.i++;
      const saved = this.nest;
      this.nest = 1;
      this.skip();
      const word = this.identifier();
      let d: Flat;
      if (word === 'if') d = { kind: 'directive', word, expr: this.expression(), stripL, stripR: false, pos };
      else if (word === 'for') {
        const h = this.forHeader();
        d = {
          kind: 'directive',
          word,
          expr: h.collection,
          keyVar: h.keyVar,
          valueVar: h.valueVar,
          stripL,
          stripR: false,
          pos,
        };
      } else if (word === 'else' || word === 'endif' || word === 'endfor')
        d = { kind: 'directive', word, stripL, stripR: false, pos };
      else
        this.fail(`unknown template directive %{${word}}`, 'HCL knows %{if}, %{else}, %{endif}, %{for} and %{endfor}');
      this.skip();
      if (this.peek() === '~') {
        d.stripR = true;
        this.i++;
      }
      this.expect('}', '"}" closing %{');
      this.nest = saved;
      flat.push(d);
      return true;
    }
    return false;
  }

  /** A whole text as a template (templatefile()'s files): ${...} and %{...}, no escapes. */
  wholeTemplate(): Expr {
    const flat: Flat[] = [];
    let text = '';
    const flush = () => {
      if (text) flat.push({ kind: 'text', text });
      text = '';
    };
    while (this.i < this.src.length) {
      if (
        this.templateMarkup(
          flat,
          (t) => {
            text += t;
          },
          flush,
        )
      )
        continue;
      text += this.src[this.i];
      this.i++;
    }
    flush();
    return this.finishTemplate(flat, this.posAt(0));
  }

  private heredoc(): Expr {
    const pos = this.pos();
    this.i += 2;
    const indent = this.peek() === '-';
    if (indent) this.i++;
    const marker = this.identifier();
    this.skip(false);
    if (this.peek() === '\r') this.i++;
    if (this.peek() !== '\n')
      this.fail(
        "a heredoc's marker must end its line",
        `start the text on the line after <<${indent ? '-' : ''}${marker}`,
      );
    this.i++;
    // The body: up to a line holding only the marker (and spaces).
    const lines: { start: number; end: number }[] = [];
    for (;;) {
      if (this.i >= this.src.length)
        this.fail(
          `the heredoc <<${marker} is never closed`,
          `end it with a line holding only ${marker}`,
          this.offsetOf(pos),
        );
      let end = this.src.indexOf('\n', this.i);
      if (end < 0) end = this.src.length;
      const line = this.src.slice(this.i, end).replace(/\r$/, '');
      if (line.trim() === marker) {
        this.i = end;
        break;
      }
      lines.push({ start: this.i, end: end === this.src.length ? end : end + 1 });
      this.i = end + 1;
    }
    const after = this.i;
    let strip = 0;
    if (indent) {
      const widths = lines
        .filter((l) => this.src.slice(l.start, l.end).trim())
        .map((l) => /^[ \t]*/.exec(this.src.slice(l.start, l.end))![0].length);
      strip = widths.length ? Math.min(...widths) : 0;
    }
    // Parse the body as a template (no backslash escapes in heredocs), line by line for the indent strip.
    const flat: Flat[] = [];
    let text = '';
    const flush = () => {
      if (text) flat.push({ kind: 'text', text });
      text = '';
    };
    for (const l of lines) {
      this.i = l.start;
      let col = 0;
      while (col < strip && (this.peek() === ' ' || this.peek() === '\t')) {
        this.i++;
        col++;
      }
      while (this.i < l.end) {
        if (
          this.templateMarkup(
            flat,
            (t) => {
              text += t;
            },
            flush,
          )
        )
          continue;
        text += this.src[this.i];
        this.i++;
      }
    }
    flush();
    this.i = after;
    return this.finishTemplate(flat, pos);
  }

  /** Applies strip markers and nests %{if}/%{for}; a string without markup is a literal. */
  private finishTemplate(flat: Flat[], pos: Pos): Expr {
    for (let k = 0; k < flat.length; k++) {
      const f = flat[k]!;
      if (f.kind === 'text') continue;
      const prev = flat[k - 1];
      const next = flat[k + 1];
      if (f.stripL && prev?.kind === 'text') prev.text = prev.text.replace(/\s+$/, '');
      if (f.stripR && next?.kind === 'text') next.text = next.text.replace(/^\s+/, '');
    }
    let k = 0;
    const nestParts = (stops: string[]): { parts: TemplatePart[]; stop?: Flat & { kind: 'directive' } } => {
      const parts: TemplatePart[] = [];
      while (k < flat.length) {
        const f = flat[k++]!;
        if (f.kind === 'text') {
          if (f.text) parts.push({ kind: 'text', text: f.text });
          continue;
        }
        if (f.kind === 'interp') {
          parts.push({ kind: 'interp', expr: f.expr });
          continue;
        }
        if (stops.includes(f.word)) return { parts, stop: f };
        if (f.word === 'if' || f.word === 'for') this.enter('%{if} and %{for} directives', this.offsetOf(f.pos));
        if (f.word === 'if') {
          const a = nestParts(['else', 'endif']);
          let otherwise: TemplatePart[] = [];
          if (a.stop?.word === 'else') {
            const b = nestParts(['endif']);
            if (!b.stop) this.fail('%{if} without %{endif}', 'close it with %{endif}', this.offsetOf(f.pos));
            otherwise = b.parts;
          } else if (!a.stop) this.fail('%{if} without %{endif}', 'close it with %{endif}', this.offsetOf(f.pos));
          parts.push({ kind: 'if', cond: f.expr!, then: a.parts, else: otherwise });
          this.depth--;
          continue;
        }
        if (f.word === 'for') {
          const a = nestParts(['endfor']);
          if (!a.stop) this.fail('%{for} without %{endfor}', 'close it with %{endfor}', this.offsetOf(f.pos));
          parts.push({ kind: 'for', keyVar: f.keyVar, valueVar: f.valueVar!, collection: f.expr!, body: a.parts });
          this.depth--;
          continue;
        }
        this.fail(
          `%{${f.word}} without a matching %{${f.word === 'endfor' ? 'for' : 'if'}}`,
          'remove it or add the opening directive',
          this.offsetOf(f.pos),
        );
      }
      return { parts };
    };
    const { parts } = nestParts([]);
    if (parts.length === 0) return { kind: 'literal', value: '', pos };
    const only = parts[0];
    if (parts.length === 1 && only?.kind === 'text') return { kind: 'literal', value: only.text, pos };
    return { kind: 'template', parts, pos };
  }
}

/** Parses a whole file (a body of attributes and blocks). */
export function parseHcl(text: string, file: string): Body {
  return new Parser(text, file).body(false);
}

/** Parses one expression, e.g. a -var value written in HCL syntax; nothing may follow it. */
export function parseHclExpression(text: string, file: string): Expr {
  return new Parser(text, file).wholeExpression();
}

/** Parses a text as a template, as templatefile() reads its file. */
export function parseHclTemplate(text: string, file: string): Expr {
  return new Parser(text, file).wholeTemplate();
}

/** Blocks of a body by type, in written order. */
export const blocksOf = (body: Body, type?: string): Block[] =>
  body.items.filter((b): b is Block => b.kind === 'block' && (type === undefined || b.type === type));
export const attributesOf = (body: Body): Attribute[] =>
  body.items.filter((a): a is Attribute => a.kind === 'attribute');
