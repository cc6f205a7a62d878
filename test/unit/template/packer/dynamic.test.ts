// dynamic blocks (as Packer 1.6.6 expands them: checked with `packer build` on null sources, 2026-11-29)
// and data sources (none in Packer 1.6.6; kiln runs data "null" and names the rest with the fix).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../../src/template/load.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-packer-dyn-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
const source = `
source "qemu" "a" {
  iso_url      = "${dir}/base.qcow2"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_password = "pw"
}
`;
function write(name: string, text: string): string {
  const f = path.join(dir, name);
  writeFileSync(f, text);
  return f;
}
const load = (file: string) => loadTemplate(file, { env: {} });

describe('dynamic blocks', () => {
  it('expands dynamic provisioners and post-processors in place, in order (a map by sorted key)', () => {
    const f = write(
      'dyn.pkr.hcl',
      `locals {
  files = { motd = "/etc/motd", issue = "/etc/issue" }
}
${source}
build {
  sources = ["source.qemu.a"]
  provisioner "shell" { inline = ["first"] }
  dynamic "provisioner" {
    for_each = local.files
    iterator = f
    labels   = ["shell"]
    content {
      inline = ["echo \${f.key} \${f.value} \${source.name}"]
    }
  }
  dynamic "provisioner" {
    for_each = ["x", "y"]
    labels   = ["shell-local"]
    content {
      inline = ["echo \${provisioner.key}=\${provisioner.value}"]
    }
  }
  provisioner "shell" { inline = ["last"] }
  dynamic "post-processor" {
    for_each = ["sha256"]
    labels   = ["checksum"]
    content {
      checksum_types = [post-processor.value]
    }
  }
}
`,
    );
    const b = load(f).template.builds[0]!;
    expect(b.provisioners.map((p) => [p.type, (p as { inline?: string[] }).inline?.[0]])).toEqual([
      ['shell', 'first'],
      ['shell', 'echo issue /etc/issue a'],
      ['shell', 'echo motd /etc/motd a'],
      ['shell-local', 'echo 0=x'],
      ['shell-local', 'echo 1=y'],
      ['shell', 'last'],
    ]);
  });

  it('expands nested dynamic blocks with the outer iterator in scope', () => {
    const f = write(
      'nested.pkr.hcl',
      `${source}
build {
  sources = ["source.qemu.a"]
  dynamic "provisioner" {
    for_each = [["a", "b"], ["c"]]
    iterator = group
    labels   = ["shell"]
    content {
      inline = [for s in group.value : "\${group.key}:\${s}"]
    }
  }
}
`,
    );
    expect(load(f).template.builds[0]!.provisioners.map((p) => (p as { inline?: string[] }).inline)).toEqual([
      ['0:a', '0:b'],
      ['1:c'],
    ]);
  });

  it('refuses a dynamic block Packer refuses or cannot expand, at its line', () => {
    const top = write(
      'top.pkr.hcl',
      `dynamic "source" {\n  for_each = ["a"]\n  labels = ["qemu", "x"]\n  content {}\n}\n${source}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    expect(() => load(top)).toThrow(/top\.pkr\.hcl:1: dynamic "source": a dynamic block at the top of a file/);
    const bad = write(
      'badeach.pkr.hcl',
      `${source}\nbuild {\n  sources = ["source.qemu.a"]\n  dynamic "provisioner" {\n    for_each = "x"\n    labels = ["shell"]\n    content { inline = ["x"] }\n  }\n}\n`,
    );
    expect(() => load(bad)).toThrow(
      /badeach\.pkr\.hcl:12: .*dynamic "provisioner": for_each must be a list or a map, not a string/,
    );
    const noContent = write(
      'nocontent.pkr.hcl',
      `${source}\nbuild {\n  sources = ["source.qemu.a"]\n  dynamic "provisioner" {\n    for_each = [1]\n    labels = ["shell"]\n  }\n}\n`,
    );
    expect(() => load(noContent)).toThrow(
      /nocontent\.pkr\.hcl:12: .*dynamic "provisioner" needs exactly one content block/,
    );
  });
});

describe('data sources', () => {
  it('runs data "null" (output = input), usable from locals and sources', () => {
    const f = write(
      'dnull.pkr.hcl',
      `variable "n" {\n  default = 2\n}\ndata "null" "cpus" {\n  input = var.n\n}\nlocals {\n  mem = data.null.cpus.output * 256\n}\n${source.replace('disk_image', 'cpus = data.null.cpus.output\n  memory = local.mem\n  disk_image')}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    const b = load(f).template.builds[0]!;
    expect(b.source.cpus).toBe(2);
    expect(b.source.memory).toBe(512);
  });

  it('names any other data source at file:line, with its type and the fix', () => {
    const f = write(
      'dhttp.pkr.hcl',
      `${source}\ndata "http" "release" {\n  url = "https://example.org/latest"\n}\ndata "amazon-ami" "base" {\n  region = "x"\n}\nlocals {\n  v = data.http.release.body\n}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    let msg = '';
    try {
      load(f);
    } catch (e) {
      msg = (e as Error).message;
    }
    expect(msg).toMatch(
      /dhttp\.pkr\.hcl:10: data "http" "release": kiln does not run the "http" data source \(Packer 1\.6\.6 has no data sources; they arrived in Packer 1\.7\)\n  fix: replace data\.http\.release\.<attribute> with a variable \(variable "http_release"/,
    );
    expect(msg).toMatch(/dhttp\.pkr\.hcl:13: data "amazon-ami" "base": kiln does not run the "amazon-ami" data source/);
    const bad = write(
      'dnullbad.pkr.hcl',
      `${source}\ndata "null" "x" {\n  inputs = 1\n}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    expect(() => load(bad)).toThrow(/dnullbad\.pkr\.hcl:10: data "null" "x": a null data source has two labels/);
  });
});

describe('a folder', () => {
  it('of legacy JSON is refused as Packer 1.6.6 refuses it ("Could not find any config file"), naming the file to give instead', () => {
    const folder = path.join(dir, 'legacy');
    mkdirSync(folder);
    writeFileSync(path.join(folder, 'a.json'), JSON.stringify({ builders: [{ type: 'qemu' }] }));
    writeFileSync(path.join(folder, 'notes.json'), '{}');
    expect(() => load(folder)).toThrow(
      /legacy holds no \*\.pkr\.hcl or \*\.pkr\.json file, only legacy JSON \(a\.json\); a folder is read as HCL, as Packer 1\.6\.6 does\n  fix: give kiln the legacy template itself: .*legacy\/a\.json/,
    );
  });
});
