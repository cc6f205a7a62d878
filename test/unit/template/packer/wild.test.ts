// Issue 25's template-language points, each with a minimal template in test/fixtures/packer/wild/ that
// failed (or was read wrongly) before and is read as Packer 1.6.6 reads it now. Each Packer behaviour was
// checked with Packer 1.6.6 (`packer validate`, `packer console`) on the same fixtures.
import path from 'node:path';
import { afterEach, beforeEach, describe, expect, it } from 'vitest';
import { repoRoot } from '../../../helpers/guest.js';
import { loadTemplate } from '../../../../src/template/load.js';
import { TemplateError } from '../../../../src/template/errors.js';
import { selectBuilds } from '../../../../src/build/build.js';
import { renderGoTemplate } from '../../../../src/template/packer/gotemplate.js';

const wild = path.join(repoRoot, 'test/fixtures/packer/wild');
const home = process.cwd();
// Packer resolves relative paths (output_directory) against the folder it runs in: run in the fixtures'.
beforeEach(() => process.chdir(wild));
afterEach(() => process.chdir(home));

const load = (
  file: string,
  o: { vars?: string[]; varFiles?: string[]; env?: NodeJS.ProcessEnv; only?: string[]; except?: string[] } = {},
) =>
  loadTemplate(
    file,
    { vars: o.vars ?? [], varFiles: o.varFiles ?? [], env: o.env ?? {} },
    { only: o.only, except: o.except },
  );
const errorOf = (f: () => unknown): Error => {
  try {
    f();
  } catch (e) {
    return e as Error;
  }
  throw new Error('expected an error');
};

describe('legacy JSON builder names with {{user}}', () => {
  it('are rendered: the build, {{build_name}}, -only, and only: as Packer matches it (the name as written)', () => {
    const t = load('builder-name.json');
    const b = t.template.builds[0]!;
    expect(b.name).toBe('ubuntu-20.04-amd64');
    expect(b.output_directory).toBe(path.join(wild, 'output-ubuntu-20.04-amd64'));
    expect(b.provisioners).toMatchObject([{ type: 'shell', inline: ['echo ubuntu-20.04-amd64'] }]);
    expect(JSON.stringify(b)).toContain('sha256');
    expect(
      selectBuilds(load('builder-name.json', { only: ['ubuntu-20.04-amd64'] }), ['ubuntu-20.04-amd64']).map(
        (x) => x.name,
      ),
    ).toEqual(['ubuntu-20.04-amd64']);
    expect(load('builder-name.json', { vars: ['version=22.04'] }).template.builds[0]!.name).toBe('ubuntu-22.04-amd64');
  });
  it('only: naming the rendered name fails at its line, as in Packer 1.6.6, with the name to write', () => {
    const e = errorOf(() => load('builder-name-pp-only.json'));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toMatch(
      /builder-name-pp-only\.json:17: provisioners\.0\.only: "ubuntu-20\.04-amd64" names no builder\n {2}fix: Packer 1\.6\.6 matches only against the builder's name as written: write "ubuntu-\{\{user `version`\}\}-amd64"/,
    );
    expect(e.message).toMatch(
      /builder-name-pp-only\.json:20: post-processors\.0\.only: "ubuntu-20\.04-amd64" names no builder/,
    );
  });
  it('-only/-except that match no build fail while loading (validate and inspect too), naming the builds', () => {
    expect(() => load('builder-name.json', { only: ['ubuntu-{{user `version`}}-amd64'] })).toThrow(
      /-only: no build matches "ubuntu-\{\{user `version`\}\}-amd64" \(builds: ubuntu-20\.04-amd64\)/,
    );
    expect(() => load('builder-name.json', { except: ['nope*'] })).toThrow(/-except: no build matches "nope\*"/);
    expect(() => load('builder-name.json', { except: ['ubuntu-*'] })).toThrow(/-except: leaves no build to run/);
  });
});

describe("Packer's placeholders in HCL strings", () => {
  it('{{build_name}}, {{build_type}}, {{ .Name }} (the vm_name), {{ .HTTPIP }}/{{ .HTTPPort }} render as in Packer', () => {
    const b = load('placeholders.pkr.hcl').template.builds[0]!;
    expect(b.output_directory).toBe(path.join(wild, 'output-focal'));
    expect(b.source.boot_command).toEqual(['<wait>http://${build.http_ip}:${build.http_port}/qemu-focal.qcow2<enter>']);
    expect(b.provisioners).toMatchObject([{ inline: ['echo built focal with qemu'] }]);
    expect(JSON.stringify(b.outputs)).toContain('"qemu-focal.qcow2"');
  });
  it('{{template_dir}} fails once, as Packer 1.6.6 fails ("template path not available"), naming ${path.root}', () => {
    const e = errorOf(() => load('template-dir.pkr.hcl'));
    expect(e.message).toMatch(
      /template-dir\.pkr\.hcl:9: qemu\.a: output_directory: \{\{ template_dir \}\} is not available in an HCL template[^\n]*\n {2}fix: write \$\{path\.root\} instead/,
    );
    expect(e.message.match(/template_dir/g)).toHaveLength(1);
  });
});

