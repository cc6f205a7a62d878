// A variable's value may refer to other variables: `${var.other}` in a default (or a --var-file,
// KILN_VAR_ or --var value) is filled in at load time, types kept, escapes kept, loops refused with
// their chain. Before, such a default reached the guest as the literal text "${var.other}".
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import { interpolateString } from '../../../src/template/interpolate.js';
import { VariableError, type VariableInputs } from '../../../src/template/variables.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-validate-vars-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
let n = 0;

/** A template with these variable lines, whose one shell line and CPU count use them. */
function template(variables: string, inline = 'echo ${var.greeting}', cpus = '2'): string {
  const file = path.join(dir, `t${++n}.yaml`);
  writeFileSync(
    file,
    `variables:\n${variables}builds:\n  - name: v\n    source:\n      base_image: base.qcow2\n      checksum: none\n      cpus: ${cpus}\n    provisioners:\n      - type: shell\n        inline: ['${inline}']\n`,
  );
  return file;
}

const load = (file: string, inputs: VariableInputs = {}) => {
  const b = loadTemplate(file, inputs).template.builds[0]!;
  const p = b.provisioners[0]!;
  return { cpus: b.source.cpus, line: p.type === 'shell' ? p.inline![0] : undefined };
};

function problem(fn: () => unknown): { message: string; kind: string } {
  try {
    fn();
  } catch (e) {
    if (e instanceof TemplateError || e instanceof VariableError) return { message: e.message, kind: e.name };
    throw e;
  }
  throw new Error('expected an error');
}

describe('variables referring to variables', () => {
  it('fills ${var.*} in defaults, whatever order the variables are declared in', () => {
    const file = template(
      "  greeting: { default: 'hello ${var.user} on ${var.host}' }\n  user: { default: debian }\n  host: { default: '${var.user}-box' }\n",
    );
    expect(load(file).line).toBe('echo hello debian on debian-box');
  });

  it("uses the referred variable's final value: a --var, KILN_VAR_ or --var-file value reaches defaults that use it", () => {
    const file = template("  greeting: { default: 'hello ${var.user}' }\n  user: { default: debian }\n");
    expect(load(file, { vars: ['user=alice'] }).line).toBe('echo hello alice');
    expect(load(file, { env: { KILN_VAR_user: 'bob' } }).line).toBe('echo hello bob');
    const varFile = path.join(dir, 'vars.yaml');
    writeFileSync(varFile, "greeting: 'bye ${var.user}'\n");
    expect(load(file, { varFiles: [varFile], vars: ['user=carol'] }).line).toBe('echo bye carol');
    expect(load(file, { vars: ['greeting=hi ${var.user}'] }).line).toBe('echo hi debian');
  });

  it('keeps types: a number variable defaulting to another number variable is a number', () => {
    const file = template(
      "  base: { type: number, default: 2 }\n  cpus: { type: number, default: '${var.base}' }\n  wide: { type: number, default: '${var.base}0' }\n  greeting: { default: '${var.wide}' }\n",
      'echo ${var.greeting}',
      '${var.cpus}',
    );
    const loaded = loadTemplate(file);
    expect(loaded.template.builds[0]!.source.cpus).toBe(2);
    expect(loaded.variables.values).toMatchObject({ base: 2, cpus: 2, wide: 20, greeting: '20' });
  });

  it('keeps $${ escapes: a literal ${var.x} or ${build.x} reaches the guest as written', () => {
    const file = template(
      "  greeting: { default: '$${var.user} $${build.name} ${build.name} ${var.user}' }\n  user: { default: debian }\n",
    );
    const line = load(file).line!;
    // ${build.*} is filled in while the build runs; the escaped one must then stay literal.
    expect(String(interpolateString(line, { build: { name: 'v' } }))).toBe('echo ${var.user} ${build.name} v debian');
  });

  it('masks a secret inside a value built from it', () => {
    const file = template(
      "  token: { default: s3cr3t-token, sensitive: true }\n  greeting: { default: 'auth ${var.token}' }\n",
    );
    const loaded = loadTemplate(file);
    expect(loaded.variables.values.greeting).toBe('auth s3cr3t-token');
    expect(loaded.variables.secrets).toContain('s3cr3t-token');
  });

  it('refuses a loop, naming the chain and the line of the default that starts it', () => {
    const file = template(
      "  greeting: { default: '${var.a}' }\n  a: { default: 'x ${var.b}' }\n  b: { default: '${var.c}' }\n  c: { default: '${var.a}' }\n",
    );
    const { message, kind } = problem(() => loadTemplate(file));
    expect(kind).toBe('TemplateError');
    expect(message).toContain(
      `${file}:3: variables.a.default: variables refer to each other in a loop: a -> b -> c -> a`,
    );
    expect(message).toContain('fix: give one of them a value that does not refer back');
    const self = template("  greeting: { default: 'x${var.greeting}' }\n");
    expect(problem(() => loadTemplate(self)).message).toContain('loop: greeting -> greeting');
  });

  it('blames a --var that closes a loop, not the template', () => {
    const file = template("  greeting: { default: '${var.user}' }\n  user: { default: debian }\n");
    const { message, kind } = problem(() => loadTemplate(file, { vars: ['user=${var.greeting}'] }));
    expect(kind).toBe('VariableError');
    expect(message).toContain(
      '--var user: variables.user: variables refer to each other in a loop: user -> greeting -> user',
    );
  });

  it('refuses a reference to an undeclared variable, with a suggestion', () => {
    const file = template("  greeting: { default: 'hello ${var.usr}' }\n  user: { default: debian }\n");
    const { message } = problem(() => loadTemplate(file));
    expect(message).toContain(`${file}:2: variables.greeting.default: undefined variable "usr"`);
    expect(message).toContain(
      'fix: declare "usr" under "variables:" or fix the reference ${var.usr} (did you mean ${var.user}?)',
    );
    expect(problem(() => loadTemplate(file, { vars: ['greeting=${var.nope}'] })).message).toContain(
      '--var greeting: variables.greeting: undefined variable "nope"',
    );
  });

  it("checks the filled-in value against the variable's type", () => {
    const file = template(
      "  greeting: { default: hi }\n  name: { default: debian }\n  cpus: { type: number, default: '${var.name}' }\n",
    );
    expect(problem(() => loadTemplate(file)).message).toContain('variables.cpus.default: "debian" is not a number');
  });
});
