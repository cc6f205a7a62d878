// The shutdown step against the fake driver and a fake SSH session: the shutdown command, ACPI through
// QMP when there is no session, the ACPI nudge, and a guest that will not stop (killed, build fails).
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { LayerStore } from '../../../../src/cache/layers.js';
import { rootShellPoweroff, shutdownStep } from '../../../../src/build/steps/shutdown.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';

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
    const ssh = new FakeSsh((cmd) => {
      if (cmd === 'poweroff') setTimeout(() => vm.exit(0), 1);
      return { exitCode: null };
    });
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(shutdownStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands.map((c) => c.command)).toEqual(['poweroff']);
    expect(ssh.connected).toBe(false);
    expect(qmp.commands).toEqual([]);
    expect(vm.killed).toEqual([]);
    expect(h.ctx.state.timings.shutdown).toBeGreaterThanOrEqual(0);
  });

  it('a user who is not root powers off through sudo -n; a shutdown_command is run as written', async () => {
    const { h, vm } = await running({
      source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } },
    });
    const ssh = new FakeSsh(() => {
      vm.exit(0);
      return { exitCode: 0 };
    });
    h.ctx.state.ssh = ssh.session;
    await runStep(shutdownStep, h.ctx);
    expect(ssh.commands[0]!.command).toBe("sudo -n sh -c 'poweroff'");

    const custom = await running({ source: { shutdown_command: 'shutdown -P now' } });
    const ssh2 = new FakeSsh(() => {
      custom.vm.exit(0);
      return { exitCode: 0 };
    });
    custom.h.ctx.state.ssh = ssh2.session;
    await runStep(shutdownStep, custom.h.ctx);
    expect(ssh2.commands[0]!.command).toBe('shutdown -P now');
  });

  it("powers off through the clean-up's root shell when it was left open: no new session, no sudo", async () => {
    const { h, vm } = await running({
      source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } },
    });
    const ssh = new FakeSsh();
    h.ctx.state.ssh = ssh.session;
    const sent: string[] = [];
    h.ctx.state.rootShell = {
      finish: (command) => {
        sent.push(command);
        setTimeout(() => vm.exit(0), 1);
      },
      ended: new Promise(() => undefined), // the connection drops as the guest goes down: no status
      output: () => '',
    };
    expect((await runStep(shutdownStep, h.ctx)).error).toBeUndefined();
    expect(sent).toEqual([rootShellPoweroff]);
    expect(ssh.commands).toEqual([]);
    expect(h.ctx.state.rootShell).toBeUndefined();
    expect(vm.killed).toEqual([]);
  });

  it('a poweroff that fails in the root shell names its output; a shutdown_command is run as written instead', async () => {
    const { h } = await running();
    h.ctx.state.ssh = new FakeSsh().session;
    h.ctx.state.rootShell = {
      finish: () => undefined,
      ended: Promise.resolve({ exitCode: 1, disconnected: false }),
      output: () => 'Failed to connect to bus\n',
    };
    const { error } = await runStep(shutdownStep, h.ctx);
    expect(error).toContain(`the shutdown command "poweroff" (kiln's default for "root") exited with 1`);
    expect(error).toContain('  Failed to connect to bus');

    const custom = await running({ source: { shutdown_command: 'shutdown -P now' } });
    const ssh = new FakeSsh(() => {
      custom.vm.exit(0);
      return { exitCode: 0 };
    });
    custom.h.ctx.state.ssh = ssh.session;
    let finished = false;
    custom.h.ctx.state.rootShell = {
      finish: () => (finished = true),
      ended: Promise.resolve(undefined),
      output: () => '',
    };
    expect((await runStep(shutdownStep, custom.h.ctx)).error).toBeUndefined();
    expect(ssh.commands.map((c) => c.command)).toEqual(['shutdown -P now']);
    expect(finished).toBe(false);
  });

  it('the root shell powers off by path first (a busybox sh would run its own applet for a bare poweroff)', () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'poweroff-'));
    try {
      writeFileSync(path.join(dir, 'poweroff'), '#!/bin/sh\necho "ran $0"\n', { mode: 0o755 });
      const paths = '/sbin/poweroff /usr/sbin/poweroff /bin/poweroff /usr/bin/poweroff';
      expect(rootShellPoweroff).toContain(paths);
      const snippet = rootShellPoweroff
        .replace(paths, `${dir}/missing ${dir}/poweroff`)
        .replace(/exec poweroff$/, 'echo bare');
      const r = spawnSync('/bin/sh', ['-c', snippet], { encoding: 'utf8' });
      expect(r.stdout).toBe(`ran ${dir}/poweroff\n`);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
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
    expect(error).toBe(
      'the guest did not power off within 1s; QEMU was killed and the disk is not captured\n  fix: check shutdown_command, or raise shutdown_timeout',
    );
    expect(h.said('warn')).toEqual(['guest still running; sending ACPI power-down']);
    expect(qmp.commands.map((c) => c.command)).toEqual(['system_powerdown']);
    expect(vm.killed).toEqual([2000]);
  });

  it('a shutdown command that fails while the guest keeps running: QEMU killed, the error names the command, its output and the sudo fix', async () => {
    const { h, vm } = await running({
      source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } },
    });
    h.driver.waitCapMs = 5;
    h.ctx.state.ssh = new FakeSsh(() => ({ exitCode: 1, stderr: 'sudo: a password is required\n' })).session;
    const { error } = await runStep(shutdownStep, h.ctx);
    expect(error).toContain(
      `the shutdown command "sudo -n sh -c 'poweroff'" (kiln's default for "debian") exited with 1 and the guest kept running; QEMU was killed`,
    );
    expect(error).toContain('  sudo: a password is required');
    expect(error).toMatch(/fix: run it through "sudo -n", and give "debian" passwordless sudo/);
    expect(vm.killed).toEqual([2000]);
  });

  it('with the layer cache, queues the final disk into the store with the package list and trim sizes, off the critical path', async () => {
    for (const vhd of [false, true]) {
      const { h, vm } = await running({ build: { outputs: [{ format: vhd ? 'vhd' : 'qcow2' }] } });
      const store = new LayerStore(h.ctx.options.cacheDir, h.driver);
      const disk = path.join(h.ctx.state.workDir, 'disk-2.qcow2');
      writeFileSync(disk, 'the finished disk');
      h.ctx.state.disk = { path: disk, format: 'qcow2', virtualSize: 1 << 30 };
      h.ctx.state.sbom = { manager: 'none', packages: [] };
      h.ctx.state.compaction = { beforeBytes: 10, afterBytes: 4 };
      const last = 'c'.repeat(64);
      const finalKey = 'f'.repeat(64);
      let release!: () => void;
      const earlier = new Promise<void>((resolve) => {
        release = resolve;
      });
      h.ctx.state.layers = {
        store,
        rootKey: 'r'.repeat(64),
        plan: [{ index: 0, description: 'shell', key: last }],
        cachedCount: 1,
        rootBacking: null,
        finalKey,
        publishing: earlier,
      };
      h.ctx.state.ssh = new FakeSsh(() => {
        vm.exit(0);
        return { exitCode: null };
      }).session;
      expect((await runStep(shutdownStep, h.ctx)).error).toBeUndefined();
      // The step did not wait for the save (queued behind an earlier one still running).
      expect(store.meta(finalKey)).toBeUndefined();
      release();
      await h.ctx.state.layers.publishing;
      const meta = store.meta(finalKey)!;
      expect(meta).toMatchObject({
        parent: last,
        backing: `${last}.qcow2`,
        provisioner: 0,
        final: { sbom: { manager: 'none', packages: [] }, compaction: { beforeBytes: 10, afterBytes: 4 } },
      });
      expect(readFileSync(store.layerFile(finalKey), 'utf8')).toBe('the finished disk');
      const saved = h.events.find((e) => e.type === 'layer-saved') as
        { final?: boolean; ms: number; index: number } | undefined;
      expect(saved).toMatchObject({ final: true, index: -1 });
      expect(h.ctx.state.timings['layer capture (background)']).toBeGreaterThanOrEqual(0);
      // A VHD output may grow the conversion's input: it gets an overlay, the file being copied stays as it is.
      expect(h.ctx.state.disk!.path).toBe(vhd ? path.join(h.ctx.state.workDir, 'disk-output.qcow2') : disk);
    }
  });

  it('without the layer cache, or converting from the final layer, saves nothing', async () => {
    const { h, vm } = await running();
    h.ctx.state.ssh = new FakeSsh(() => {
      vm.exit(0);
      return { exitCode: null };
    }).session;
    expect((await runStep(shutdownStep, h.ctx)).error).toBeUndefined();
    expect(h.events.some((e) => e.type === 'layer-saved')).toBe(false);
  });
});
