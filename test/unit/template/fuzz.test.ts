// Fuzzing the two parsers that read what users type: the template loader and the boot-command parser.
// Whatever the input, the only acceptable failures are kiln's own errors with a message (TemplateError,
// VariableError, BootCommandError); a TypeError, a RangeError or a hang is a bug. The seed is fixed so a
// run is repeatable; FUZZ_SEED=<n> explores others (FUZZ_RUNS_FACTOR=<k> runs k times as many cases),
// and a failure prints the seed and path to replay.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import fc from 'fast-check';
import YAML from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot } from '../../helpers/guest.js';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import { VariableError, type VariableInputs } from '../../../src/template/variables.js';
import { BootCommandError, parseBootCommand, type BootNode } from '../../../src/bootcommand/parse.js';

const seed = process.env.FUZZ_SEED ? Number(process.env.FUZZ_SEED) : 0x6b696c6e;
const runsFactor = Number(process.env.FUZZ_RUNS_FACTOR ?? 1);
const settings = (numRuns: number): fc.Parameters<unknown> => ({ seed, numRuns: Math.ceil(numRuns * runsFactor) });
// About 5 s for the whole file on an idle 2-core machine; the limit leaves room for one shared with QEMU guests.
const fuzzTimeoutMs = 60_000 * runsFactor;

// The examples as mutation seeds, loaded from a copy of their directory layout where every file they
// name exists (as a dummy), so an unmutated example loads and mutations reach past the path checks.
const exampleNames = ['tiny.yaml', 'tiny-install.yaml', 'debian-12-cloud.yaml', 'debian-12-install.yaml'];
const root = mkdtempSync(path.join(os.tmpdir(), 'kiln-fuzz-'));
const templateDir = path.join(root, 'examples');
mkdirSync(templateDir);
const examples = exampleNames.map(
  (name) => YAML.parse(readFileSync(path.join(repoRoot, 'examples', name), 'utf8')) as unknown,
);
for (const example of examples) {
  for (const value of pathValues(example)) {
    const file = path.resolve(templateDir, value);
    mkdirSync(path.dirname(file), { recursive: true });
    writeFileSync(file, 'dummy\n');
  }
}
const templateFile = path.join(templateDir, 'fuzz.yaml');
afterAll(() => rmSync(root, { recursive: true, force: true }));

/** The string values of the fields that name local files kiln reads. */
function pathValues(tree: unknown): string[] {
  if (Array.isArray(tree)) return tree.flatMap(pathValues);
  if (!tree || typeof tree !== 'object') return [];
  return Object.entries(tree).flatMap(([k, v]) =>
    typeof v === 'string' && ['base_image', 'iso', 'private_key_file', 'source', 'script'].includes(k)
      ? [v]
      : pathValues(v),
  );
}

type Outcome = 'loaded' | 'rejected';

/** Loads `text` as a template; kiln's own errors are a fine answer, anything else escapes and fails the run. */
function load(text: string, inputs: VariableInputs = {}): Outcome {
  writeFileSync(templateFile, text);
  try {
    loadTemplate(templateFile, inputs);
    return 'loaded';
  } catch (e) {
    if (e instanceof TemplateError || e instanceof VariableError) {
      expect(e.message.trim().length).toBeGreaterThan(0);
      return 'rejected';
    }
    throw e;
  }
}

