// Issue 23: HCL input that used to crash or mislead. Deep nesting and templatefile() recursion end in a
// located error (not "Maximum call stack size exceeded"); a locals cycle is named as one; out-of-range
// numbers and wrong argument counts are said at file:line; file() outside the template's folder is noted.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../../helpers/guest.js';
import { loadTemplate } from '../../../../src/template/load.js';
import { TemplateError } from '../../../../src/template/errors.js';
import { VariableError } from '../../../../src/template/variables.js';
import { HclError, maxHclDepth, parseHcl, parseHclExpression } from '../../../../src/template/packer/hcl.js';
import {
  evaluate,
  readFromFile,
  type EvalContext,
  type FileRead,
  type Value,
} from '../../../../src/template/packer/eval.js';
import { signatures } from '../../../../src/template/packer/signatures.js';
import { renderGoTemplate } from '../../../../src/template/packer/gotemplate.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-hcl-robust-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const ctx = (extra: Partial<EvalContext> = {}): EvalContext => ({
  file: 't.pkr.hcl',
  scope: {},
  cwd: dir,
  now: new Date('2024-03-04T05:06:07Z'),
  ...extra,
});
const val = (src: string, extra: Partial<EvalContext> = {}, locals: Record<string, Value> = {}) =>
  evaluate(parseHclExpression(src, 't.pkr.hcl'), ctx(extra), locals);

/** The error a function throws (fails the test when it throws none). */
function errorOf(f: () => unknown): Error {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error, got none');
}

/** A loadable Packer template around `extra` (locals, variables...), in its own folder. */
function template(name: string, extra: string, fields = ''): string {
  const d = path.join(dir, name);
  mkdirSync(d, { recursive: true });
  const file = path.join(d, 't.pkr.hcl');
  writeFileSync(
    file,
    `${extra}
source "qemu" "a" {
  iso_url      = "${repoRoot}/fixtures/images/tiny.qcow2"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_private_key_file = "${repoRoot}/fixtures/keys/insecure_ed25519"
  output_directory = "${path.join(d, 'out')}"
${fields}}
build { sources = ["source.qemu.a"] }
`,
  );
  return file;
}