describe('{{user}} of a variable declared nowhere', () => {
  it('is "" outside the variables section, with one warning listing the names', () => {
    const t = load('unset-user.json');
    expect(t.template.builds[0]!.source.boot_command).toEqual(['<wait>', '', 'x']);
    const warnings = (t.notes ?? []).filter((n) => n.includes('set nowhere'));
    expect(warnings).toEqual([
      expect.stringMatching(
        /unset-user\.json: \{\{user\}\} of variables set nowhere, rendered as "" \(as Packer does\): boot_command_suffix \(line 12\), extra \(line 12\)/,
      ),
    ]);
    expect(
      load('unset-user.json', { vars: ['boot_command_suffix=<enter>', 'extra=y'] }).notes?.some((n) =>
        n.includes('set nowhere'),
      ),
    ).toBe(false);
  });
});

describe('{{env}} in a -var-file, replace and replace_all', () => {
  it("renders {{env}} in a -var-file value (and masks it, as an environment default is), and Packer's replace argument order", () => {
    const t = load('env-var-file.json', {
      varFiles: ['env-var-file.vars.json'],
      env: { KILN_WILD_TOKEN: 't0ken-from-env' },
    });
    const b = t.template.builds[0]!;
    expect(b.source.communicator).toMatchObject({ password: 't0ken-from-env' });
    expect(t.variables.secrets).toContain('t0ken-from-env');
    expect(b.output_directory).toBe(path.join(wild, 'output-20041'));
    expect(JSON.stringify(b.outputs)).toContain('"ubuntu-20-04.1.qcow2"');
  });
  it("evaluates as Packer 1.6.6's packer console does", () => {
    const ctx = { now: new Date(), user: { version: '20.04.1' } };
    expect(renderGoTemplate('{{ replace "." "-" 1 (user `version`) }}', ctx)).toBe('20-04.1');
    expect(renderGoTemplate('{{ user `version` | replace "." "-" -1 }}', ctx)).toBe('20-04-1');
    expect(renderGoTemplate('{{ replace_all "." "" (user `version`) }}', ctx)).toBe('20041');
    expect(renderGoTemplate('{{ split (user `version`) "." 1 }}', ctx)).toBe('04');
    expect(renderGoTemplate('{{ replace "" "-" -1 `ab` }}', ctx)).toBe('-a-b-');
    expect(() => renderGoTemplate('{{ replace "a" "b" (user `version`) }}', ctx)).toThrow(
      /\{\{ replace \}\} takes 4 arguments/,
    );
  });
});

describe('every problem in one run, each at its own file:line', () => {
  it('a required variable, a var-file value, an unknown function and a refused field, together', () => {
    const e = errorOf(() => load('many-problems.json', { varFiles: ['many-problems.vars.json'] }));
    expect(e).toBeInstanceOf(TemplateError);
    expect(e.message).toMatch(/many-problems\.json:3: variables\.iso: required variable not set/);
    expect(e.message).toMatch(
      /many-problems\.json:17: provisioners\.0\.inline\.0: kiln does not know the template function "sed"/,
    );
    expect(e.message).toMatch(
      /many-problems\.json:12: qemu: cpus: expected a number, got "many" \(the value comes from \{\{user `cpus`\}\} at [^\n]*many-problems\.vars\.json:2\)/,
    );
    expect(e.message).toMatch(/many-problems\.json:13: qemu: use_tpm1: kiln has no equivalent/);
    // iso_url reads the unset variable: its emptiness is a consequence, not news.
    expect(e.message).not.toMatch(/iso_url/);
  });
  it("a wrong value in a JSON -var-file of an HCL template is named at the var file's line", () => {
    expect(() => load('var-file-line.pkr.hcl', { varFiles: ['var-file-line.vars.json'] })).toThrow(
      /var-file-line\.vars\.json:3: .*variable "cpus" must be a number, but the value is "many"/,
    );
    // A var file's undeclared variable is a warning in Packer 1.6.6 ("Undefined variable"), a -var's an error.
    const t = load('var-file-line.pkr.hcl', { varFiles: ['env-var-file.vars.json'], vars: ['cpus=2'] });
    expect(t.notes).toContainEqual(
      expect.stringMatching(
        /env-var-file\.vars\.json:2: token: ignored: the template declares no variable "token" \(Packer warns too\)/,
      ),
    );
    expect(() => load('var-file-line.pkr.hcl', { vars: ['cpus=2', 'nope=1'] })).toThrow(
      /-var nope: there is no variable "nope"/,
    );
  });
  it("a value computed in a local names the local's line", () => {
    expect(() => load('local-problem.pkr.hcl')).toThrow(
      /local-problem\.pkr\.hcl:13: qemu\.a: cpus: expected a number, got "many" \(the value comes from local\.cpus at [^\n]*local-problem\.pkr\.hcl:4\)/,
    );
  });
});

describe("$${...}, HCL's escape for a literal ${...}", () => {
  it("reaches the guest as the text ${var.pw}, not the variable's value", () => {
    const t = load('escape.pkr.hcl');
    expect(t.template.builds[0]!.provisioners).toMatchObject([
      { inline: ["echo '${var.pw}' '${HOME}' > /root/literal"] },
    ]);
  });
});

describe("kiln's own checks on a Packer template", () => {
  it('a kiln field with no Packer field of its own (builds[0].outputs[2]) is named by its Packer build and source line', async () => {
    const { packerLines, readPackerTemplate } = await import('../../../../src/template/packer/index.js');
    const p = readPackerTemplate('builder-name.json', { env: {} });
    const [problem] = packerLines(
      p.mapped,
      p.template.file,
      p.template,
    )([{ path: ['builds', 0, 'outputs', 2], message: 'two outputs write the same file' }]);
    expect(problem).toMatchObject({
      line: 5,
      message: 'two outputs write the same file (Packer: build ubuntu-20.04-amd64)',
    });
  });
});
