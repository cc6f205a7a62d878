/**
 * Packer's *.pkr.json: HCL's JSON syntax (not the legacy JSON of "builders"). Read into the same
 * attribute/block tree the native-syntax parser gives, with lines, so the rest of kiln's Packer
 * front-end treats both alike. Strings are HCL templates ("${var.x}"), as the JSON syntax says; which
 * keys are blocks follows Packer's schema (variable, locals, source, build, provisioner, post-processor).
 */
import { readFileSync } from 'node:fs';
import YAML, { LineCounter, isMap, isScalar, isSeq, type Node } from 'yaml';
import { PackerTemplateError } from './model.js';
import type { Value } from './eval.js';
import {
  HclError,
  maxHclDepth,
  parseHclExpression,
  parseHclTemplate,
  type Attribute,
  type Block,
  type Body,
  type Expr,
  type Pos,
} from './hcl.js';

/**
 * Fails when arrays and objects nest deeper than the native syntax allows: the YAML library (and the walk
 * below) would otherwise run out of stack and report "Maximum call stack size exceeded" as a syntax error.
 */
function checkDepth(text: string, file: string): void {
  let depth = 0;
  let line = 1;
  let lineStart = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text[i];
    if (c === '\n') {
      line++;
      lineStart = i + 1;
    } else if (c === '"') {
      for (i++; i < text.length && text[i] !== '"' && text[i] !== '\n'; i++) if (text[i] === '\\') i++;
    } else if (c === '[' || c === '{') {
      if (++depth > maxHclDepth)
        throw new HclError(
          file,
          { line, column: i - lineStart + 1 },
          `lists and objects nest more than ${maxHclDepth} levels deep here`,
          'flatten it: move inner parts into locals or split the value; no real template nests this deep',
        );
    } else if (c === ']' || c === '}') depth--;
  }
}

/** Block types and how many labels each takes, by where they appear. */
const topBlocks: Record<string, number> = { variable: 1, locals: 0, local: 1, source: 2, build: 0, packer: 0, data: 2 };
const buildBlocks: Record<string, number> = {
  provisioner: 1,
  'post-processor': 1,
  'post-processors': 0,
  source: 1,
  'error-cleanup-provisioner': 1,
  hcp_packer_registry: 0,
};
const innerBlocks: Record<string, Record<string, number>> = {
  build: buildBlocks,
  'post-processors': { 'post-processor': 1 },
  variable: { validation: 0 },
  packer: { required_plugins: 0 },
};

export function parseHclJson(text: string, file: string): Body {
  checkDepth(text, file);
  const counter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: counter, uniqueKeys: false });
  const posOf = (n: Node | null | undefined): Pos => {
    const r = n && (isScalar(n) || isMap(n) || isSeq(n)) ? n.range : undefined;
    if (!r) return { line: 1, column: 1 };
    const lp = counter.linePos(r[0]);
    return { line: lp.line, column: lp.col };
  };
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new HclError(
      file,
      { line: e.linePos?.[0]?.line ?? 1, column: e.linePos?.[0]?.col ?? 1 },
      `syntax error: ${e.message.split('\n')[0]}`,
      'fix the JSON syntax there',
    );
  }
  const expr = (n: Node | null | undefined, asType = false): Expr => {
    const pos = posOf(n);
    if (!n || (isScalar(n) && n.value === null)) return { kind: 'literal', value: null, pos };
    if (isScalar(n)) {
      if (typeof n.value === 'string') {
        const inner = asType ? parseHclExpression(n.value, file) : parseHclTemplate(n.value, file);
        return { ...inner, pos };
      }
      return { kind: 'literal', value: n.value as number | boolean, pos };
    }
    if (isSeq(n)) return { kind: 'tuple', items: n.items.map((i) => expr(i as Node)), pos };
    if (isMap(n))
      return {
        kind: 'object',
        items: n.items.map((it) => ({
          key: { kind: 'literal', value: String((it.key as { value?: unknown }).value), pos: posOf(it.key as Node) },
          value: expr(it.value as Node),
          bareKey: String((it.key as { value?: unknown }).value),
        })),
        pos,
      };
    throw new HclError(file, pos, 'unexpected JSON value');
  };
  /** `{"type": {"label": {...}}}` nests one object per label; a list at any level holds several blocks. */
  const blocks = (
    type: string,
    labels: number,
    n: Node,
    known: Record<string, number> | undefined,
    got: string[] = [],
  ): Block[] => {
    if (isSeq(n)) return n.items.flatMap((i) => blocks(type, labels, i as Node, known, got));
    if (!isMap(n)) throw new HclError(file, posOf(n), `"${type}" must be an object`, `write "${type}": { ... }`);
    if (got.length < labels)
      return n.items.flatMap((it) =>
        blocks(type, labels, it.value as Node, known, [...got, String((it.key as { value?: unknown }).value)]),
      );
    return [{ kind: 'block', type, labels: got, body: body(n, innerBlocks[type], type), pos: posOf(n) }];
  };
  const body = (n: Node, known: Record<string, number> | undefined, owner: string): Body => {
    if (!isMap(n)) throw new HclError(file, posOf(n), 'expected an object', 'write { "name": value }');
    const items: Body['items'] = [];
    for (const it of n.items) {
      const key = String((it.key as { value?: unknown }).value);
      if (key === '//') continue; // HCL JSON's comment key
      if (known && Object.hasOwn(known, key)) {
        items.push(...blocks(key, known[key]!, it.value as Node, known));
        continue;
      }
      items.push({
        kind: 'attribute',
        name: key,
        expr: expr(it.value as Node, owner === 'variable' && key === 'type'),
        pos: posOf(it.key as Node),
      } satisfies Attribute);
    }
    return { items };
  };
  if (!isMap(doc.contents))
    throw new HclError(
      file,
      { line: 1, column: 1 },
      'a *.pkr.json template is a JSON object',
      'write { "source": ..., "build": ... }',
    );
  return body(doc.contents as Node, topBlocks, '');
}

/** A JSON file read with the line of every node (JSON is read with the YAML parser, which knows where each node is). */
export function readJson(
  file: string,
  fix: string,
): { text: string; raw: Value; lineOf: (p: (string | number)[]) => number } {
  const text = readFileSync(file, 'utf8');
  const counter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter: counter, uniqueKeys: true });
  if (doc.errors.length) {
    const e = doc.errors[0]!;
    throw new PackerTemplateError([
      { at: { file, line: e.linePos?.[0]?.line ?? 1 }, message: `syntax error: ${e.message.split('\n')[0]}`, fix },
    ]);
  }
  const raw = doc.toJS() as Value;
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
  return { text, raw, lineOf };
}