// Values that have broken parsers before: type confusion, numbers at the edges, references, prototype keys.
const nastyScalar = fc.oneof(
  fc.constantFrom(
    '',
    ' ',
    'null',
    '~',
    'true',
    'yes',
    '0x1F',
    '1e999',
    '-1e999',
    '.nan',
    '-0',
    '9007199254740993',
    '${',
    '${var.',
    '${var.marker',
    '${var.nope}',
    '${build.nope}',
    '$${var.marker}',
    '${var.constructor}',
    '${var.__proto__}',
    '${build.toString}',
    '<wait',
    '<waitFor /(/>',
    '<enter',
    '\u0000',
    '\u202e',
    '🧱',
    'file:',
    'sha256:',
    '../../../../etc/passwd',
    'http://',
    '10G',
    '1m30s',
    '-5m',
    'constructor',
    '__proto__',
  ),
  fc.string({ unit: 'grapheme', maxLength: 20 }),
  fc.string({ unit: 'binary', maxLength: 10 }),
  fc.double(),
  fc.integer(),
  fc.constantFrom(Number.MAX_SAFE_INTEGER, 2 ** 64, -(2 ** 31), 65536, 0, -1, 1e308),
  fc.boolean(),
  fc.constant(null),
);
const nastyValue: fc.Arbitrary<unknown> = fc.letrec<{ value: unknown }>((tie) => ({
  value: fc.oneof(
    { depthSize: 'small', withCrossShrink: true },
    nastyScalar,
    fc.array(tie('value'), { maxLength: 3 }),
    fc.dictionary(
      fc.oneof(
        fc.constantFrom('type', 'source', 'builds', 'inline', 'format', 'default', '__proto__', 'constructor'),
        fc.string({ maxLength: 8 }),
      ),
      tie('value'),
      { maxKeys: 3 },
    ),
  ),
})).value;
/** Deep nesting, beyond anything a template needs (the dedicated test below goes deeper, as text). */
const deeplyNested = fc.integer({ min: 50, max: 200 }).map((depth) => {
  let v: unknown = 'bottom';
  for (let i = 0; i < depth; i++) v = i % 2 ? [v] : { k: v };
  return v;
});

/** Every path into a JSON-like tree, to pick one to mutate (not into a deep value an earlier mutation put there). */
function allPaths(tree: unknown, prefix: (string | number)[] = []): (string | number)[][] {
  const here = [prefix];
  if (prefix.length >= 8) return here;
  if (Array.isArray(tree)) return [...here, ...tree.flatMap((v, i) => allPaths(v, [...prefix, i]))];
  if (tree && typeof tree === 'object')
    return [...here, ...Object.entries(tree).flatMap(([k, v]) => allPaths(v, [...prefix, k]))];
  return here;
}

type Mutation = { kind: 'replace' | 'delete' | 'insert'; at: number; key: string; value: unknown };
const mutation: fc.Arbitrary<Mutation> = fc.record({
  kind: fc.constantFrom('replace', 'delete', 'insert'),
  at: fc.nat(),
  key: fc.oneof(
    fc.constantFrom(
      'cpus',
      'memory',
      'type',
      'inline',
      'boot_command',
      'cloud_init',
      'outputs',
      'variables',
      'provisoners',
      '__proto__',
    ),
    fc.string({ maxLength: 12 }),
  ),
  value: fc.oneof(nastyValue, deeplyNested),
});

function mutate(tree: unknown, m: Mutation): unknown {
  const paths = allPaths(tree);
  const target = paths[m.at % paths.length]!;
  if (target.length === 0) return m.kind === 'replace' ? m.value : tree;
  const parent = target
    .slice(0, -1)
    .reduce<unknown>((node, k) => (node as Record<string | number, unknown>)[k], tree) as
    Record<string | number, unknown> | unknown[];
  const last = target.at(-1)!;
  if (m.kind === 'replace') setOwn(parent, last, m.value);
  else if (m.kind === 'delete')
    Array.isArray(parent) ? parent.splice(Number(last), 1) : delete (parent as Record<string, unknown>)[last];
  else if (Array.isArray(parent)) parent.splice(Number(last), 0, m.value);
  else setOwn(parent, m.key, m.value);
  return tree;
}

function setOwn(target: object, key: string | number, value: unknown): void {
  Object.defineProperty(target, key, { value, enumerable: true, writable: true, configurable: true });
}

/** Text-level damage to a serialized template: what a bad editor session or a truncated copy does. */
const textEdit = fc.record({
  at: fc.nat(),
  remove: fc.nat({ max: 8 }),
  insert: fc.oneof(
    fc.constantFrom(
      '\t',
      ':',
      ': ',
      '- ',
      '"',
      "'",
      '{',
      '}',
      '[',
      ']',
      '&a ',
      '*a',
      '!!binary ',
      '? ',
      '\n  ',
      '#',
      '%YAML 1.1\n',
      '<<: *a\n',
      '---\n',
      '...',
    ),
    fc.string({ maxLength: 6 }),
  ),
});

function editText(text: string, edits: { at: number; remove: number; insert: string }[]): string {
  let out = text;
  for (const e of edits) {
    const at = e.at % (out.length + 1);
    out = out.slice(0, at) + e.insert + out.slice(at + e.remove);
  }
  return out;
}

