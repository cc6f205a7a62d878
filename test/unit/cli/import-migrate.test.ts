// kiln import is a migration, not a render (issue 25). Before: every required variable needed a value,
// the values were written into the YAML (variables and locals gone), there was no -only, errors named
// a temporary file, and Packer's $${var.pw} (a literal) became kiln's ${var.pw}, an interpolation
// that wrote the secret into a guest file.
import { mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { interpolateString } from '../../../src/template/interpolate.js';
import { importTemplate } from '../../../src/cli/import.js';
import { escapeOwnSyntax } from '../../../src/template/packer/import-secrets.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-import-migrate-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
writeFileSync(path.join(dir, 'key'), 'k');
const fixture = path.resolve('test/fixtures/packer/import/tiny-vars.pkr.hcl');
function write(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}
/** The builds as kiln runs them, paths normalised (a Packer template keeps "a/../b" as written). */
const builds = (file: string, vars: string[], only?: string[]) =>
  JSON.parse(
    JSON.stringify(loadTemplate(file, { vars, env: {} }, { only }).template.builds, (_k, v: unknown) =>
      typeof v === 'string' && v.startsWith('/') ? path.normalize(v) : v,
    ),
  ) as unknown[];

describe('escapeOwnSyntax', () => {
  it("writes a literal ${var.x} as kiln's escape $${var.x}, which kiln reads back as the literal", () => {
    const escaped = escapeOwnSyntax("echo '${var.pw}' and ${ var.x } but not ${build.name} or ${HOME}") as string;
    expect(escaped).toBe("echo '$${var.pw}' and $${ var.x } but not ${build.name} or ${HOME}");
    expect(interpolateString(escaped, { var: { pw: 'SECRET', x: 'X' } }, () => {}, 'var')).toBe(
      "echo '${var.pw}' and ${ var.x } but not ${build.name} or ${HOME}",
    );
    // Already "$${": one more "$" keeps the text as it was.
    expect(interpolateString(escapeOwnSyntax('$${var.pw}') as string, { var: { pw: 'SECRET' } }, () => {}, 'var')).toBe(
      '$${var.pw}',
    );
  });
});

describe('kiln import keeps variables', () => {
  it('needs no value for required variables; writes them with type, default, description and the validation', () => {
    const r = importTemplate({ template: fixture, inputs: { env: {} } });
    expect(r.yaml).toMatch(/ {2}image:\n {4}type: string\n {4}description: the disk image to start from\n/);
    expect(r.yaml).toMatch(
      / {2}marker:\n {4}type: string\n {4}description: 'written into \/root\/marker\. Packer checks: length\(var\.marker\) > 3 \("The marker must be longer than 3 characters\."\)/,
    );
    expect(r.yaml).toMatch(/ {2}memory:\n {4}type: number\n {4}default: 256\n/);
    expect(r.yaml).toMatch(/ {2}greeting:\n {4}type: string\n {4}default: hello\n/);
    expect(r.yaml).toMatch(/ {2}verbose:\n {4}type: bool\n {4}default: false\n/);
    expect(r.yaml).toMatch(/ {2}password:\n {4}type: string\n {4}sensitive: true\n/);
    // Expressions kept as kiln references; locals through them; a function's result with a comment.
    expect(r.yaml).toContain('base_image: ${var.image} # iso_url (tiny-vars.pkr.hcl:');
    expect(r.yaml).toContain('memory: ${var.memory} # memory');
    expect(r.yaml).toContain('output_directory: output-${var.marker}');
    expect(r.yaml).toContain('name: tiny-${var.marker}.qcow2');
    expect(r.yaml).toContain("- echo '${var.greeting} from ${var.marker}' > /root/marker");
    expect(r.yaml).toMatch(/- echo 'HELLO' > \/root\/shout # computed by a Packer function from variables/);
    expect(r.yaml).toMatch(/memory: 512 # memory \(tiny-vars\.pkr\.hcl:\d+\); computed by a Packer function/);
    expect(r.yaml).toMatch(
      /private_key_file: \S+ # ssh_private_key_file \(tiny-vars\.pkr\.hcl:\d+\), from local\.fixtures/,
    );
    expect(r.yaml).toContain('PASSWORD: ${var.password}');
    // Packer's $${var.password} is a literal: kiln's escape, never a reference to the secret.
    expect(r.yaml).toContain("- echo '$${var.password}' > /root/literal");
  });

  it('with the same --vars, the YAML is the build the Packer template is', () => {
    const out = path.join(dir, 'tiny.yaml');
    importTemplate({ template: fixture, output: out, inputs: { env: {} } });
    for (const vars of [
      [`image=${dir}/base.qcow2`, 'marker=mark', 'password=pw-1234'],
      [`image=${dir}/base.qcow2`, 'marker=other', 'password=pw-5678', 'memory=300', 'greeting=hi', 'verbose=true'],
    ]) {
      // memory * 2, upper() and the bool in a string were computed at import: given other values, those
      // fields keep the import's (as their comments say); everything else follows the variables.
      const yaml = builds(out, vars) as {
        provisioners: { inline: string[]; env: Record<string, string> }[];
        source: { memory: number };
      }[];
      const packer = builds(fixture, vars) as typeof yaml;
      if (vars.length === 3) expect(yaml).toEqual(packer);
      else {
        expect(yaml[0]!.provisioners[0]!.inline[0]).toBe("echo 'hi from other' > /root/marker");
        expect(yaml[0]!.provisioners[0]!.inline[2]).toBe("echo '${var.password}' > /root/literal");
        expect(yaml[0]!.source.memory).toBe(300);
        expect(yaml[1]!.source.memory).toBe(512);
      }
    }
  });

  it('-only and -except pick builds; a name or glob that matches none fails', () => {
    expect(importTemplate({ template: fixture, only: ['*.tiny'], inputs: { env: {} } }).yaml).not.toContain('qemu.big');
    const except = importTemplate({ template: fixture, except: ['qemu.tiny'], inputs: { env: {} } }).yaml;
    expect(except).toContain('name: qemu.big');
    expect(except).not.toContain('name: qemu.tiny');
    expect(() => importTemplate({ template: fixture, only: ['qemu.nope'], inputs: { env: {} } })).toThrow(
      /-only=qemu\.nope matches no build\n {2}fix: the template's builds: qemu\.tiny, qemu\.big/,
    );
    expect(() =>
      importTemplate({ template: fixture, only: ['qemu.tiny'], except: ['*'], inputs: { env: {} } }),
    ).toThrow(/leave no build/);
  });

  it('a problem kiln finds names the Packer file and line, never a temporary file, and nothing is written', () => {
    const f = write(
      'nokey.pkr.hcl',
      `variable "img" { type = string }
source "qemu" "a" {
  iso_url      = var.img
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
}
build { sources = ["source.qemu.a"] }
`,
    );
    let message = '';
    try {
      importTemplate({ template: f, output: path.join(dir, 'nokey.yaml'), inputs: { env: {} } });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(
      new RegExp(
        `^${f.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}:2: .*cloud_init: without cloud-init kiln cannot give the guest its build key`,
      ),
    );
    expect(message).not.toContain('.kiln-import-');
    expect(readdirSync(dir).filter((n) => n.startsWith('nokey.yaml'))).toEqual([]);
  });

  it('a function of a variable without a value cannot be written: the error says which field and what to give', () => {
    const f = write(
      'fn.pkr.hcl',
      `variable "name" { type = string }
source "qemu" "a" {
  iso_url              = "${dir}/base.qcow2"
  iso_checksum         = "none"
  disk_image           = true
  ssh_username         = "root"
  ssh_private_key_file = "${dir}/key"
  vm_name              = upper(var.name)
}
build { sources = ["source.qemu.a"] }
`,
    );
    expect(() => importTemplate({ template: f, inputs: { env: {} } })).toThrow(
      /fn\.pkr\.hcl:8: .*: this value is computed by Packer functions from variables that have no value[\s\S]*fix: give kiln import the variables it reads/,
    );
    // Given, it is written as Packer's value and the variable stays a kiln variable.
    const r = importTemplate({ template: f, inputs: { env: {}, vars: ['name=web'] } });
    expect(r.yaml).toMatch(/name: WEB # computed by a Packer function/);
    expect(r.yaml).toMatch(/ {2}name:\n {4}type: string\n/);
  });

  it("a variable that decides the template's shape is written as its value, and said so", () => {
    const f = write(
      'shape.pkr.hcl',
      `variable "image" {
  type    = bool
  default = true
}
source "qemu" "a" {
  iso_url              = "${dir}/base.qcow2"
  iso_checksum         = "none"
  disk_image           = var.image
  ssh_username         = "root"
  ssh_private_key_file = "${dir}/key"
}
build { sources = ["source.qemu.a"] }
`,
    );
    const r = importTemplate({ template: f, inputs: { env: {} } });
    expect(r.yaml).toMatch(/image = true \(it decides the template's shape/);
    expect(r.yaml).toContain('base_image: ');
    expect(r.yaml).not.toMatch(/^ {2}image:/m);
  });

  it('a validation that refuses the stand-in text is met with another (lower-case letters), and the variable stays', () => {
    const f = write(
      'valid.pkr.hcl',
      `variable "hostname" {
  type = string
  validation {
    condition     = lower(var.hostname) == var.hostname
    error_message = "Lower-case letters only."
  }
}
source "qemu" "a" {
  iso_url              = "${dir}/base.qcow2"
  iso_checksum         = "none"
  disk_image           = true
  ssh_username         = "root"
  ssh_private_key_file = "${dir}/key"
}
build {
  sources = ["source.qemu.a"]
  provisioner "shell" { inline = ["hostname \${var.hostname}"] }
}
`,
    );
    const r = importTemplate({ template: f, inputs: { env: {} } });
    expect(r.yaml).toContain('- hostname ${var.hostname}');
    expect(r.yaml).toMatch(
      / {2}hostname:\n {4}type: string\n {4}description: 'Packer checks: lower\(var\.hostname\) == var\.hostname \("Lower-case letters only\."\)/,
    );
  });

  it('legacy JSON: user variables kept, a null default required, {{user `x`}} in a default is ${var.x}', () => {
    const f = write(
      'legacy.json',
      JSON.stringify(
        {
          variables: { image: null, name: 'web', full: '{{user `name`}}-1', cpus: '2' },
          builders: [
            {
              type: 'qemu',
              iso_url: '{{user `image`}}',
              iso_checksum: 'none',
              disk_image: true,
              ssh_username: 'root',
              ssh_private_key_file: `${dir}/key`,
              vm_name: '{{user `full`}}.qcow2',
              cpus: '{{user `cpus`}}',
            },
          ],
          provisioners: [{ type: 'shell', inline: ['echo {{user `name`}} > /etc/name'] }],
        },
        null,
        2,
      ),
    );
    const r = importTemplate({ template: f, inputs: { env: {} } });
    expect(r.yaml).toMatch(/ {2}image:\n {4}type: string\n {2}name:/);
    expect(r.yaml).toMatch(/ {2}full:\n {4}type: string\n {4}default: \$\{var\.name\}-1\n/);
    // A string that Packer reads as a number is a kiln number variable.
    expect(r.yaml).toMatch(/ {2}cpus:\n {4}type: number\n {4}default: 2\n/);
    expect(r.yaml).toContain('base_image: ${var.image}');
    expect(r.yaml).toContain('cpus: ${var.cpus}');
    expect(r.yaml).toContain('echo ${var.name} > /etc/name');
    expect(r.yaml).toContain('name: ${var.full}.qcow2');
  });
});
