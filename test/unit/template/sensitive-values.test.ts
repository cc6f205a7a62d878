// Sensitive values are never printed (issue 23): not in schema errors, not in a variable's type error,
// not once a function has changed them (base64encode, upper, format), not when read by env() in a
// default or by file() from a 0600 file, in YAML, HCL and legacy JSON templates alike. Before, e.g.
// `accelerator: ${var.pw}` failed with `accelerator: "<the secret>" is not allowed`.
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { inspectTemplate } from '../../../src/cli/inspect.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-sensitive-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
let n = 0;
function write(name: string, text: string): string {
  const f = path.join(dir, `${++n}-${name}`);
  writeFileSync(f, text);
  return f;
}

/** The message of the error loading throws (it must throw). */
function failure(file: string, inputs: Parameters<typeof loadTemplate>[1] = {}): string {
  try {
    loadTemplate(file, { env: {}, ...inputs });
  } catch (e) {
    return (e as Error).message;
  }
  throw new Error('expected the template to be refused');
}

const secret = 'Sup3r-s3cret-CI-token-that-is-rather-long-0123456789abcdefghijklmnop';
const b64 = Buffer.from(secret).toString('base64');

describe('YAML: sensitive: true', () => {
  const yaml = (field: string, vars = `  token: { default: '${secret}', sensitive: true }\n`) =>
    write(
      't.yaml',
      `variables:\n${vars}builds:\n  - name: s\n    source:\n      base_image: base.qcow2\n      checksum: none\n${field}`,
    );

  it('a schema error about a field filled from a sensitive variable masks it, even when the value is long', () => {
    const msg = failure(yaml("      accelerator: '${var.token}'\n"));
    expect(msg).toMatch(/accelerator: <sensitive> is not allowed/);
    // Not the whole, not the first 57 characters that the cut-short quote showed.
    expect(msg).not.toContain(secret.slice(0, 20));
  });

  it('a secret inside a longer value, and a short secret quoted whole, are masked', () => {
    expect(failure(yaml("      accelerator: 'kvm-${var.token}'\n"))).not.toContain(secret.slice(0, 20));
    const short = failure(yaml("      accelerator: '${var.pin}'\n", "  pin: { default: 'z9', sensitive: true }\n"));
    expect(short).toMatch(/accelerator: <sensitive> is not allowed/);
    expect(short).not.toContain('"z9"');
  });

  it('a sensitive variable given with the wrong type is not quoted (--var, --var-file, a default using it)', () => {
    const file = yaml(
      '',
      `  pin: { type: number, sensitive: true, default: 1 }\n  other: { type: number, default: '\${var.tok}' }\n  tok: { default: '${secret}', sensitive: true }\n`,
    );
    const viaVar = failure(file, { vars: ['pin=hunter2-not-a-number'] });
    expect(viaVar).toMatch(/the value \(sensitive, not shown\) is not a number/);
    expect(viaVar).not.toContain('hunter2');
    expect(failure(file)).not.toContain(secret.slice(0, 20));
  });

  it('a variable filled in from a sensitive one is sensitive too: inspect shows neither', () => {
    const f = yaml(
      '      accelerator: tcg\n',
      `  token: { default: '${secret}', sensitive: true }\n  header: { default: 'Bearer \${var.token}' }\n`,
    );
    const t = loadTemplate(f, { env: {} });
    expect([...t.variables.sensitive].sort()).toEqual(['header', 'token']);
    const shown = inspectTemplate(t, false) + inspectTemplate(t, true);
    expect(shown).not.toContain(secret);
    expect(shown).toMatch(/header = "<sensitive>"/);
  });

  it('a path not found that holds the secret is masked', () => {
    const f = write(
      'p.yaml',
      `variables:\n  token: { default: '${secret}', sensitive: true }\nbuilds:\n  - name: s\n    source:\n      base_image: 'img-\${var.token}.qcow2'\n      checksum: none\n`,
    );
    const m = failure(f);
    expect(m).toContain('img-<sensitive>.qcow2');
    expect(m).not.toContain(secret.slice(0, 20));
  });
});

const hclSource = (field: string) => `
source "qemu" "web" {
  iso_url      = "${dir}/base.qcow2"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_password = var.ssh_password
${field}
}
build {
  sources = ["source.qemu.web"]
}
`;
const hclVars = `
variable "ssh_password" {
  type      = string
  default   = "${secret}"
  sensitive = true
}
`;

