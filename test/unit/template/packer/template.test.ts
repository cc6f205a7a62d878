// Packer templates through kiln's loader: variables from every source Packer reads, and every field kiln
// cannot honour refused with file:line, the Packer field and the fix (or noted in one line if cosmetic).
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../../src/template/load.js';
import { TemplateError } from '../../../../src/template/errors.js';
import { importTemplate } from '../../../../src/cli/import.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-packer-unit-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');

const source = (extra = '') => `
source "qemu" "a" {
  iso_url      = "${dir}/base.qcow2"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_password = var.password
${extra}
}
`;
const vars = `
variable "password" {
  type      = string
  default   = "pa55word"
  sensitive = true
}
variable "cpus" {
  type    = number
  default = 1
  validation {
    condition     = var.cpus < 8
    error_message = "At most 7 vCPUs."
  }
}
`;
function write(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}
const load = (file: string, inputs: Parameters<typeof loadTemplate>[1] = {}) =>
  loadTemplate(file, { env: {}, ...inputs });

describe('Packer templates in kiln', () => {
  it("reads variables from defaults, -var-file (.pkrvars.hcl), PKR_VAR_ and -var, in Packer's order", () => {
    const f = write('v.pkr.hcl', vars + source('  cpus = var.cpus') + 'build {\n  sources = ["source.qemu.a"]\n}\n');
    expect(load(f).template.builds[0]!.source.cpus).toBe(1);
    const vf = write('v.pkrvars.hcl', 'cpus = 2\n');
    expect(load(f, { varFiles: [vf] }).template.builds[0]!.source.cpus).toBe(2);
    expect(load(f, { varFiles: [vf], env: { PKR_VAR_cpus: '3' } }).template.builds[0]!.source.cpus).toBe(2);
    expect(load(f, { env: { PKR_VAR_cpus: '3' } }).template.builds[0]!.source.cpus).toBe(3);
    expect(load(f, { varFiles: [vf], vars: ['cpus=4'] }).template.builds[0]!.source.cpus).toBe(4);
    const t = load(f);
    expect(t.variables.secrets).toContain('pa55word');
    expect(() => load(f, { vars: ['cpus=9'] })).toThrow(
      /v\.pkr\.hcl:\d+: variable "cpus": invalid value \(from -var cpus\): At most 7 vCPUs\./,
    );
    expect(() => load(f, { vars: ['cpu=2'] })).toThrow(/-var cpu: there is no variable "cpu"/);
    expect(() => load(f, { vars: ['cpus=many'] })).toThrow(/variable "cpus" is a number/);
  });

  it('keeps provisioners in written order, applying only/except', () => {
    const f = write(
      'order.pkr.hcl',
      vars +
        source() +
        `
build {
  sources = ["source.qemu.a"]
  provisioner "shell" { inline = ["one"] }
  provisioner "file" {
    source      = "${dir}/base.qcow2"
    destination = "/tmp/x"
  }
  provisioner "shell" {
    only   = ["qemu.b"]
    inline = ["skipped"]
  }
  provisioner "shell-local" { inline = ["three"] }
  provisioner "shell" {
    inline = ["four"]
    except = ["qemu.b"]
  }
}
`,
    );
    expect(load(f).template.builds[0]!.provisioners.map((p) => p.type)).toEqual([
      'shell',
      'file',
      'shell-local',
      'shell',
    ]);
  });

  it('refuses what kiln cannot honour, naming file:line, the field and the fix; notes cosmetic fields', () => {
    const f = write(
      'bad.pkr.hcl',
      vars +
        source('  use_tpm1 = true\n  nonsense = 1\n  vnc_port_min = 5900') +
        'build {\n  sources = ["source.qemu.a"]\n  post-processor "docker-push" {}\n}\n',
    );
    let err: unknown;
    try {
      load(f);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(TemplateError);
    const msg = (err as Error).message;
    expect(msg).toMatch(
      /bad\.pkr\.hcl:\d+: qemu\.a: use_tpm1: kiln has no equivalent of this qemu builder field\n  fix: remove it/,
    );
    expect(msg).toMatch(/bad\.pkr\.hcl:\d+: qemu\.a: nonsense: kiln does not know the qemu builder field "nonsense"/);
    expect(msg).toMatch(/kiln has no "docker-push" post-processor/);
    expect(msg).not.toMatch(/vnc_port_min/);
    const ok = write(
      'cosmetic.pkr.hcl',
      vars + source('  vnc_port_min = 5900') + 'build {\n  sources = ["source.qemu.a"]\n}\n',
    );
    expect(load(ok).notes).toEqual([
      expect.stringMatching(/cosmetic\.pkr\.hcl:\d+: vnc_port_min: ignored: kiln starts no VNC server/),
    ]);
    // md5/sha1 are verified (issue 25, test/unit/template/packer/fields.test.ts); an unknown kind is still refused.
    const md5 = write(
      'md5.pkr.hcl',
      vars + source().replace('"none"', '"crc32:01234567"') + 'build {\n  sources = ["source.qemu.a"]\n}\n',
    );
    expect(() => load(md5)).toThrow(/iso_checksum: kiln verifies images with sha256, sha512, sha1 or md5, not crc32/);
    const syntax = write('syntax.pkr.hcl', 'source "qemu" "a" {\n  cpus = \n}\n');
    expect(() => load(syntax)).toThrow(
      /syntax\.pkr\.hcl:2: .*expected a value, found the end of the line \(column 10\)/,
    );
  });

  it('refuses other builders unless -only picks the QEMU ones', () => {
    const f = write(
      'mixed.pkr.hcl',
      vars +
        source() +
        'source "amazon-ebs" "b" {\n  ami_name = "x"\n}\nbuild {\n  sources = ["source.qemu.a", "source.amazon-ebs.b"]\n}\n',
    );
    expect(() => load(f)).toThrow(
      /mixed\.pkr\.hcl:\d+: amazon-ebs\.b: kiln builds with QEMU only; the "amazon-ebs" builder is not supported\n  fix: build the QEMU sources only: -only=qemu\.a/,
    );
    expect(loadTemplate(f, { env: {} }, { only: ['qemu.a'] }).template.builds.map((b) => b.name)).toEqual(['qemu.a']);
  });

  it('reads legacy JSON: {{user}}, sensitive-variables, {{ .HTTPIP }}, {{ .Vars }} in execute_command', () => {
    const f = write(
      'legacy.json',
      JSON.stringify({
        variables: { pw: 'secret-pw', ip_note: '{{env `KILN_TEST_UNSET_X`}}' },
        'sensitive-variables': ['pw'],
        builders: [
          {
            type: 'qemu',
            iso_url: `${dir}/base.qcow2`,
            iso_checksum: 'none',
            disk_image: true,
            ssh_username: 'root',
            ssh_password: '{{user `pw`}}',
            boot_command: ['<wait>{{ .HTTPIP }}:{{ .HTTPPort }}<enter>'],
          },
        ],
        provisioners: [{ type: 'shell', inline: ['true'], execute_command: 'sudo {{ .Vars }} sh {{ .Path }}' }],
      }),
    );
    const t = load(f);
    const b = t.template.builds[0]!;
    expect(b.name).toBe('qemu');
    expect(b.source.communicator).toMatchObject({ type: 'ssh', password: 'secret-pw' });
    expect(b.source.boot_command).toEqual(['<wait>${build.http_ip}:${build.http_port}<enter>']);
    expect(b.provisioners[0]).toMatchObject({ type: 'shell', execute_command: 'sudo {{vars}} sh {{path}}' });
    expect(t.variables.secrets).toContain('secret-pw');
    // A {{user}} of a name set nowhere is "" outside the variables section (Packer 1.6.6), an error inside it.
    const bad = write(
      'legacy-bad.json',
      JSON.stringify(
        {
          variables: { a: '{{user `nope`}}' },
          builders: [{ type: 'qemu', iso_url: 'x', iso_checksum: 'none', ssh_username: '{{user `a`}}' }],
        },
        null,
        2,
      ),
    );
    expect(() => load(bad)).toThrow(
      /legacy-bad\.json:\d+: variables\.a: \{\{user `nope`\}\}: there is no variable "nope"/,
    );
  });

  it('kiln import: YAML kiln loads, with origins as comments and no sensitive value in it', () => {
    const f = write(
      'imp.pkr.hcl',
      vars +
        source('  cpus = var.cpus') +
        'build {\n  sources = ["source.qemu.a"]\n  provisioner "shell" { inline = ["echo ${var.password}"] }\n}\n',
    );
    const out = path.join(dir, 'imp.yaml');
    const r = importTemplate({ template: f, output: out, inputs: { env: {} } });
    expect(r.yaml).toMatch(/cpus: 1 # cpus \(imp\.pkr\.hcl:\d+\)/);
    expect(r.yaml).not.toContain('pa55word');
    expect(r.yaml).toContain('echo ${var.password}');
    const t = loadTemplate(out, { vars: ['password=pa55word'], env: {} });
    expect(t.template.builds[0]!.source.communicator).toMatchObject({ password: 'pa55word' });
    expect(() => importTemplate({ template: f, output: out, inputs: { env: {} } })).toThrow(/exists already/);
  });

  it("reads *.pkr.json (HCL's JSON syntax) like *.pkr.hcl, provisioners in order, errors at their line", () => {
    const f = write(
      'j.pkr.json',
      JSON.stringify(
        {
          variable: { marker: { type: 'string', default: 'm' } },
          source: {
            qemu: {
              a: {
                iso_url: `${dir}/base.qcow2`,
                iso_checksum: 'none',
                disk_image: true,
                ssh_username: 'root',
                ssh_password: 'pw',
              },
            },
          },
          build: {
            sources: ['source.qemu.a'],
            provisioner: [
              { shell: { inline: ['echo ${var.marker}'] } },
              { 'shell-local': { inline: ['x'] } },
              { shell: { inline: ['two'] } },
            ],
          },
        },
        null,
        2,
      ),
    );
    const b = load(f).template.builds[0]!;
    expect(b.provisioners.map((p) => p.type)).toEqual(['shell', 'shell-local', 'shell']);
    expect(b.provisioners[0]).toMatchObject({ inline: ['echo m'] });
    const bad = write(
      'bad.pkr.json',
      '{\n  "source": { "qemu": { "a": {\n    "iso_url": "x",\n    "use_tpm1": true\n  } } },\n  "build": { "sources": ["source.qemu.a"] }\n}\n',
    );
    expect(() => load(bad)).toThrow(/bad\.pkr\.json:4: qemu\.a: use_tpm1: kiln has no equivalent/);
  });
});
