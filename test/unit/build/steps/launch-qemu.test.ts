// The launch step against the fake driver: the accelerator, the SSH forward's port (free, pinned, taken),
// QEMU's start and QMP, QEMU dying at start, and the cleanup that stops whichever QEMU is current.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { launchQemuStep } from '../../../../src/build/steps/launch-qemu.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import type { FakeVm } from '../../../helpers/fake-driver.js';
import { httpServerStep } from '../../../../src/build/steps/http-server.js';
import { createDiskStep } from '../../../../src/build/steps/create-disk.js';
import { runSteps } from '../../../../src/build/runner.js';

afterAll(removeStepDirs);

function harness(o: Parameters<typeof stepContext>[0] = {}) {
  const h = stepContext(o);
  h.ctx.state.disk = { path: path.join(h.ctx.state.workDir, 'disk.qcow2'), format: 'qcow2', virtualSize: 1 << 30 };
  return h;
}
const hostfwd = (argv: unknown) => (argv as string[]).find((a) => a.includes('hostfwd='));

describe('launch QEMU', () => {
  it('checks QEMU, picks the accelerator and a free port, starts QEMU and connects QMP', async () => {
    // memory_prealloc's auto looks at this host's free memory: the test says what it wants.
    const h = harness({ source: { memory_prealloc: false } });
    const { error, cleanup } = await runStep(launchQemuStep, h.ctx);
    expect(error).toBeUndefined();
    expect(h.driver.methods()).toEqual([
      'requireQemu',
      'chooseAccelerator',
      'pinnedSshPorts',
      'freePort',
      'startVm',
      'connectQmp',
    ]);
    const [argv, opts] = h.driver.callsTo('startVm')[0]!;
    expect(hostfwd(argv)).toContain('hostfwd=tcp:127.0.0.1:40000-:22');
    expect(opts).toEqual({ cwd: h.ctx.state.workDir, arch: 'x86_64' });
    expect(h.driver.callsTo('connectQmp')[0]).toEqual([path.join(h.ctx.state.workDir, 'qmp.sock'), 15_000]);
    const st = h.ctx.state;
    expect(st).toMatchObject({
      accelerator: 'tcg',
      sshHostPort: 40000,
      installing: false,
      serialLog: path.join(st.workDir, 'serial.log'),
    });
    expect(st.qemu).toBe(h.driver.vms[0]);
    expect(st.qmp).toBe(h.driver.qmps[0]);
    expect(h.said('info').at(-1)).toBe(
      'QEMU started (tcg, CPU model qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt, 2 vCPU, 1024 MiB, ssh on 127.0.0.1:40000)',
    );
    expect(st.cpuModel).toBe('qemu64,+ssse3,+sse4.1,+sse4.2,+popcnt');

    // The cleanup closes QMP and stops the VM.
    await cleanup!();
    expect(h.driver.qmps[0]!.closed).toBe(true);
    expect(h.driver.vms[0]!.killed).toEqual([3000]);
  });

  it('memory_prealloc: true starts QEMU with -mem-prealloc and says so; the decision holds for the build', async () => {
    const h = harness({ source: { memory_prealloc: true } });
    const { error, cleanup } = await runStep(launchQemuStep, h.ctx);
    expect(error).toBeUndefined();
    const [argv] = h.driver.callsTo('startVm')[0]!;
    expect(argv as string[]).toContain('-mem-prealloc');
    expect(h.said('info').at(-1)).toMatch(/, 2 vCPU, 1024 MiB allocated up front, ssh on /);
    expect(h.ctx.state.memoryPrealloc).toBe(true);
    await cleanup!();
  });

  it('a QEMU that exits at start fails the step with its message and command line; nothing is left running', async () => {
    const h = harness();
    h.driver.vmScript = () => ({
      exitAtStart: { code: 1, signal: null, stderr: 'qemu-system-x86_64: -m 512: bad memory' },
    });
    const { error } = await runStep(launchQemuStep, h.ctx);
    expect(error).toMatch(
      /^QEMU exited at start \(code 1\): qemu-system-x86_64: -m 512: bad memory\n  command: qemu-system-x86_64 .*-name unit/,
    );
    expect(h.driver.vms).toHaveLength(1);
    expect(h.driver.vms[0]!.hasExited).toBe(true);
  });

  it('a forward port taken between choosing it and QEMU binding it is retried with another port, three times at most', async () => {
    const h = harness();
    h.driver.vmScript = (_argv, i) =>
      i < 2 ? { exitAtStart: { code: 1, signal: null, stderr: 'Could not set up host forwarding rule' } } : undefined;
    expect((await runStep(launchQemuStep, h.ctx)).error).toBeUndefined();
    expect(h.driver.vms.map((vm) => hostfwd(vm.argv)!.match(/127\.0\.0\.1:(\d+)/)![1])).toEqual([
      '40000',
      '40001',
      '40002',
    ]);
    expect(h.ctx.state.sshHostPort).toBe(40002);

    const always = harness();
    always.driver.vmScript = () => ({
      exitAtStart: { code: 1, signal: null, stderr: 'Could not set up host forwarding rule' },
    });
    const { error } = await runStep(launchQemuStep, always.ctx);
    expect(error).toBe(
      'QEMU could not bind the SSH forward: ports 40000, 40001, 40002 on 127.0.0.1 were taken each time between kiln choosing them and QEMU starting\n  fix: something on this host is grabbing ports; retry, or pin a range with KILN_SSH_HOST_PORTS',
    );
  });

  it('pinned ports: a busy one is skipped with a warning; none free is an error naming the setting', async () => {
    const h = harness();
    h.driver.pinned = { ports: [2222, 2223], spec: '2222-2223', setting: 'KILN_SSH_HOST_PORTS' };
    h.driver.busyPorts.add(2222);
    expect((await runStep(launchQemuStep, h.ctx)).error).toBeUndefined();
    expect(h.ctx.state.sshHostPort).toBe(2223);
    expect(h.said('warn')).toEqual(['port 2222 on 127.0.0.1 is in use; trying the next port of KILN_SSH_HOST_PORTS']);
    expect(h.driver.callsTo('freePort')).toEqual([]);

    const full = harness();
    full.driver.pinned = { ports: [2222], spec: '2222', setting: 'KILN_SSH_HOST_PORTS' };
    full.driver.busyPorts.add(2222);
    expect((await runStep(launchQemuStep, full.ctx)).error).toBe(
      'no free port for the SSH forward in KILN_SSH_HOST_PORTS=2222: 2222 on 127.0.0.1 is in use\n  fix: stop what listens there, widen KILN_SSH_HOST_PORTS, or unset it to let kiln pick a free port',
    );
    expect(full.driver.vms).toEqual([]);
  });

  it('a missing QEMU or an accelerator that does not work stops the step before anything starts', async () => {
    const h = harness();
    h.driver.fail(
      'requireQemu',
      new Error('qemu-system-x86_64 not found: /x (set by KILN_QEMU) does not exist or is not executable'),
    );
    expect((await runStep(launchQemuStep, h.ctx)).error).toMatch(/^qemu-system-x86_64 not found/);
    const k = harness({ source: { accelerator: 'kvm' } });
    k.driver.fail(
      'chooseAccelerator',
      new Error('accelerator "kvm" does not work on this host: /dev/kvm does not exist'),
    );
    expect((await runStep(launchQemuStep, k.ctx)).error).toMatch(/^accelerator "kvm" does not work/);
    expect(k.driver.callsTo('chooseAccelerator')[0]![0]).toBe('kvm');
    for (const x of [h, k]) expect(x.driver.callsTo('startVm')).toEqual([]);
  });

  it('without an SSH communicator there is no forward, and no port is asked for', async () => {
    const h = harness({ source: { communicator: { type: 'none' }, iso: undefined } });
    expect((await runStep(launchQemuStep, h.ctx)).error).toBeUndefined();
    expect(h.driver.methods()).not.toContain('freePort');
    expect(hostfwd(h.driver.callsTo('startVm')[0]![0])).toBeUndefined();
    expect(h.ctx.state.sshHostPort).toBeUndefined();
  });

  it('an interrupt while QMP connects kills the VM and fails with the interrupt', async () => {
    const h = harness();
    h.driver.connectQmp = async () => {
      setTimeout(() => h.abort.abort(new Error('interrupted by SIGINT')), 5);
      return new Promise(() => undefined);
    };
    expect((await runStep(launchQemuStep, h.ctx)).error).toBe('interrupted by SIGINT');
    expect((h.driver.vms[0] as FakeVm).killed).toEqual([500]);
  });

  it('in a build: a later step fails, and the cleanups run in reverse (QEMU stopped before the HTTP server closes)', async () => {
    const h = stepContext({
      state: { base: { path: '/b.qcow2', format: 'qcow2', sha256: 'a', source: 'b', kind: 'disk' } },
    });
    const order: string[] = [];
    const failing = {
      name: 'provision',
      async run() {
        throw new Error('provisioner 1: exited with 2');
      },
    };
    const r = await runSteps([createDiskStep, httpServerStep, launchQemuStep, failing], h.ctx);
    expect(r).toMatchObject({ ok: false, failedStep: 'provision', kept: false });
    for (const e of h.events) if (e.type === 'cleanup') order.push(e.step);
    expect(order).toEqual(['launch QEMU', 'start HTTP server']);
    expect(h.driver.vms[0]!.killed).toEqual([3000]);
    expect(h.events.find((e) => e.type === 'step-error')).toMatchObject({
      step: 'provision',
      error: 'provisioner 1: exited with 2',
    });
  });
});