describe('HCL: sensitive = true, env() defaults, file()', () => {
  it('the value itself, and values computed from it by functions, never appear in an error', () => {
    for (const expr of [
      'var.ssh_password',
      'upper(var.ssh_password)',
      'base64encode(var.ssh_password)',
      'format("x-%s-y", var.ssh_password)',
      'local.derived',
    ]) {
      const f = write(
        's.pkr.hcl',
        `${hclVars}locals {\n  derived = lower(base64encode(var.ssh_password))\n}\n${hclSource(`  accelerator = ${expr}`)}`,
      );
      const msg = failure(f);
      expect(msg, expr).toMatch(/accelerator/);
      for (const text of [secret, secret.toUpperCase(), b64, b64.toLowerCase()])
        expect(msg, expr).not.toContain(text.slice(0, 20));
    }
  });

  it('a -var or PKR_VAR_ value of the wrong type for a sensitive variable is not quoted', () => {
    const f = write(
      'n.pkr.hcl',
      `variable "pin" {\n  type = number\n  default = 1\n  sensitive = true\n}\n${hclVars}${hclSource('  cpus = var.pin')}`,
    );
    for (const inputs of [{ vars: ['pin=hunter2-pin'] }, { env: { PKR_VAR_pin: 'hunter2-pin' } }]) {
      const msg = failure(f, inputs);
      expect(msg).toMatch(/pin/);
      expect(msg).not.toContain('hunter2');
    }
  });

  it('a default read with env() is masked like a sensitive value, in errors and in inspect', () => {
    const f = write(
      'e.pkr.hcl',
      `variable "ci_token" {\n  type = string\n  default = env("KILN_TEST_CI_TOKEN")\n}\n${hclVars}${hclSource('  accelerator = "kvm${var.ci_token}"')}`,
    );
    const msg = failure(f, { env: { KILN_TEST_CI_TOKEN: 'ghp_abcdefCItoken' } });
    expect(msg).toMatch(/accelerator/);
    expect(msg).not.toContain('ghp_abcdefCItoken');
    const ok = write(
      'e2.pkr.hcl',
      `variable "ci_token" {\n  type = string\n  default = env("KILN_TEST_CI_TOKEN")\n}\n${hclVars}${hclSource('  vm_name = "web-${var.ci_token}.qcow2"')}`,
    );
    const t = loadTemplate(ok, { env: { KILN_TEST_CI_TOKEN: 'ghp_abcdefCItoken' } });
    expect(t.variables.sensitive.has('ci_token')).toBe(true);
    const shown = inspectTemplate(t, false) + inspectTemplate(t, true);
    expect(shown).not.toContain('ghp_abcdefCItoken');
    expect(shown).not.toContain(secret);
  });

  it('the content of a file read by file() (a 0600 CI secret) is not echoed in the error', () => {
    const secretFile = path.join(dir, 'ci-secret');
    writeFileSync(secretFile, 'AKIA-very-secret-key-material');
    chmodSync(secretFile, 0o600);
    const f = write('f.pkr.hcl', `${hclVars}${hclSource(`  accelerator = file("${secretFile}")`)}`);
    const msg = failure(f);
    expect(msg).toMatch(/accelerator/);
    expect(msg).not.toContain('AKIA-very-secret');
    const trimmed = write(
      'f2.pkr.hcl',
      `${hclVars}${hclSource(`  accelerator = trimspace(upper(file("${secretFile}")))`)}`,
    );
    expect(failure(trimmed)).not.toContain('AKIA-VERY-SECRET');
  });

  it('only the items of a list that come from a secret are masked', () => {
    const f = write('l.pkr.hcl', `${hclVars}${hclSource('  qemuargs = [["-name", "vm-${upper(var.ssh_password)}"]]')}`);
    const t = loadTemplate(f, { env: {} });
    expect(t.variables.secrets).toContain(secret.toUpperCase());
    expect(t.variables.secrets).not.toContain('-name');
  });
});

describe('legacy JSON: sensitive-variables', () => {
  it('a sensitive variable filled into a field is masked in the error, and a {{env}} default too', () => {
    const f = write(
      'legacy.json',
      JSON.stringify(
        {
          variables: { ssh_password: secret, token: '{{env `KILN_TEST_LEGACY_TOKEN`}}' },
          'sensitive-variables': ['ssh_password'],
          builders: [
            {
              type: 'qemu',
              iso_url: `${dir}/base.qcow2`,
              iso_checksum: 'none',
              disk_image: true,
              ssh_username: 'root',
              ssh_password: '{{user `ssh_password`}}',
              accelerator: 'x{{user `ssh_password`}}{{user `token`}}',
            },
          ],
        },
        null,
        2,
      ),
    );
    const msg = failure(f, { env: { KILN_TEST_LEGACY_TOKEN: 'legacy-env-token-xyz' } });
    expect(msg).toMatch(/accelerator/);
    expect(msg).not.toContain(secret.slice(0, 20));
    expect(msg).not.toContain('legacy-env-token');
  });
});