const inputs: fc.Arbitrary<VariableInputs> = fc.record({
  vars: fc.array(
    fc.oneof(
      fc.constantFrom('marker=x', 'greeting=', 'console=serial', 'packages=jq', 'nope=1', '=x', 'marker'),
      fc.string({ maxLength: 10 }),
    ),
    { maxLength: 2 },
  ),
  env: fc.constantFrom({}, { KILN_VAR_marker: 'from-env' }, { KILN_VAR_constructor: 'x', KILN_VAR___proto__: 'y' }),
});

describe('template loader fuzz', () => {
  it('loads every example unmutated (so mutations start from a valid template)', () => {
    for (const example of examples) expect(load(YAML.stringify(example))).toBe('loaded');
  });

  it(
    'survives random mutations of the examples',
    () => {
      fc.assert(
        fc.property(
          fc.nat({ max: examples.length - 1 }),
          fc.array(mutation, { minLength: 1, maxLength: 4 }),
          fc.boolean(),
          inputs,
          (which, mutations, asJson, given) => {
            const tree = mutations.reduce((t, m) => mutate(t, m), structuredClone(examples[which]));
            // JSON.stringify drops what JSON cannot hold (undefined, NaN as null): both are fine inputs.
            load(
              asJson ? (JSON.stringify(tree) ?? 'null') : YAML.stringify(tree, { aliasDuplicateObjects: false }),
              given,
            );
          },
        ),
        settings(600),
      );
    },
    fuzzTimeoutMs,
  );

  it(
    'survives damage to the template text',
    () => {
      const texts = exampleNames.map((name) => readFileSync(path.join(repoRoot, 'examples', name), 'utf8'));
      fc.assert(
        fc.property(
          fc.nat({ max: texts.length - 1 }),
          fc.array(textEdit, { minLength: 1, maxLength: 5 }),
          (which, edits) => {
            load(editText(texts[which]!, edits));
          },
        ),
        settings(600),
      );
    },
    fuzzTimeoutMs,
  );

  it(
    'survives random YAML-ish and JSON documents',
    () => {
      const yamlish = fc.string({
        unit: fc.constantFrom(
          ...'abc:- \n\t[]{}",\'#&*!|>%@`?$.01',
          '${var.',
          '${build.',
          'builds',
          'source',
          'variables',
          '<<',
        ),
        maxLength: 80,
      });
      const document = fc.oneof(
        yamlish,
        nastyValue.map((v) => JSON.stringify(v) ?? ''),
        nastyValue.map((v) => YAML.stringify({ builds: [v] })),
        nastyValue.map((v) =>
          YAML.stringify({
            variables: v,
            builds: [{ name: 'x', source: { base_image: '../fixtures/images/tiny.qcow2', checksum: 'none' } }],
          }),
        ),
        fc.constantFrom('', '---', '- a\n- b', '&a [*a]', 'a: &a [*a, *a, *a]\nb: *a', '{', 'builds: !!binary AAAA'),
      );
      fc.assert(
        fc.property(document, (text) => {
          load(text);
        }),
        settings(1000),
      );
    },
    fuzzTimeoutMs,
  );

  it('rejects an alias bomb and very deep nesting cleanly', () => {
    const bomb = [
      'a: &a ["x","x","x","x","x","x","x","x","x"]',
      ...Array.from(
        { length: 8 },
        (_, i) =>
          `${String.fromCharCode(98 + i)}: &${String.fromCharCode(98 + i)} [${Array(9)
            .fill(`*${String.fromCharCode(97 + i)}`)
            .join(',')}]`,
      ),
      'builds: *i',
    ].join('\n');
    expect(load(bomb)).toBe('rejected');
    expect(load(`builds: ${'['.repeat(5000)}${']'.repeat(5000)}`)).toBe('rejected');
    expect(load(`builds:\n${Array.from({ length: 3000 }, (_, i) => `${'  '.repeat(i + 1)}- `).join('\n')}x`)).toBe(
      'rejected',
    );
  });
});

