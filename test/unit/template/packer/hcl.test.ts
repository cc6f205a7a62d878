// kiln's HCL native-syntax parser and evaluator: the HCL spec's examples, Packer's idioms, block order,
// errors with line:column, and a fuzz run (any input either parses or fails with an HclError).
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { describe, expect, it, onTestFinished } from 'vitest';
import { loadTemplate } from '../../../../src/template/load.js';
import { TemplateError } from '../../../../src/template/errors.js';
import { VariableError } from '../../../../src/template/variables.js';
import { HclError, blocksOf, parseHcl, parseHclExpression, type Body } from '../../../../src/template/packer/hcl.js';
import { evaluate, type EvalContext, type Value } from '../../../../src/template/packer/eval.js';

const ctx = (scope: Record<string, Value> = {}): EvalContext => ({
  file: 't.pkr.hcl',
  scope,
  cwd: process.cwd(),
  now: new Date('2024-03-04T05:06:07Z'),
});
const val = (src: string, scope: Record<string, Value> = {}) =>
  evaluate(parseHclExpression(src, 't.pkr.hcl'), ctx(scope));
const attr = (body: Body, name: string) => body.items.find((i) => i.kind === 'attribute' && i.name === name);

describe('HCL parser', () => {
  it('keeps blocks of different types in written order, with labels and positions', () => {
    const body = parseHcl(
      `
source "qemu" "a" {
  iso_url = "x"
}
build {
  sources = ["source.qemu.a"]
  provisioner "shell" { inline = ["one"] }
  provisioner "file" {
    source      = "f"
    destination = "/tmp/f"
  }
  provisioner "shell" {
    inline = ["two"]
  }
}
`,
      't.pkr.hcl',
    );
    const [src, build] = blocksOf(body);
    expect(src).toMatchObject({ type: 'source', labels: ['qemu', 'a'], pos: { line: 2, column: 1 } });
    expect(blocksOf(build!.body, 'provisioner').map((p) => p.labels[0])).toEqual(['shell', 'file', 'shell']);
    expect(blocksOf(build!.body)[1]!.pos).toEqual({ line: 8, column: 3 });
  });

  it("reads the HCL spec's expression forms", () => {
    expect(val('1 + 2 * 3')).toBe(7);
    expect(val('(1 + 2) * 3')).toBe(9);
    expect(val('10 % 4 == 2 && !false')).toBe(true);
    expect(val('1 < 2 ? "yes" : "no"')).toBe('yes');
    expect(val('[1, 2, 3][1]')).toBe(2);
    expect(val('{a = 1, "b" = 2, c: 3}')).toEqual({ a: 1, b: 2, c: 3 });
    expect(val('[for s in ["a", "b"] : upper(s)]')).toEqual(['A', 'B']);
    expect(val('{for i, s in ["a", "b"] : s => i}')).toEqual({ a: 0, b: 1 });
    expect(val('[for s in ["a", "bb", "c"] : s if length(s) == 1]')).toEqual(['a', 'c']);
    expect(val('{for s in ["a", "b", "a"] : s => s...}')).toEqual({ a: ['a', 'a'], b: ['b'] });
    expect(val('[{n = 1}, {n = 2}][*].n')).toEqual([1, 2]);
    expect(val('[{n = 1}, {n = 2}].*.n')).toEqual([1, 2]);
    expect(val('concat(["a"], ["b"])')).toEqual(['a', 'b']);
    expect(val('max([1, 5, 3]...)')).toBe(5);
    expect(val('-3 + 1.5e1')).toBe(12);
    expect(val('"\\u00e9\\t\\"q\\""')).toBe('é\t"q"');
  });

  it('reads templates: interpolation, directives, strip markers, escapes, heredocs', () => {
    expect(val('"Hello, ${var.name}!"', { var: { name: 'kiln' } })).toBe('Hello, kiln!');
    expect(val('"${var.n}"', { var: { n: 3 } })).toBe(3);
    expect(val('"Hello, %{ if var.name != "" }${var.name}%{ else }unnamed%{ endif }!"', { var: { name: '' } })).toBe(
      'Hello, unnamed!',
    );
    expect(val('"%{ for x in ["a", "b"] }<${x}>%{ endfor }"')).toBe('<a><b>');
    expect(val('"$${HOME} %%{x}"')).toBe('${HOME} %{x}');
    const body = parseHcl(
      'a = <<EOT\nhello\n  ${var.x}\nEOT\nb = <<-EOT\n    one\n      two\n    EOT\nc = "x   ${~ "y" ~}   z"\n',
      't.pkr.hcl',
    );
    const e = (n: string) => {
      const a = attr(body, n);
      if (a?.kind !== 'attribute') throw new Error(n);
      return evaluate(a.expr, ctx({ var: { x: 'X' } }));
    };
    expect(e('a')).toBe('hello\n  X\n');
    expect(e('b')).toBe('one\n  two\n');
    expect(e('c')).toBe('xyz');
    expect(val('"%{ for x in ["a", "b"] ~}\n${x}\n%{ endfor ~}"'.replace(/\n/g, '\\n'))).toBe('a\nb\n');
  });

  it('reads comments of every kind and one-line blocks', () => {
    const body = parseHcl('# a\n// b\n/* c\n d */ x = 1 # e\nblk "l" { y = 2 }\n', 't.pkr.hcl');
    expect(body.items.map((i) => i.kind)).toEqual(['attribute', 'block']);
  });

  it('runs the functions Packer templates use', () => {
    expect(val('join("-", ["a", "b"])')).toBe('a-b');
    expect(val('format("%s-%03d", "x", 7)')).toBe('x-007');
    expect(val('replace("a.b.c", ".", "_")')).toBe('a_b_c');
    expect(val('replace("a1b22", "/[0-9]+/", "#")')).toBe('a#b#');
    expect(val('split(",", "a,b")')).toEqual(['a', 'b']);
    expect(val('trimspace("  x \\n")')).toBe('x');
    expect(val('lookup({a = 1}, "b", 2)')).toBe(2);
    expect(val('merge({a = 1}, {b = 2}, {a = 3})')).toEqual({ a: 3, b: 2 });
    expect(val('sha256("abc")')).toBe('ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad');
    expect(val('timestamp()')).toBe('2024-03-04T05:06:07Z');
    expect(val('formatdate("YYYYMMDD-hhmm", timestamp())')).toBe('20240304-0506');
    expect(val('basename("/a/b.iso")')).toBe('b.iso');
    expect(val('dirname("/a/b.iso")')).toBe('/a');
    expect(String(val('uuidv4()'))).toMatch(/^[0-9a-f-]{36}$/);
    expect(() => val('env("HOME")')).toThrow(/only be used in a variable's default/);
    expect(() => val('nosuch(1)')).toThrow(/does not know the function nosuch\(\)/);
    expect(() => val('replace("a", "/[/", "x")')).toThrow(HclError);
    expect(() => val('range(1, 10, 0)')).toThrow(HclError);
  });

  it('names line and column in its errors', () => {
    const cases: [string, RegExp][] = [
      ['a = \n', /t\.pkr\.hcl:1:5: expected a value, found the end of the line/],
      ['a = "x\n', /t\.pkr\.hcl:1:5: a string is never closed/],
      ['blk {\n  a = 1\n', /t\.pkr\.hcl:3:1: a block is never closed/],
      ['a = 1 b = 2\n', /t\.pkr\.hcl:1:7: expected the end of the line/],
      ['a = 1\na = 2\n', /attribute "a" is set twice \(also at line 1\)/],
      ['a = <<EOT\nx\n', /t\.pkr\.hcl:1:5: the heredoc <<EOT is never closed/],
      ['a = "%{ if true }x"\n', /%\{if\} without %\{endif\}/],
      ['a = [1 2]\n', /t\.pkr\.hcl:1:8: expected "," or "\]" in a list/],
      ['}\n', /t\.pkr\.hcl:1:1: "\}" without a block to close/],
    ];
    for (const [src, re] of cases) {
      expect(() => parseHcl(src, 't.pkr.hcl'), src).toThrow(HclError);
      expect(() => parseHcl(src, 't.pkr.hcl'), src).toThrow(re);
    }
  });

  it('fuzz: any text either parses or fails with an HclError', () => {
    const seeds = [
      'source "qemu" "a" {\n  iso_url = "${var.x}-%{ if true }y%{ endif }"\n  qemuargs = [["-m", "1G"]]\n}\n',
      'a = <<-EOT\n  ${x}\n  EOT\n',
      'l = { for k, v in var.m : k => v if v != "" }\n',
    ];
    const alphabet = fc.constantFrom(...'"${}[]()%~<>=!?:,.*/#-\n EOTa1\\'.split(''));
    fc.assert(
      fc.property(
        fc.constantFrom(...seeds),
        fc.array(
          fc.tuple(
            fc.nat(200),
            fc.array(alphabet, { maxLength: 4 }).map((a) => a.join('')),
            fc.nat(3),
          ),
        ),
        (seedText, edits) => {
          let text = seedText;
          for (const [at, ins, del] of edits) {
            const i = at % (text.length + 1);
            text = text.slice(0, i) + ins + text.slice(i + del);
          }
          try {
            parseHcl(text, 'f.pkr.hcl');
          } catch (e) {
            if (!(e instanceof HclError)) throw e;
          }
        },
      ),
      { seed: 0x6b696c6e, numRuns: 3000 },
    );
  });

  it('fuzz: a mutated Packer template loads or fails with a TemplateError, never a crash', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-hcl-fuzz-'));
    onTestFinished(() => rmSync(dir, { recursive: true, force: true }));
    const seedText = readFileSync(path.join(__dirname, '../../../fixtures/packer/tiny/tiny.pkr.hcl'), 'utf8');
    const file = path.join(dir, 'fuzz.pkr.hcl');
    const alphabet = fc.constantFrom(
      ...'"${}[]()%~<>=!?:,.*#-\n 0aZ'.split(''),
      'var.',
      'local.',
      'source',
      'build',
      'null',
      'true',
      '[for x in [1] : x]',
      'env("X")',
      'upper(1)',
      '{a = 1}',
      '<<EOT\nx\nEOT\n',
    );
    fc.assert(
      fc.property(
        fc.array(fc.tuple(fc.nat(seedText.length), alphabet, fc.nat(4)), { minLength: 1, maxLength: 4 }),
        (edits) => {
          let text = seedText;
          for (const [at, ins, del] of edits) {
            const i = at % (text.length + 1);
            text = text.slice(0, i) + ins + text.slice(i + del);
          }
          writeFileSync(file, text);
          try {
            loadTemplate(file, { env: {} });
          } catch (e) {
            if (!(e instanceof TemplateError) && !(e instanceof VariableError)) throw e;
          }
        },
      ),
      { seed: 0x6b696c6e, numRuns: 400 },
    );
  });
});