describe('deep nesting', () => {
  const N = 50_000;
  const deep: [string, string][] = [
    ['brackets', `a = ${'['.repeat(N)}${']'.repeat(N)}`],
    ['braces', `a = ${'{x = '.repeat(N)}1${'}'.repeat(N)}`],
    ['parentheses', `a = ${'('.repeat(N)}1${')'.repeat(N)}`],
    ['function calls', `a = ${'upper('.repeat(N)}"x"${')'.repeat(N)}`],
    ['conditionals', `a = ${'true ? 1 : '.repeat(N)}2`],
    ['an operator chain', `a = ${'1 + '.repeat(N)}1`],
    ['unary operators', `a = ${'!'.repeat(N)}true`],
    ['a traversal', `a = x${'.b'.repeat(N)}`],
    ['an index chain', `a = x${'[0]'.repeat(N)}`],
    ['blocks', `${'b {\n'.repeat(N)}${'}\n'.repeat(N)}`],
    ['templates', `a = ${'"${'.repeat(N)}1${'}"'.repeat(N)}`],
    ['%{if} directives', `a = "${'%{if true}'.repeat(N)}${'%{endif}'.repeat(N)}"`],
  ];
  for (const [what, src] of deep) {
    it(`${what}, 50k deep, fail with file:line:col and a fix`, () => {
      const e = errorOf(() => parseHcl(src, 'deep.pkr.hcl'));
      expect(e).toBeInstanceOf(HclError);
      expect(e.message).toMatch(
        new RegExp(
          `^deep\\.pkr\\.hcl:\\d+:\\d+: .* nest more than ${maxHclDepth} levels deep here\\n  fix: flatten it`,
        ),
      );
    });
  }

  it('what real templates nest (40 levels) still parses and evaluates', () => {
    expect(val(`${'['.repeat(40)}1${']'.repeat(40)}`)).toEqual(JSON.parse(`${'['.repeat(40)}1${']'.repeat(40)}`));
    expect(val(`${'1 + '.repeat(100)}1`)).toBe(101);
  });

  it('a 50k-deep Packer template fails to load with a TemplateError naming the line', () => {
    const file = template('deep', `locals {\n  a = ${'['.repeat(N)}${']'.repeat(N)}\n}\n`);
    const e = errorOf(() => loadTemplate(file, { env: {} }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toMatch(/t\.pkr\.hcl:2: .*nest more than \d+ levels deep here \(column \d+\)/);
  });

  it('a *.pkr.json template nested 50k deep fails with a located error', () => {
    const d = path.join(dir, 'deep-json');
    mkdirSync(d);
    const file = path.join(d, 't.pkr.json');
    writeFileSync(file, `{"locals": {"a": ${'['.repeat(N)}${']'.repeat(N)}}}`);
    const e = errorOf(() => loadTemplate(file, { env: {} }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toMatch(/t\.pkr\.json:1: .*lists and objects nest more than 256 levels deep here \(column 272\)/);
  });
});

describe('deep values', () => {
  const deepJson = `${'['.repeat(50_000)}${']'.repeat(50_000)}`;
  it('jsondecode() of 50k-deep JSON fails at file:line:col', () => {
    expect(errorOf(() => val(`flatten(jsondecode("${deepJson}"))`)).message).toMatch(
      /^t\.pkr\.hcl:1:9: jsondecode\(\): the JSON nests more than 256 levels deep/,
    );
  });

  it('a 50k-deep value from a JSON var file, compared or encoded, fails with a located error', () => {
    const file = template(
      'deep-var',
      'variable "x" {\n  type = any\n  default = []\n}\nlocals {\n  same = var.x == []\n}\n',
    );
    const vf = path.join(path.dirname(file), 'vars.json');
    writeFileSync(vf, `{"x": ${deepJson}}`);
    const e = errorOf(() => loadTemplate(file, { env: {}, varFiles: [vf] }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toMatch(/t\.pkr\.hcl:6: .*a value here nests too deeply to work with/);
  });
});

describe('legacy JSON go-template actions', () => {
  it("50k nested parentheses fail with kiln's error naming the field, not a stack overflow", () => {
    const d = path.join(dir, 'legacy-deep');
    mkdirSync(d);
    const file = path.join(d, 't.json');
    const deep = `{{${'lower ('.repeat(50_000)}\`x\`${')'.repeat(50_000)}}}`;
    writeFileSync(
      file,
      JSON.stringify(
        {
          builders: [
            {
              type: 'qemu',
              iso_url: `${repoRoot}/fixtures/images/tiny.qcow2`,
              iso_checksum: 'none',
              disk_image: true,
              ssh_username: 'root',
              vm_name: deep,
            },
          ],
        },
        null,
        2,
      ),
    );
    const e = errorOf(() => loadTemplate(file, { env: {} }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toMatch(/template actions nest more than 64 levels deep/);
    expect(renderGoTemplate('{{ lower (upper (lower `aB`)) }}', { now: new Date() })).toBe('ab');
  });
});

describe('templatefile() recursion', () => {
  it('a template that includes itself fails at its file:line, naming the rule and the fix', () => {
    writeFileSync(path.join(dir, 'self.tpl'), 'x\n${templatefile("self.tpl", {})}\n');
    const e = errorOf(() => val('templatefile("self.tpl", {})'));
    expect(e).toBeInstanceOf(HclError);
    expect(e.message).toContain(
      `${path.join(dir, 'self.tpl')}:2:3: templatefile() is called inside the template ${path.join(dir, 'self.tpl')}, which it renders again`,
    );
    expect(e.message).toMatch(/fix: render the inner template first/);
  });

  it('two templates including each other fail too, naming both', () => {
    writeFileSync(path.join(dir, 'a.tpl'), '${templatefile("b.tpl", {})}');
    writeFileSync(path.join(dir, 'b.tpl'), '${templatefile("a.tpl", {})}');
    const e = errorOf(() => val('templatefile("a.tpl", {})'));
    expect(e.message).toContain(
      `${path.join(dir, 'a.tpl')}:1:3: templatefile() is called inside the template ${path.join(dir, 'a.tpl')} (rendered by t.pkr.hcl:1), for ${path.join(dir, 'b.tpl')}`,
    );
  });

  it('a template without templatefile() still renders its vars', () => {
    writeFileSync(path.join(dir, 'ok.tpl'), 'hello ${name}%{ for x in xs }-${x}%{ endfor }');
    expect(val('templatefile("ok.tpl", { name = "w", xs = [1, 2] })')).toBe('hello w-1-2');
  });
});

describe('locals', () => {
  it('a two-local cycle names both members with file:line', () => {
    const file = template('cycle2', 'locals {\n  a = local.b\n  b = "${local.a}-x"\n}\n');
    const e = errorOf(() => loadTemplate(file, { env: {} }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toContain(
      `locals refer to each other in a cycle, so none of them has a value: local.a (${file}:2) -> local.b (${file}:3) -> local.a`,
    );
    expect(e.message).not.toMatch(/not defined|declare it first/);
  });

  it('a longer cycle and a self-reference are named as such', () => {
    const long = template('cycle3', 'locals {\n  ok = 1\n  a = local.b\n  b = [local.c]\n  c = upper(local.a)\n}\n');
    expect(errorOf(() => loadTemplate(long, { env: {} })).message).toContain(
      `local.a (${long}:3) -> local.b (${long}:4) -> local.c (${long}:5) -> local.a`,
    );
    const self = template('cycle1', 'locals {\n  a = local.a\n}\n');
    expect(errorOf(() => loadTemplate(self, { env: {} })).message).toContain(
      `local.a refers to itself: local.a (${self}:2) -> local.a`,
    );
  });

  it('a local that is really undefined is still said as undefined', () => {
    const file = template('undef', 'locals {\n  a = local.nope\n  b = local.a\n}\n');
    expect(errorOf(() => loadTemplate(file, { env: {} })).message).toMatch(/local\.nope is not defined/);
  });
});

describe('numbers', () => {
  it('1e999999 is out of range at file:line:col, not "null"', () => {
    const e = errorOf(() => parseHcl('a = 1\nb = 1e999999\n', 'n.pkr.hcl'));
    expect(e.message).toMatch(/^n\.pkr\.hcl:2:5: the number 1e999999 is out of range/);
    const file = template('bignum', '', '  memory = 1e999999\n');
    const le = errorOf(() => loadTemplate(file, { env: {} }));
    expect(le.message).toMatch(/out of range/);
    expect(le.message).not.toMatch(/null/);
  });

  it('a long number is read whole, and arithmetic overflow is said where it happens', () => {
    expect(val('1'.repeat(70))).toBe(Number('1'.repeat(70)));
    expect(errorOf(() => val('1e308 * 10')).message).toMatch(
      /^t\.pkr\.hcl:1:1: the number is out of range \(above about 1\.8e308\)/,
    );
  });
});

describe('function arity and types', () => {
  it('join(",") is refused as Packer refuses it, at file:line', () => {
    expect(errorOf(() => val('join(",")')).message).toMatch(
      /^t\.pkr\.hcl:1:1: join\(\) takes at least 2 arguments \(separator, list, lists\.\.\.\), got 1/,
    );
    expect(val('join(",", ["a"], ["b"])')).toBe('a,b');
  });

  it('too few and too many arguments are said with the parameter names, never "undefined"', () => {
    const cases: [string, RegExp][] = [
      ['upper()', /upper\(\) takes 1 argument \(string\), got 0/],
      ['split(",")', /split\(\) takes 2 arguments \(separator, string\), got 1/],
      ['replace("a", "b")', /replace\(\) takes 3 arguments \(string, substring, replacement\), got 2/],
      ['lookup({})', /lookup\(\) takes 2 to 3 arguments \(map, key, default\), got 1/],
      ['range()', /range\(\) takes 1 to 3 arguments/],
      ['timestamp(1)', /timestamp\(\) takes 0 arguments \(\), got 1/],
      ['templatefile("x")', /templatefile\(\) takes 2 arguments \(path, vars\), got 1/],
      ['min()', /min\(\) takes at least 1 argument/],
      ['can()', /can\(\) takes 1 argument \(expression\), got 0/],
      ['upper(["a", "b"]...)', /upper\(\) takes 1 argument .*after expanding/],
    ];
    for (const [src, re] of cases) {
      const e = errorOf(() => val(`${src}`));
      expect(e, src).toBeInstanceOf(HclError);
      expect(e.message, src).toMatch(re);
      expect(e.message, src).not.toMatch(/undefined/);
    }
  });

  it('an argument of the wrong type is named by position and parameter', () => {
    expect(errorOf(() => val('join(",", "a")')).message).toMatch(
      /^t\.pkr\.hcl:1:11: join\(\): argument 2 \(list\) must be a list, not a string/,
    );
    expect(errorOf(() => val('keys([1])')).message).toMatch(/keys\(\): argument 1 \(map\) must be a map, not a list/);
    expect(val('upper(1)')).toBe('1'); // HCL converts a number to a string
  });

  it('every function kiln runs has a signature', () => {
    const probe = /kiln knows: (.*)/.exec(errorOf(() => val('nosuch()')).message)![1]!.split(', ');
    expect(probe.filter((n) => !Object.hasOwn(signatures, n))).toEqual([]);
  });
});

describe("files outside the template's folder", () => {
  it('file() outside the folder is told with the path, function and position; inside is not', () => {
    const root = path.join(dir, 'proj');
    mkdirSync(root, { recursive: true });
    writeFileSync(path.join(root, 'in.txt'), 'inside');
    const secret = path.join(dir, 'secret.txt');
    writeFileSync(secret, 'hunter2-secret-value');
    symlinkSync(secret, path.join(root, 'link.txt'));
    const reads: FileRead[] = [];
    const c = { root, cwd: root, onFileRead: (r: FileRead) => reads.push(r) };
    expect(val('file("in.txt")', c)).toBe('inside');
    expect(val(`file("${secret}")`, c)).toBe('hunter2-secret-value');
    val('fileexists("/etc/hostname")', c);
    val('file("link.txt")', c);
    expect(reads.map((r) => [r.fn, r.path, r.outside])).toEqual([
      ['file', path.join(root, 'in.txt'), false],
      ['file', secret, true],
      ['fileexists', '/etc/hostname', true],
      ['file', path.join(root, 'link.txt'), true],
    ]);
    expect(reads[1]!.pos).toEqual({ line: 1, column: 1 });
  });

  it('kiln validate warns of it in one line, and a failing load says it too without echoing the content', () => {
    const secret = path.join(dir, 'ci-secret');
    writeFileSync(secret, 'tok-9f8e7d6c5b4a');
    const ok = template('reads-ok', `locals {\n  s = file("${secret}")\n}\n`);
    const loaded = loadTemplate(ok, { env: {} });
    expect(loaded.notes).toContainEqual(
      `${ok}:2:7: file() reads ${secret}, outside the template's folder ${path.dirname(ok)} (Packer allows it; check that the template should read it, as its content can reach messages and the guest)`,
    );
    const bad = template('reads-bad', `locals {\n  n = 1 + file("${secret}")\n}\n`);
    const e = errorOf(() => loadTemplate(bad, { env: {} }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toContain(`a number is needed here, but the value is (the content of ${secret}, not shown)`);
    expect(e.message).toContain(`note: ${bad}:2:11: file() reads ${secret}, outside the template's folder`);
    expect(e.message).not.toContain('tok-9f8e7d6c5b4a');
    // A template that reads fine but fails kiln's later checks says it too.
    const late = template('reads-late', `locals {\n  s = file("${secret}")\n}\n`, '  memory = 900000000\n');
    const le = errorOf(() => loadTemplate(late, { env: {} }));
    expect(le.message).toMatch(/more than this host's RAM/);
    expect(le.message).toContain(`note: ${late}:2:7: file() reads ${secret}, outside the template's folder`);
    expect(readFromFile('tok-9f8e7d6c5b4a')).toBe(secret);
    expect(readFromFile('prefix tok-9f8e7d6c5b4a suffix')).toBe(secret);
  });
});

describe('fuzz', () => {
  // FUZZ_SEED=<n> explores other inputs, FUZZ_RUNS_FACTOR=<k> runs k times as many (as in fuzz.test.ts).
  const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : 0x6b696c6e;
  const runs = (n: number) => Math.ceil(n * Number(process.env.FUZZ_RUNS_FACTOR ?? 1));
  const isKilnError = (e: unknown) => e instanceof HclError || e instanceof TemplateError || e instanceof VariableError;

  it('random nesting of every kind, up to 2000 deep, parses and evaluates or fails cleanly', () => {
    const opens: [string, string][] = [
      ['[', ']'],
      ['(', ')'],
      ['{a = ', '}'],
      ['upper(', ')'],
      ['true ? ', ' : 0'],
      ['"${', '}"'],
      ['-', ''],
      ['!', ''],
      ['[for x in [1] : ', ']'],
      ['try(', ')'],
    ];
    fc.assert(
      fc.property(
        fc.array(fc.nat(opens.length - 1), { minLength: 1, maxLength: 2000 }),
        fc.constantFrom('1', '"s"', 'true', 'x', '[]'),
        (kinds, leaf) => {
          const src = `a = ${kinds.map((k) => opens[k]![0]).join('')}${leaf}${kinds
            .map((k) => opens[k]![1])
            .reverse()
            .join('')}`;
          try {
            const body = parseHcl(src, 'f.pkr.hcl');
            const item = body.items[0];
            if (item?.kind === 'attribute') evaluate(item.expr, ctx({ scope: { x: 1 } }));
          } catch (e) {
            if (!isKilnError(e)) throw e;
          }
        },
      ),
      { seed, numRuns: runs(300) },
    );
  });

  it(
    "mutated HCL with deep pieces loads or fails with kiln's errors, never a crash",
    () => {
      const file = template('fuzz', 'locals {\n  a = [1, 2]\n  b = "${local.a[0]}"\n}\n');
      const seedText = (require('node:fs') as typeof import('node:fs')).readFileSync(file, 'utf8');
      const pieces = [
        '['.repeat(300),
        ']'.repeat(300),
        '('.repeat(600),
        '1+'.repeat(400),
        'local.',
        'join(",")',
        '1e999',
        'templatefile("t.pkr.hcl", {})',
        'file("/etc/hostname")',
        '%{if true}',
        '${',
        '}',
        '"',
        '\n',
        ' = ',
        'a = local.b\n',
        'b = local.a\n',
      ];
      fc.assert(
        fc.property(
          fc.array(fc.tuple(fc.nat(seedText.length), fc.constantFrom(...pieces), fc.nat(3)), {
            minLength: 1,
            maxLength: 5,
          }),
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
              if (!isKilnError(e)) throw e;
              expect((e as Error).message).not.toMatch(/Maximum call stack|undefined/);
            }
          },
        ),
        { seed, numRuns: runs(300) },
      );
    },
    60_000 * Number(process.env.FUZZ_RUNS_FACTOR ?? 1),
  );
});
