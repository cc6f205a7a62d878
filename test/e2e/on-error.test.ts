// --on-error=ask at a real terminal (node-pty), and --on-error=abort without one: a tiny build whose
// provisioner fails on its first run only, then retry, clean up, or keep the VM and reach it over SSH.
// Builds run with --no-cache: a cached layer of the passing run would skip the failing provisioner.
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { repoRoot, writeTinyShellTemplate } from '../helpers/guest.js';
import { KilnTerminal } from '../helpers/pty.js';
import { expectNoLeftovers, snapshotLeftovers } from '../helpers/leftovers.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-on-error-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

// Generous: a tiny guest reaches SSH in ~6 s alone, far later when other VMs share the 2 cores.
const toProvisioning = 300_000;

/** A build whose provisioner fails (exit 3) the first time and succeeds when run again. */
function failingOnce(name: string): { file: string; out: string } {
  return writeTinyShellTemplate(dir, name, [
    `'test -f /tmp/ok || { touch /tmp/ok; echo first-run-fails; exit 3; }'`,
    `'echo second-run-passes'`,
  ]);
}

/** Runs the SSH command kiln printed for a kept VM, with a remote command of ours. */
function sshWith(printed: string, command: string) {
  return execa('sh', ['-c', `${printed} ${command} </dev/null`], { reject: false, timeout: 60_000 });
}

const sshLine = /ssh: +(ssh -p \d+ .*?root@127\.0\.0\.1)/;
const question = /\[r\]etry the step, \[c\]lean up, or \[a\]bort/;

describe('--on-error=ask at a terminal', () => {
  it('r retries the failed step and the build succeeds', async () => {
    const { file, out } = failingOnce('ask-retry');
    const before = snapshotLeftovers({ build: 'ask-retry' });
    const term = new KilnTerminal(['build', file, '--on-error=ask', '--no-cache']);
    const asked = await term.waitFor(question, toProvisioning);
    expect(term.output).toMatch(/provision failed: provisioner 1: .*exited with 3/);
    term.write('r\r');
    expect((await term.exited).exitCode, term.output).toBe(0);
    const after = term.output.slice(asked.end);
    expect(after).toContain('second-run-passes');
    expect((await execa('qemu-img', ['check', path.join(out, 'ask-retry.qcow2')], { reject: false })).exitCode).toBe(0);
    expectNoLeftovers(before);
  }, 600_000);

  it('c cleans up: exit 1, nothing left', async () => {
    const { file, out } = failingOnce('ask-cleanup');
    const before = snapshotLeftovers({ build: 'ask-cleanup', outputDir: out });
    const term = new KilnTerminal(['build', file, '--on-error=ask', '--no-cache']);
    await term.waitFor(question, toProvisioning);
    term.write('c\r');
    expect((await term.exited).exitCode, term.output).toBe(1);
    expect(term.output).toMatch(/build failed after .*provision: provisioner 1/);
    expectNoLeftovers(before);
  }, 600_000);

  it('Ctrl-C at the question interrupts: cleanup, exit 130, nothing left', async () => {
    const { file, out } = failingOnce('ask-interrupt');
    const before = snapshotLeftovers({ build: 'ask-interrupt', outputDir: out });
    const term = new KilnTerminal(['build', file, '--on-error=ask', '--no-cache']);
    await term.waitFor(question, toProvisioning);
    term.write('\x03'); // readline reads raw: kiln turns the key back into SIGINT
    expect((await term.exited).exitCode, term.output).toBe(130);
    expect(term.output).toMatch(/SIGINT received, cleaning up/);
    expectNoLeftovers(before);
  }, 600_000);

  it('a keeps the VM running and reachable until Ctrl-C, which then cleans up', async () => {
    const { file, out } = failingOnce('ask-abort');
    const before = snapshotLeftovers({ build: 'ask-abort', outputDir: out });
    const term = new KilnTerminal(['build', file, '--on-error=ask', '--no-cache']);
    await term.waitFor(question, toProvisioning);
    term.write('a\r');
    const { match } = await term.waitFor(sshLine, 60_000);
    await term.waitFor(/kiln waits with the VM\. To stop it: Ctrl-C here, or kill \d+/, 60_000);
    expect(term.output).toContain('serial console: kiln console ask-abort');
    expect(term.output).toMatch(/the VM is still running \(QEMU pid \d+\)/);

    // Reachable with exactly the printed command; the failed provisioner's marker is there.
    const ssh = await sshWith(match[1]!, `'test -f /tmp/ok && echo hi'`);
    expect(ssh.stdout.trim(), ssh.stderr).toBe('hi');

    term.write('\x03');
    expect((await term.exited).exitCode, term.output).toBe(1);
    expect(term.output).toMatch(/stopping the kept VM; cleaning up/);
    expectNoLeftovers(before);
  }, 600_000);
});

describe('--on-error=abort without a terminal', () => {
  it('keeps everything, prints how to reach the VM, and stops it with the printed kill command', async () => {
    const { file, out } = failingOnce('abort-kept');
    const before = snapshotLeftovers({ build: 'abort-kept', outputDir: out });
    const child = execa('node', [path.join(repoRoot, 'bin/kiln.js'), 'build', file, '--on-error=abort', '--no-cache'], {
      reject: false,
      cwd: repoRoot,
      stdin: 'ignore',
    });
    let stderr = '';
    const printed = new Promise<RegExpExecArray | undefined>((resolve) => {
      child.stderr!.on('data', (chunk: Buffer) => {
        stderr += chunk.toString();
        const kill = /To stop it: Ctrl-C here, or (kill \d+)/.exec(stderr);
        if (kill) resolve(kill);
      });
      void child.then(() => resolve(undefined));
    });
    const kill = await printed;
    expect(kill, `kiln exited without keeping the VM:\n${stderr}`).toBeDefined();
    expect(stderr).not.toMatch(question); // abort never asks
    const ssh = sshLine.exec(stderr);
    expect(ssh, stderr).not.toBeNull();
    expect(stderr).toContain('serial console: kiln console abort-kept');
    const workDir = /work dir: +(\S+)/.exec(stderr)![1]!;
    expect(existsSync(path.join(workDir, 'serial.log'))).toBe(true);

    const reached = await sshWith(ssh![1]!, `'echo hi'`);
    expect(reached.stdout.trim(), reached.stderr).toBe('hi');

    await execa('sh', ['-c', kill![1]!]);
    const r = await child;
    expect(r.exitCode, stderr).toBe(1);
    expect(String(r.stderr)).toMatch(/SIGTERM received, cleaning up/);
    expect(existsSync(workDir)).toBe(false);
    expectNoLeftovers(before);
  }, 600_000);
});
