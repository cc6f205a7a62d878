// The shutdown step against the fake driver and a fake SSH session: the shutdown command, ACPI through
// QMP when there is no session, the ACPI nudge, and a guest that will not stop (killed, build fails).
import { afterAll, describe, expect, it } from 'vitest';
import { shutdownStep } from '../../../src/build/steps/shutdown.js';
import { removeStepDirs, runStep, stepContext } from '../../helpers/step-context.js';
import { FakeSsh } from '../../helpers/fake-ssh.js';

afterAll(removeStepDirs);

async function running(o: Parameters<typeof stepContext>[0] = {}) {
  const h = stepContext({ source: { shutdown_timeout: '1s', ...o.source }, ...o });
  const vm = h.driver.startVm([], {});
  h.ctx.state.qemu = vm;
  h.ctx.state.qmp = await h.driver.connectQmp('/qmp.sock', 1000);
  h.driver.calls = [];
  return { h, vm, qmp: h.driver.qmps[0]! };
}

describe('shut down', () => {
  it('runs poweroff over SSH (as root: no sudo) and waits for QEMU to exit', async () => {
    const { h, vm, qmp } = await running();
    const ssh = new FakeSsh((cmd) => { if (cmd === 'poweroff') setTimeout(() => vm.exit(0), 1); return { exitCode: null }; });
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(shutdownStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands.map((c) => c.command)).toEqual(['poweroff']);
    expect(ssh.connected).toBe(false);
    expect(qmp.commands).toEqual([]);
    expect(vm.killed).toEqual([]);
    expect(h.ctx.state.timings.shutdown).toBeGreaterThanOrEqual(0);
  });

  it('a user who is not root powers off through sudo -n; a shutdown_command is run as written', async () => {
    const { h, vm } = await running({ source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } } });
    const ssh = new FakeSsh(() => { vm.exit(0); return { exitCode: 0 }; });
    h.ctx.state.ssh = ssh.session;
    await runStep(shutdownStep, h.ctx);
    expect(ssh.commands[0]!.command).toBe("sudo -n sh -c 'poweroff'");

    const custom = await running({ source: { shutdown_command: 'shutdown -P now' } });
    const ssh2 = new FakeSsh(() => { custom.vm.exit(0); return { exitCode: 0 }; });
    custom.h.ctx.state.ssh = ssh2.session;
    await runStep(shutdownStep, custom.h.ctx);
    expect(ssh2.commands[0]!.command).toBe('shutdown -P now');
  });

  it('without a session, asks for an ACPI power-down through QMP', async () => {
    const { h, vm, qmp } = await running({ source: { communicator: { type: 'none' } } });
    expect((await runStep(shutdownStep, h.ctx)).error).toBeUndefined();
    expect(qmp.commands.map((c) => c.command)).toEqual(['system_powerdown']);
    expect(vm.hasExited).toBe(true);
  });

  it('a guest that ignores the command gets an ACPI nudge halfway, then is killed and the step fails with the fix', async () => {
    const { h, vm, qmp } = await running();
    h.driver.powerOffOnAcpi = false;
    h.ctx.state.ssh = new FakeSsh(() => ({ exitCode: null })).session;
    const { error } = await runStep(shutdownStep, h.ctx);
    expect(error).toBe('the guest did not power off within 1s; QEMU was killed and the disk is not captured\n  fix: check shutdown_command, or raise shutdown_timeout');
    expect(h.said('warn')).toEqual(['guest still running; sending ACPI power-down']);
    expect(qmp.commands.map((c) => c.command)).toEqual(['system_powerdown']);
    expect(vm.killed).toEqual([2000]);
  });

  it('a shutdown command that fails while the guest keeps running: QEMU killed, the error names the command, its output and the sudo fix', async () => {
    const { h, vm } = await running({ source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } } });
    h.driver.waitCapMs = 5;
    h.ctx.state.ssh = new FakeSsh(() => ({ exitCode: 1, stderr: 'sudo: a password is required\n' })).session;
    const { error } = await runStep(shutdownStep, h.ctx);
    expect(error).toContain(`the shutdown command "sudo -n sh -c 'poweroff'" (kiln's default for "debian") exited with 1 and the guest kept running; QEMU was killed`);
    expect(error).toContain('  sudo: a password is required');
    expect(error).toMatch(/fix: run it through "sudo -n", and give "debian" passwordless sudo/);
    expect(vm.killed).toEqual([2000]);
  });
});