describe('boot-command parser fuzz', () => {
  /** Parses; a BootCommandError must point inside the line and say where; any other throw fails the run. */
  function parse(line: string): BootNode[] | BootCommandError {
    try {
      const nodes = parseBootCommand(line);
      for (const n of nodes) expect(n.pos).toBeGreaterThanOrEqual(0);
      for (const n of nodes) expect(n.pos).toBeLessThan(line.length);
      return nodes;
    } catch (e) {
      if (!(e instanceof BootCommandError)) throw e;
      expect(e.pos).toBeGreaterThanOrEqual(0);
      expect(e.pos).toBeLessThanOrEqual(line.length);
      expect(e.message).toContain(`column ${e.pos + 1}`);
      return e;
    }
  }

  const token = fc.oneof(
    fc.constantFrom(
      '<wait>',
      '<wait5>',
      '<wait10s>',
      '<wait1m30s>',
      '<wait500ms>',
      '<waitx>',
      '<wait',
      '<wait5',
      '<enter>',
      '<ENTER>',
      '<enter',
      '<esc>',
      '<f12>',
      '<f13>',
      '<leftCtrlOn>',
      '<leftCtrlOff>',
      '<rightAlt>',
      '<leftShiftOnOff>',
      '<constructor>',
      '<toString>',
      '<waitFor "x" 5s>',
      '<waitFor "boot: ">',
      "<waitFor 'a\\'b'>",
      '<waitFor /login:\\s*$/m 2m>',
      '<waitFor /(/>',
      '<waitFor /a/gg>',
      '<waitFor "x" soon>',
      '<waitFor >',
      '<waitFor',
      '<waitFor "',
      '<waitFor /',
      '${build.http_ip}',
      '${',
      '${build.',
      '}',
      '$${',
      '<',
      '>',
      '<<',
      '<>',
      '< enter>',
      '<a b',
      '<foo=1>',
      ' ',
      '\\',
      '"',
      '/',
      '\n',
      '\t',
    ),
    fc.string({ maxLength: 6 }),
    fc.string({ unit: 'grapheme', maxLength: 4 }),
  );

  it(
    'parses or reports a column for random token sequences',
    () => {
      fc.assert(
        fc.property(fc.array(token, { maxLength: 12 }), (tokens) => {
          parse(tokens.join(''));
        }),
        settings(10000),
      );
    },
    fuzzTimeoutMs,
  );

  it(
    'parses or reports a column for random strings',
    () => {
      fc.assert(
        fc.property(
          fc.oneof(
            fc.string({ maxLength: 60 }),
            fc.string({ unit: 'binary', maxLength: 60 }),
            fc.string({ unit: fc.constantFrom(...'<>/"\' $\\{}waitFor5ms'), maxLength: 60 }),
          ),
          (line) => {
            parse(line);
          },
        ),
        settings(10000),
      );
    },
    fuzzTimeoutMs,
  );

  // No clock here (speed belongs in bench/): a parser that backtracks exponentially on these lines does
  // not finish at all, so the test's own timeout catches it.
  it('parses long and pathological lines (no catastrophic backtracking)', () => {
    for (const line of [
      '<'.repeat(20_000),
      '<wait'.repeat(5_000),
      '${'.repeat(10_000),
      `<waitFor /${'\\'.repeat(20_001)}`,
      'a'.repeat(50_000),
      `<waitFor "${'x'.repeat(50_000)}`,
      `<wait${'9'.repeat(5_000)}>`,
    ]) {
      parse(line); // a BootCommandError pointing inside the line, or nodes; anything else fails
    }
  });
});

// Found while fuzzing: names that exist on every JavaScript object were taken for declared ones.
describe('inherited object names are not variables or keys', () => {
  const tiny = (inline: string) =>
    YAML.stringify({
      ...(examples[0] as object),
      builds: [
        { ...(examples[0] as { builds: object[] }).builds[0], provisioners: [{ type: 'shell', inline: [inline] }] },
      ],
    });
  it('${var.constructor} is an undefined variable, not Object', () => {
    expect(() => loadTemplate((writeFileSync(templateFile, tiny('echo ${var.constructor}')), templateFile))).toThrow(
      /undefined variable "constructor"/,
    );
  });
  it('--var and KILN_VAR_ for a name only Object.prototype has are not declared', () => {
    writeFileSync(templateFile, tiny('echo hi'));
    expect(() => loadTemplate(templateFile, { vars: ['toString=x'] })).toThrow(/variable "toString" is not declared/);
    expect(loadTemplate(templateFile, { env: { KILN_VAR_constructor: 'x' } }).variables.values).not.toHaveProperty(
      'constructor',
      'x',
    );
  });
  it('<constructor> and <toStringOn> are unknown keys', () => {
    expect(() => parseBootCommand('<constructor>')).toThrow(/unknown key <constructor>/);
    expect(() => parseBootCommand('<toStringOn>')).toThrow(/unknown key <toStringOn>/);
  });
});
