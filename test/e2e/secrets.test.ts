// Secrets stay secret: sensitive variables and the communicator password are masked in every log
// line and event (with --debug too) and never reach the manifest or checksum files; the build's
// private key and its public key never land in the artifact (the host key kiln injects into a
// cloud-init guest is checked in build-debian.test.ts, which builds one anyway). Artifacts are
// searched as raw disks, byte by byte (deleted files included), reading only the extents that hold data.
// The NoCloud-Net seed URL's secrecy (not on QEMU's command line, not in kiln's output) is checked in
// build-debian.test.ts, during the Debian build it makes anyway.
import {
  chmodSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  symlinkSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir, insecureKey, installerSourceYaml, tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { privateKeyPattern, searchDisk, uniquePemLines } from '../helpers/disk-search.js';
import { EventBus, type BuildEvent } from '../../src/ui/events.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'e2e-secrets-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const env = { KILN_CACHE_DIR: path.join(dir, 'cache') };

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\/]/g, '\\$&');

/** Every file kiln wrote beside the disk images (manifest, checksums...), as text. */
function outputTextFiles(out: string, imageNames: string[]): Record<string, string> {
  return Object.fromEntries(
    readdirSync(out)
      .filter((n) => !imageNames.includes(n))
      .map((n) => [n, readFileSync(path.join(out, n), 'utf8')]),
  );
}

/** The build's public key, as `${build.ssh_public_key}` gives it: written to a host file by a shell-local provisioner. */
const recordPublicKey = (file: string) => `
      - type: shell-local
        inline: ['echo "\${build.ssh_public_key}" > ${file}']`;

