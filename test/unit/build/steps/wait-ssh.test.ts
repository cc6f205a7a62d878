// The SSH wait against the fake driver's VMs (the SSH attempts are real, to a closed loopback port):
// no way to check the host key, QEMU dying before SSH (its console and command in the error), and
// an installer that powers off, after which the installed disk is booted through the driver; and after
// the login, the wait for cloud-init (or none, with cloud_init.wait: false) against a fake session.
import { writeFileSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { waitForCloudInit, waitSshStep } from '../../../../src/build/steps/wait-ssh.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

/** A loopback port nothing listens on (refuses at once). */
async function closedPort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.1', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function booting(o: Parameters<typeof stepContext>[0] = {}) {
  const h = stepContext({
    ...o,
    source: {
      ...o.source,
      communicator: {
        username: 'root',
        password: 'pw',
        trust_on_first_use: true,
        timeout: '5s',
        ...(o.source?.communicator as object),
      },
    },
  });
  const st = h.ctx.state;
  st.disk = { path: path.join(st.workDir, 'disk.qcow2'), format: 'qcow2', virtualSize: 1 << 30 };
  st.accelerator = 'tcg';
  st.sshHostPort = await closedPort();
  st.serialLog = path.join(st.workDir, 'serial.log');
  writeFileSync(st.serialLog, 'Booting Linux\nKernel panic - not syncing: VFS\n');
  return h;
}

describe('wait for SSH', () => {
  it('no way to verify the host key is an error with the three fixes', async () => {
    const h = await booting({ source: { communicator: { trust_on_first_use: false } } });
    expect((await runStep(waitSshStep, h.ctx)).error).toBe(
      "no way to verify the guest's host key\n  fix: enable cloud_init (kiln injects one), set communicator.host_key_fingerprint, or set communicator.trust_on_first_use: true",
    );
  });

  it('QEMU exiting before SSH came up ends the wait with its message, the console tail and the QEMU command', async () => {
    const h = await booting();
    const vm = h.driver.startVm(['-name', 'unit'], {});
    h.ctx.state.qemu = vm;
    setTimeout(() => vm.exit(1, null, 'qemu: guest crashed'), 50);
    const { error } = await runStep(waitSshStep, h.ctx);
    expect(error).toBe(
      `QEMU exited before SSH came up: qemu: guest crashed\n--- last lines of the serial console (${h.ctx.state.serialLog}) ---\nBooting Linux\nKernel panic - not syncing: VFS\n--- QEMU command ---\nqemu-system-x86_64 -name unit`,
    );
    expect(h.ctx.state.ssh).toBeUndefined();
  });

  it('an installer that powers off: the installed disk is booted through the driver, without the ISO', async () => {
    const h = await booting({ source: { base_image: undefined, iso: '$base', disk_size: '1G' } });
    const installer = h.driver.startVm(['-cdrom', 'installer'], {});
    h.ctx.state.qemu = installer;
    h.ctx.state.installing = true;
    h.ctx.state.base = { path: h.ctx.build.source.iso!, format: 'raw', sha256: 'a', source: 'iso', kind: 'iso' };
    // The installed system then fails to boot, which ends the test's wait.
    h.driver.vmScript = () => ({ exitAtStart: undefined });
    setTimeout(() => installer.exit(0), 50);
    const failBoot = setInterval(() => {
      const vm = h.driver.vms[1];
      if (vm) {
        vm.exit(1, null, 'no bootable device');
        clearInterval(failBoot);
      }
    }, 20);
    const { error } = await runStep(waitSshStep, h.ctx);
    clearInterval(failBoot);
    expect(h.said('info')[0]).toMatch(/^installer finished after .+; booting the installed disk$/);
    expect(h.driver.callsTo('startVm')).toHaveLength(2);
    const relaunch = h.driver.callsTo('startVm')[1]![0] as string[];
    expect(relaunch.join(' ')).not.toContain(h.ctx.build.source.iso!);
    expect(h.ctx.state.qemu).toBe(h.driver.vms[1]);
    expect(error).toMatch(/^QEMU exited before SSH came up: no bootable device/);
  });
});

describe("after the login: cloud-init's later stages", () => {
  const cloudInitSource = (wait?: boolean) => ({
    cloud_init: wait === undefined ? {} : { wait },
    communicator: { username: 'kiln', trust_on_first_use: true },
  });

  it('cloud_init.wait false: provisioning starts at once, nothing is asked of the guest', async () => {
    const h = stepContext({ source: cloudInitSource(false) });
    const ssh = new FakeSsh(() => ({ exitCode: 0 }));
    await waitForCloudInit(h.ctx, ssh.session, performance.now());
    expect(ssh.commands).toEqual([]);
    expect(h.said('debug')).toContain(
      "not waiting for cloud-init's later stages (cloud_init.wait: false): provisioning starts now",
    );
  });

  it('cloud_init.wait true (the default): one `cloud-init status --wait --long` through sudo, then its errors decide', async () => {
    const h = stepContext({ source: cloudInitSource() });
    expect(h.ctx.build.source.cloud_init !== false && h.ctx.build.source.cloud_init.wait).toBe(true);
    const ssh = new FakeSsh(() => ({ exitCode: 0, stdout: 'status: done\n' }));
    await waitForCloudInit(h.ctx, ssh.session, performance.now());
    expect(ssh.commands).toHaveLength(1);
    expect(ssh.commands[0]!.command).toBe(
      "sudo -n sh -c 'command -v cloud-init >/dev/null || exit 0\ncloud-init status --wait --long'",
    );
    expect(h.said('debug').at(-1)).toMatch(/^cloud-init done after /);

    // Where kiln's seed skipped the later stages: a shell waits for the init stage's end, no Python.
    const skipped = stepContext({ source: cloudInitSource() });
    skipped.ctx.state.cloudInitLaterStagesSkipped = true;
    const skippedSsh = new FakeSsh(() => ({ exitCode: 0, stdout: 'status: done\n' }));
    await waitForCloudInit(skipped.ctx, skippedSsh.session, performance.now());
    expect(skippedSsh.commands).toHaveLength(1);
    expect(skippedSsh.commands[0]!.command).toContain('cloud_init_final_wait ||');
    expect(skippedSsh.commands[0]!.command).not.toContain('status --wait');

    const recoverable = stepContext({ source: cloudInitSource(true) });
    await waitForCloudInit(
      recoverable.ctx,
      // The dots --wait printed while it waited are not part of the message.
      new FakeSsh(() => ({ exitCode: 2, stdout: '...\nstatus: done\nerrors: [x]\n' })).session,
      performance.now(),
    );
    expect(recoverable.said('warn')).toEqual([
      'cloud-init finished with recoverable errors:\nstatus: done\nerrors: [x]',
    ]);

    const failed = stepContext({ source: cloudInitSource(true) });
    await expect(
      waitForCloudInit(
        failed.ctx,
        new FakeSsh(() => ({ exitCode: 1, stdout: 'status: error\n' })).session,
        performance.now(),
      ),
    ).rejects.toThrow('cloud-init failed in the guest (exit 1):\nstatus: error');
  });

  it('cloud_init false: no cloud-init to wait for', async () => {
    const h = stepContext();
    const ssh = new FakeSsh();
    await waitForCloudInit(h.ctx, ssh.session, performance.now());
    expect(ssh.commands).toEqual([]);
  });
});
