// The step that takes kiln's access out of the guest, over a fake SSH session: the script goes in on
// stdin (nothing secret on a command line), through sudo -n for a user who is not root; a failure names
// its output. The trim follows in the same shell, and its result is left for the trim step to report.
import { afterAll, describe, expect, it } from 'vitest';
import { cleanGuestScript, cleanGuestStep, cleanUpThenTrim } from '../../../../src/build/steps/clean-guest.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh, type FakeReply } from '../../../helpers/fake-ssh.js';

afterAll(removeStepDirs);

const disk = { path: '/w/disk.qcow2', format: 'qcow2' as const, virtualSize: 1 << 30 };

/** A root shell that printed the trim's marker and stays open until its input ends, then answers `last`. */
const openRootShell = (last: FakeReply) =>
  new FakeSsh(() => ({ exitCode: null, stdout: 'kiln-trim-exit=0\n', untilInputEnds: last }));

describe('remove build access', () => {
  it('runs the clean-up script on stdin, as root directly', async () => {
    const h = stepContext({ state: { disk } });
    const ssh = new FakeSsh();
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(cleanGuestStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands).toHaveLength(1);
    expect(ssh.commands[0]!.command).toBe('sh -s');
    expect(ssh.commands[0]!.stdin).toBe(cleanUpThenTrim(cleanGuestScript(false)));
    expect(ssh.commands[0]!.stdin).toContain("KEY_PREFIX='kiln-build-'"); // the comment kiln's build keys carry
    // cloud_init: false here: no cloud-init state to remove.
    expect(ssh.commands[0]!.stdin).not.toContain('/var/lib/cloud');
  });

  it('through sudo -n for another user; a failure names the exit and the end of its output', async () => {
    const h = stepContext({
      source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } },
      state: { disk },
    });
    const ssh = new FakeSsh(() => ({ exitCode: 1, stderr: 'sudo: a password is required\n' }));
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(cleanGuestStep, h.ctx)).error).toBe(
      "removing kiln's keys from the guest failed (exit 1): sudo: a password is required",
    );
    expect(ssh.commands[0]!.command).toBe('sudo -n sh -s');
  });

  it('leaves the trim it ran for the trim step: the overlay before, the status and output from its marker line', async () => {
    const h = stepContext({ state: { disk } });
    h.driver.defaultInfo = { ...h.driver.defaultInfo, actualSize: 300 << 20 };
    h.ctx.state.ssh = new FakeSsh(() => ({ exitCode: 0, stdout: '/: 1 GiB trimmed\nkiln-trim-exit=0\n' })).session;
    expect((await runStep(cleanGuestStep, h.ctx)).error).toBeUndefined();
    expect(h.ctx.state.trimmedWithCleanUp).toEqual({
      beforeBytes: 300 << 20,
      exitCode: 0,
      output: '/: 1 GiB trimmed\n',
    });
  });

  it('no marker (the shell ended before the trim): nothing is left, so the trim step runs it', async () => {
    const h = stepContext({ state: { disk } });
    h.ctx.state.ssh = new FakeSsh(() => ({ exitCode: 0, stdout: '' })).session;
    expect((await runStep(cleanGuestStep, h.ctx)).error).toBeUndefined();
    expect(h.ctx.state.trimmedWithCleanUp).toBeUndefined();
  });

  it('without a shutdown_command the root shell stays open after the trim, for the poweroff; its later output is kept', async () => {
    const h = stepContext({ state: { disk } });
    const ssh = openRootShell({ exitCode: 0, stdout: 'going down\n' });
    h.ctx.state.ssh = ssh.session;
    const { error, cleanup } = await runStep(cleanGuestStep, h.ctx);
    expect(error).toBeUndefined();
    expect(ssh.commands[0]!.stdin).toBe(cleanUpThenTrim(cleanGuestScript(false)));
    expect(h.ctx.state.trimmedWithCleanUp).toMatchObject({ exitCode: 0, output: '' });
    const shell = h.ctx.state.rootShell!;
    shell.finish('poweroff');
    expect(await shell.ended).toEqual({ exitCode: 0 });
    expect(ssh.commands[0]!.stdin).toBe(`${cleanUpThenTrim(cleanGuestScript(false))}poweroff\n`);
    expect(shell.output()).toBe('going down\n');
    await cleanup?.();
    expect(h.ctx.state.rootShell).toBeUndefined();
  });

  it('a build that stops before its shut-down ends the open shell with its input', async () => {
    const h = stepContext({ state: { disk } });
    const ssh = openRootShell({ exitCode: 0 });
    h.ctx.state.ssh = ssh.session;
    const { cleanup } = await runStep(cleanGuestStep, h.ctx);
    const ended = h.ctx.state.rootShell!.ended;
    await cleanup?.();
    expect(await ended).toEqual({ exitCode: 0 });
    expect(ssh.commands[0]!.stdin).toBe(cleanUpThenTrim(cleanGuestScript(false)));
  });

  it('with a shutdown_command the script goes in whole and the shell ends with it', async () => {
    const h = stepContext({ source: { shutdown_command: 'shutdown -P now' }, state: { disk } });
    const ssh = new FakeSsh(() => ({ exitCode: 0, stdout: 'kiln-trim-exit=0\n' }));
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(cleanGuestStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands[0]!.stdin).toBe(cleanUpThenTrim(cleanGuestScript(false)));
    expect(h.ctx.state.rootShell).toBeUndefined();
    expect(h.ctx.state.trimmedWithCleanUp).toMatchObject({ exitCode: 0 });
  });
});
