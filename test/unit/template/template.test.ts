import { mkdtempSync, rmSync, writeFileSync, readdirSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import { VariableError } from '../../../src/template/variables.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-template-test-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'not really an image');
writeFileSync(path.join(dir, 'setup.sh'), 'echo hi\n');

function write(name: string, text: string): string {
  const file = path.join(dir, name);
  writeFileSync(file, text);
  return file;
}

const good = `
variables:
  user: { default: debian }
  cpus: { type: number, default: 2 }
  secret: { default: hunter22, sensitive: true }
builds:
  - name: one
    source:
      base_image: base.qcow2
      checksum: none
      cpus: \${var.cpus}
      communicator: { username: '\${var.user}' }
    provisioners:
      - type: shell
        script: setup.sh
      - type: shell
        inline: ['echo \${var.secret} \${build.http_ip} \${HOME}']
`;

function problemText(fn: () => unknown): string {
  try {
    fn();
  } catch (e) {
    if (e instanceof TemplateError || e instanceof VariableError) return e.message;
    throw e;
  }
  throw new Error('expected a template error');
}

describe('loadTemplate', () => {
  it('loads, applies defaults and resolves variables with their types', () => {
    const t = loadTemplate(write('good.yaml', good));
    const b = t.template.builds[0]!;
    expect(b.source.cpus).toBe(2);
    expect(b.source.communicator).toMatchObject({ type: 'ssh', username: 'debian', port: 22 });
    expect(b.source.cloud_init).toMatchObject({ enabled: true });
    // Unset: kiln resolves it per host at the seed step (src/cloudinit/delivery.ts).
    expect(b.source.cloud_init).not.toHaveProperty('delivery');
    expect(b.source.base_image).toBe(path.join(dir, 'base.qcow2'));
    expect(b.output_directory).toBe(path.join(dir, 'output', 'one'));
    expect(b.outputs).toEqual([{ format: 'qcow2', compress: false }]);
    const inline = b.provisioners[1];
    expect(inline?.type === 'shell' && inline.inline?.[0]).toBe('echo hunter22 ${build.http_ip} ${HOME}');
    expect(t.variables.secrets).toEqual(['hunter22']);
    expect(t.digest).toMatch(/^[0-9a-f]{64}$/);
  });

  it('applies --var over KILN_VAR_ over --var-file over defaults', () => {
    const varFile = write('vars.yaml', 'user: fromfile\ncpus: 3\n');
    const file = write('prec.yaml', good);
    let t = loadTemplate(file, { varFiles: [varFile] });
    expect(t.template.builds[0]!.source.cpus).toBe(3);
    t = loadTemplate(file, { varFiles: [varFile], env: { KILN_VAR_cpus: '5' } });
    expect(t.template.builds[0]!.source.cpus).toBe(5);
    t = loadTemplate(file, { varFiles: [varFile], env: { KILN_VAR_cpus: '5' }, vars: ['cpus=6', 'user=cli'] });
    expect(t.template.builds[0]!.source.cpus).toBe(6);
    expect(t.template.builds[0]!.source.communicator).toMatchObject({ username: 'cli' });
    expect(t.variables.origin.cpus).toBe('--var cpus');
  });

  it('accepts JSON templates', () => {
    const t = loadTemplate(
      write(
        't.json',
        JSON.stringify({ builds: [{ name: 'j', source: { base_image: 'base.qcow2', checksum: 'none' } }] }),
      ),
    );
    expect(t.template.builds[0]!.name).toBe('j');
  });

  const cases: [string, string, RegExp[]][] = [
    [
      'misspelt key gets a suggestion',
      good.replace('checksum: none', 'checksum: none\n      memroy: 512'),
      [/bad-1\.yaml:\d+: builds\[0\]\.source\.memroy: unknown key "memroy"/, /fix: did you mean "memory"\?/],
    ],
    [
      'wrong type names expected and got',
      good.replace('cpus: ${var.cpus}', 'cpus: lots'),
      [/builds\[0\]\.source\.cpus: expected number, got string "lots"/],
    ],
    [
      'enum typo suggests the value',
      good.replace('checksum: none', 'checksum: none\n      firmware: uefl'),
      [/source\.firmware: "uefl" is not allowed/, /did you mean "uefi"/],
    ],
    [
      'undefined variable',
      good.replace('${var.user}', '${var.usr}'),
      [/undefined variable "usr"/, /fix: declare "usr"/],
    ],
    [
      'missing file',
      good.replace('script: setup.sh', 'script: nope.sh'),
      [/provisioners\[0\]\.script: .*nope\.sh does not exist/],
    ],
    [
      'missing required field',
      good.replace('      checksum: none\n', ''),
      [/builds\[0\]\.source\.checksum: required field is missing/, /fix: add "checksum"/],
    ],
    [
      'bad checksum format',
      good.replace('checksum: none', 'checksum: md5:abc'),
      [/checksum must be "sha256:<64 hex>"/],
    ],
    [
      'YAML syntax error has a line',
      'builds:\n  - name: x\n   source: [\n',
      [/bad-8\.yaml:\d+: \(top level\): syntax error/],
    ],
    [
      'shell needs exactly one body',
      good.replace('script: setup.sh', 'script: setup.sh\n        inline: [x]'),
      [/exactly one of "inline", "script" or "scripts"/],
    ],
    [
      'unknown build value',
      good.replace('${build.http_ip}', '${build.http_addr}'),
      [/unknown build value \$\{build\.http_addr\}/],
    ],
    [
      'duplicate build names',
      good + '  - name: one\n    source: { base_image: base.qcow2, checksum: none }\n',
      [/build name "one" is used twice/],
    ],
  ];
  cases.forEach(([title, text, patterns], i) => {
    it(`reports: ${title}`, () => {
      const file = write(`bad-${i + 1}.yaml`, text);
      const before = readdirSync(dir).length;
      const msg = problemText(() => loadTemplate(file));
      for (const p of patterns) expect(msg).toMatch(p);
      expect(readdirSync(dir).length).toBe(before); // nothing created (the output dir least of all)
    });
  });

  it('reports a variable without value', () => {
    const msg = problemText(() =>
      loadTemplate(write('novalue.yaml', good.replace('user: { default: debian }', 'user: {}'))),
    );
    expect(msg).toMatch(/variable "user" has no default and no value was given/);
    expect(msg).toMatch(/--var user=/);
  });
  it('reports an undeclared --var with a suggestion', () => {
    expect(problemText(() => loadTemplate(write('g2.yaml', good), { vars: ['usr=x'] }))).toMatch(/did you mean "user"/);
  });
  it('reports a mistyped --var', () => {
    expect(problemText(() => loadTemplate(write('g3.yaml', good), { vars: ['cpus=many'] }))).toMatch(
      /"many" is not a number/,
    );
  });
  it('reports a missing template file', () => {
    expect(problemText(() => loadTemplate(path.join(dir, 'absent.yaml')))).toMatch(
      /absent\.yaml: \(top level\): template file not found/,
    );
  });
});