describe('secrets', () => {
  it('masking works for any secret value: numeric, equal to a field name, or containing another secret', () => {
    const bus = new EventBus(['1234', 'build', 'abc', 'abcdef']);
    const seen: BuildEvent[] = [];
    bus.subscribe((e) => seen.push(e));
    // Before: "1234" made emit throw (the masked JSON no longer parsed), "build" renamed the field, and
    // "abcdef" came out as "<sensitive>def".
    bus.emit({ type: 'step-end', build: 'web', step: 'build 1234', index: 0, ms: 1234.5 });
    bus.emit({ type: 'log', build: 'web', level: 'info', message: 'x abcdef y' });
    expect(seen).toMatchObject([
      { type: 'step-end', build: 'web', step: '<sensitive> <sensitive>', ms: 1234.5 },
      { type: 'log', build: 'web', message: 'x <sensitive> y' },
    ]);
  });

  it('kiln validate of a Packer template in a pull request cannot print a CI secret: file(), env(), sensitive values, computed ones', async () => {
    // A 0600 file as CI runners hold them, and a token in the environment, as a hostile template would read them.
    const ciSecret = `ci-${randomBytes(12).toString('hex')}`;
    const secretFile = path.join(dir, 'ci-credentials');
    writeFileSync(secretFile, ciSecret);
    chmodSync(secretFile, 0o600);
    const envToken = `gh-${randomBytes(12).toString('hex')}`;
    const pw = `pw-${randomBytes(12).toString('hex')}`;
    for (const [name, accelerator] of [
      ['file', `file("${secretFile}")`],
      ['env', 'var.ci_token'],
      ['sensitive', 'base64encode(var.ssh_password)'],
      ['format', 'format("kvm-%s", upper(var.ssh_password))'],
    ]) {
      const file = path.join(dir, `pr-${name}.pkr.hcl`);
      writeFileSync(
        file,
        `
variable "ssh_password" {
  type      = string
  default   = "${pw}"
  sensitive = true
}
variable "ci_token" {
  type    = string
  default = env("CI_DEPLOY_TOKEN")
}
source "qemu" "pr" {
  iso_url      = "${path.join(imagesDir, 'tiny.qcow2')}"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_password = var.ssh_password
  accelerator  = ${accelerator}
}
build {
  sources = ["source.qemu.pr"]
}
`,
      );
      for (const args of [
        ['validate', file],
        ['build', file, '--events=json'],
        ['inspect', file],
        ['import', file],
      ]) {
        const run = await kiln(args, { ...env, CI_DEPLOY_TOKEN: envToken });
        const all = run.stdout + run.stderr;
        expect(run.exitCode, `${name} ${args[0]}`).not.toBe(0);
        expect(all, `${name} ${args.join(' ')}`).toMatch(/accelerator/);
        for (const secret of [ciSecret, envToken, pw, pw.toUpperCase(), Buffer.from(pw).toString('base64')])
          expect(all, `${name} ${args.join(' ')}`).not.toContain(secret);
      }
    }
  }, 120_000);

  it('kiln import -o into a missing folder names the folder and writes nothing', async () => {
    const file = path.join(dir, 'imp.pkr.hcl');
    writeFileSync(
      file,
      `source "qemu" "i" {\n  iso_url = "${path.join(imagesDir, 'tiny.qcow2')}"\n  iso_checksum = "none"\n  disk_image = true\n  ssh_username = "root"\n  ssh_password = "x"\n}\nbuild {\n  sources = ["source.qemu.i"]\n}\n`,
    );
    const target = path.join(dir, 'missing-dir', 'x.yaml');
    const run = await kiln(['import', file, '-o', target], env);
    expect(run.exitCode).not.toBe(0);
    expect(run.stderr).toContain(`the folder ${path.join(dir, 'missing-dir')} does not exist`);
    expect(run.stderr).not.toContain('.kiln-import-');
    expect(existsSync(path.join(dir, 'missing-dir'))).toBe(false);
  }, 60_000);

  it('a sensitive variable and the password are masked in every event and log line (--debug), and reach no output file or disk', async () => {
    const token = `tok-${randomBytes(9).toString('hex')}`;
    const password = `pw-${randomBytes(9).toString('hex')}`;
    const out = path.join(dir, 'out', 'masked');
    const file = path.join(dir, 'masked.yaml');
    // The tiny guest takes only keys; the password is set so kiln has one to mask (it offers it, and
    // dropbear refuses password logins). The provisioner prints both: through a variable, the
    // environment, the literal, and as a last line without a newline.
    // The base image's name holds the token (the manifest records the base image's source), and a
    // variable is filled in from it: before, the manifest held "Bearer <the token>" in clear.
    const base = path.join(dir, `tiny-${token}.qcow2`);
    symlinkSync(path.join(imagesDir, 'tiny.qcow2'), base);
    writeFileSync(
      file,
      `
variables:
  token: { default: ${token}, sensitive: true }
  header: { default: 'Bearer \${var.token}' }
builds:
  - name: masked
    output_directory: ${out}
${tinySourceYaml()
  .replace('trust_on_first_use: true', `password: ${password}, trust_on_first_use: true`)
  .replace(/base_image: .*/, `base_image: '${dir}/tiny-\${var.token}.qcow2'`)}
    provisioners:
      - type: shell
        env: { TOKEN: '\${var.token}' }
        inline:
          - echo "token is \${var.token}"
          - echo "env token is $TOKEN" >&2
          - echo "password is ${password}"
          - echo "header is \${var.header}"
          - printf '%s' "\${var.token}"
    outputs:
      - format: qcow2
`,
    );
    const run = await kiln(['build', file, '--events=json', '--debug'], env);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    // The secrets were really printed (masked), so their absence below means something.
    expect(run.stderr).toContain('token is <sensitive>');
    expect(run.stderr).toContain('env token is <sensitive>');
    expect(run.stderr).toContain('password is <sensitive>');
    expect(run.stderr).toContain('header is <sensitive>');
    const lines = run.events.filter((e) => e.type === 'output').map((e) => e.line);
    expect(lines).toContain('<sensitive>');
    for (const secret of [token, password]) {
      expect(run.stdout, 'events').not.toContain(secret);
      expect(run.stderr, 'human log').not.toContain(secret);
    }
    const texts = outputTextFiles(out, ['masked.qcow2']);
    expect(Object.keys(texts).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'masked.cdx.json',
      'masked.provenance.json',
      'masked.spdx.json',
    ]);
    expect(JSON.parse(texts['manifest.json']!).variables).toEqual({ token: '<sensitive>', header: '<sensitive>' });
    expect(JSON.parse(texts['manifest.json']!).base_image.source).toBe(path.join(dir, 'tiny-<sensitive>.qcow2'));
    const insecureLines = uniquePemLines(insecureKey);
    for (const [name, text] of Object.entries(texts)) {
      for (const secret of [token, password, ...insecureLines]) expect(text, name).not.toContain(secret);
    }
    // The guest's /tmp (where scripts are uploaded) is a tmpfs: nothing of this build holds the
    // secrets on disk, and the key kiln logged in with (a file on the host) never went in.
    const hits = await searchDisk(
      path.join(out, 'masked.qcow2'),
      {
        privateKey: privateKeyPattern,
        token: new RegExp(escape(token)),
        password: new RegExp(escape(password)),
        insecureKey: new RegExp(insecureLines.map(escape).join('|')),
      },
      dir,
    );
    expect(hits).toEqual({ privateKey: [], token: [], password: [], insecureKey: [] });
  }, 300_000);

  it('a build key kiln generates (ISO install of the tiny guest) is not in the artifact: no private key, not its public key', async () => {
    const out = path.join(dir, 'out', 'genkey');
    const pubFile = path.join(dir, 'genkey.pub');
    const file = path.join(dir, 'genkey.yaml');
    writeFileSync(
      file,
      `
builds:
  - name: genkey
    output_directory: ${out}
${installerSourceYaml()}
    provisioners:${recordPublicKey(pubFile)}
    outputs:
      - format: qcow2
`,
    );
    const run = await kiln(['build', file, '--events=json', '--debug'], env);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    const publicKey = readFileSync(pubFile, 'utf8').trim();
    const body = publicKey.split(/\s+/)[1]!;
    expect(body).toMatch(/^AAAAC3NzaC1lZDI1NTE5/);
    for (const [name, text] of Object.entries(outputTextFiles(out, ['genkey.qcow2'])))
      expect(text, name).not.toMatch(privateKeyPattern);
    expect(run.stdout + run.stderr).not.toMatch(privateKeyPattern);
    const hits = await searchDisk(
      path.join(out, 'genkey.qcow2'),
      { privateKey: privateKeyPattern, buildPublicKey: new RegExp(escape(body)) },
      dir,
    );
    expect(hits).toEqual({ privateKey: [], buildPublicKey: [] });
  }, 400_000);
});
