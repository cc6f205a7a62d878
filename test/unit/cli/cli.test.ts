// The CLI itself (compiled, as a user runs it): help, version, validate, inspect and console. No QEMU needed.
import { existsSync, mkdirSync, mkdtempSync, rmSync, writeFileSync, readdirSync, readFileSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { kiln } from '../../helpers/kiln.js';
import { repoRoot } from '../../helpers/guest.js';
import { KilnTerminal } from '../../helpers/pty.js';
import { buildRecordFile, selectBuilds } from '../../../src/build/build.js';
import { ownerFile } from '../../../src/build/stale.js';
import { loadTemplate } from '../../../src/template/load.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-cli-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'x');
const template = path.join(dir, 't.yaml');
writeFileSync(
  template,
  `
variables:
  password: { default: pa55w0rd-value, sensitive: true }
  user: { default: admin }
builds:
  - name: a
    source: { base_image: base.qcow2, checksum: none, communicator: { username: '\${var.user}', password: '\${var.password}' } }
  - name: b
    source: { base_image: base.qcow2, checksum: none }
`,
);

// Each test starts the CLI several times: a node start-up is ~0.7 s, and 4 s on a machine at load 12.
describe('kiln CLI', { timeout: 120_000 }, () => {
  it('prints help and version', async () => {
    const help = await kiln(['--help']);
    expect(help.exitCode).toBe(0);
    expect(help.stdout).toMatch(/kiln build \[template\]/);
    expect(help.stdout).toMatch(/kiln validate <template>/);
    expect(help.stdout).toMatch(/kiln console <build>/);
    expect(help.stdout).toMatch(/kiln cache <action> \[key\]/);
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
    writeFileSync(
      bad,
      'builds:\n  - name: x\n    source:\n      base_image: base.qcow2\n      checksum: none\n      cpu: 2\n',
    );
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
  it('build accepts --no-cache; cache takes ls, prune or rm', async () => {
    const r = await kiln(['build', template, '--no-cache', '--only', 'nope']);
    expect(r.exitCode).toBe(1); // the template's error, not a usage error
    expect(r.stderr).toContain('no build named "nope"');
    const bad = await kiln(['cache', 'frob']);
    expect(bad.exitCode).toBe(2);
    expect(bad.stderr).toMatch(/Invalid values:[\s\S]*Given: "frob", Choices: "ls", "prune", "rm"/);
  });
  it('--only / --except select builds and reject unknown names', () => {
    const t = loadTemplate(template);
    expect(selectBuilds(t, ['b']).map((b) => b.name)).toEqual(['b']);
    expect(selectBuilds(t, undefined, ['a']).map((b) => b.name)).toEqual(['b']);
    expect(() => selectBuilds(t, ['c'])).toThrow(/no build named "c"/);
  });
});

describe('kiln console (against stand-in build records and a stand-in serial socket)', () => {
  // A private TMPDIR: kiln console looks for build work directories there, and real builds running
  // on this machine stay out of it.
  const tmp = mkdtempSync(path.join(os.tmpdir(), 'kiln-console-'));
  afterAll(() => rmSync(tmp, { recursive: true, force: true }));
  const env = { TMPDIR: tmp };
  /** A work directory as runBuild leaves it while running: owner marker and build record. */
  function fakeBuild(dirName: string, build: string, pid: number): string {
    const workDir = path.join(tmp, dirName);
    mkdirSync(workDir);
    writeFileSync(path.join(workDir, ownerFile), String(pid));
    writeFileSync(
      path.join(workDir, buildRecordFile),
      JSON.stringify({ build, template: '/t/x.yaml', pid, startedAt: new Date().toISOString() }),
    );
    return workDir;
  }
  const first = fakeBuild('kiln-web-aaaa', 'web', process.pid);
  const second = fakeBuild('kiln-web-bbbb', 'web', process.ppid);
  fakeBuild('kiln-db-cccc', 'db', 999_999_999); // its kiln is gone: not running

  it('no such build: exit 1, naming the builds that run', async () => {
    const r = await kiln(['console', 'api'], env);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toContain('error: no build named "api" is running; running builds:');
    expect(r.stderr).toContain(`web  (kiln pid ${process.pid}`);
    expect(r.stderr).toContain(`web  (kiln pid ${process.ppid}`);
    expect(r.stderr).not.toContain('db ');
  });
  it('two builds of that name: exit 1, asking for --pid', async () => {
    const r = await kiln(['console', 'web'], env);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/2 builds named "web" are running; choose one with --pid:/);
  });
  it('a build without a serial console (its VM is not running): exit 1', async () => {
    const r = await kiln(['console', 'web', '--pid', String(process.ppid)], env);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(/build "web" has no serial console right now: its VM is not running/);
    expect(existsSync(path.join(second, 'console.pid'))).toBe(false);
  });
  it('relays keys and output in raw mode, Ctrl-C included; Ctrl-] detaches; one client at a time', async () => {
    const received: Buffer[] = [];
    const server = net.createServer((s) => {
      s.write('guest says hi\r\n');
      s.on('data', (d: Buffer) => {
        received.push(d);
        if (d.toString().includes('\r')) s.write('typed ok\r\n');
      });
    });
    await new Promise<void>((resolve) => server.listen(path.join(first, 'serial.sock'), resolve));
    try {
      const term = new KilnTerminal(['console', 'web', '--pid', String(process.pid)], env);
      await term.waitFor(/Ctrl-\] detaches; the VM keeps running/, 60_000);
      await term.waitFor(/guest says hi/, 60_000);
      const another = await kiln(['console', 'web', '--pid', String(process.pid)], env);
      expect(another.exitCode).toBe(1);
      expect(another.stderr).toMatch(/already attached \(kiln console, pid \d+\)/);
      term.write('ls\x03\r');
      await term.waitFor(/typed ok/, 60_000);
      term.write('\x1d');
      expect((await term.exited).exitCode).toBe(0);
      expect(term.output).toMatch(/detached from "web"; the VM keeps running/);
      // Raw mode: Ctrl-C reached the guest as a byte instead of interrupting kiln.
      expect(Buffer.concat(received).toString()).toBe('ls\x03\r');
      expect(existsSync(path.join(first, 'console.pid'))).toBe(false);
    } finally {
      server.close();
    }
  });
});
