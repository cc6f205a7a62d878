// The CLI itself (compiled, as a user runs it): help, version, validate and inspect. No QEMU needed.
import { mkdtempSync, writeFileSync, readdirSync, readFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { kiln } from '../helpers/kiln.js';
import { repoRoot } from '../helpers/guest.js';
import { selectBuilds } from '../../src/build/build.js';
import { loadTemplate } from '../../src/template/load.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-'));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
const template = path.join(dir, 't.yaml');
writeFileSync(template, `
variables:
  password: { default: pa55w0rd-value, sensitive: true }
  user: { default: admin }
builds:
  - name: a
    source: { base_image: base.qcow2, checksum: none, communicator: { username: '\${var.user}', password: '\${var.password}' } }
  - name: b
    source: { base_image: base.qcow2, checksum: none }
`);

describe('kiln CLI', () => {
  it('prints help and version', async () => {
    const help = await kiln(['--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/kiln build <template>/);
    expect(help.stdout).toMatch(/kiln validate <template>/);
    const version = await kiln(['--version']);
    expect(version.exitCode).toBe(0);
    expect(version.stdout.trim()).toBe(JSON.parse(readFileSync(path.join(repoRoot, 'package.json'), 'utf8')).version);
  });
  it('validate reports a good template', async () => {
    const r = await kiln(['validate', template]);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('valid (2 builds: a, b)');
  });
  it('validate fails with file, line, field and fix, and creates nothing', async () => {
    const bad = path.join(dir, 'bad.yaml');
    writeFileSync(bad, 'builds:\n  - name: x\n    source:\n      base_image: base.qcow2\n      checksum: none\n      cpu: 2\n');
    const before = readdirSync(dir).length;
    const r = await kiln(['validate', bad]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain(`${bad}:6: builds[0].source.cpu: unknown key "cpu"`);
    expect(r.stderr).toContain('did you mean "cpus"?');
    expect(readdirSync(dir).length).toBe(before);
  });
  it('inspect resolves variables and masks sensitive ones everywhere', async () => {
    const r = await kiln(['inspect', template, '--var', 'user=root']);
    expect(r.exitCode).toBe(0);
    expect(r.stdout).toContain('user = "root"  (--var user)');
    expect(r.stdout).toContain('password = "<sensitive>"');
    expect(r.stdout).toContain('communicator: ssh as root');
    const json = await kiln(['inspect', template, '--json']);
    expect(json.exitCode).toBe(0);
    expect(JSON.parse(json.stdout).builds[0].source.communicator.password).toBe('<sensitive>');
    expect(r.stdout + json.stdout).not.toContain('pa55w0rd-value');
  });
  it('an unknown command or flag is a usage error', async () => {
    const unknown = await kiln(['frobnicate']);
    expect(unknown.exitCode).toBe(2);
    expect(unknown.stderr).toMatch(/Unknown argument: frobnicate/);
    const flag = await kiln(['build', template, '--nope']);
    expect(flag.exitCode).toBe(2);
    expect(flag.stderr).toMatch(/Unknown argument: nope/);
    expect(flag.stderr).not.toMatch(/build starting/); // nothing ran
  });
  it('--only / --except select builds and reject unknown names', () => {
    const t = loadTemplate(template);
    expect(selectBuilds(t, ['b']).map((b) => b.name)).toEqual(['b']);
    expect(selectBuilds(t, undefined, ['a']).map((b) => b.name)).toEqual(['b']);
    expect(() => selectBuilds(t, ['c'])).toThrow(/no build named "c"/);
  });
});
