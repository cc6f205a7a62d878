// The provision step with the layer cache, against the fake driver: cached provisioners are skipped
// with an event, a new cacheable one is run and its disk frozen live through the driver (after a sync
// in the guest) and queued for the store, and a retried step resumes after the provisioners done.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { provisionStep } from '../../../../src/build/steps/provision.js';
import { cleanGuestStep } from '../../../../src/build/steps/clean-guest.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';

afterAll(removeStepDirs);

function provisioning(cachedCount: number, options: Parameters<typeof stepContext>[0] = {}) {
  const h = stepContext({
    ...options,
    build: {
      provisioners: [
        { type: 'shell-local', inline: ['echo first'] },
        { type: 'shell-local', inline: ['echo second'] },
      ],
    },
  });
  const published: unknown[][] = [];
  const metas: { guestProxy?: boolean }[] = [];
  const store = {
    publish: async (...a: unknown[]) => {
      published.push(a.slice(0, 3));
      metas.push(a[3] as { guestProxy?: boolean });
      return { size: 42 };
    },
  };
  h.ctx.state.layers = {
    store: store as never,
    rootKey: 'root',
    cachedCount,
    rootBacking: { name: 'base-abc.qcow2', format: 'qcow2' },
    publishing: Promise.resolve(),
    plan: [
      { index: 0, key: 'k1', description: 'shell-local' },
      { index: 1, key: 'k2', description: 'shell-local' },
    ] as never,
  };
  h.ctx.state.disk = { path: path.join(h.ctx.state.workDir, 'disk.qcow2'), format: 'qcow2', virtualSize: 1 << 30 };
  h.ctx.state.qmp = { execute: async <T>() => ({}) as T, close: () => undefined };
  const ssh = new FakeSsh();
  h.ctx.state.ssh = ssh.session;
  return { h, ssh, published, metas };
}

describe('provision', () => {
  it("leaves the last provisioner's leftovers to the clean-up's root shell; earlier ones go at once", async () => {
    const { h, ssh } = provisioning(0);
    h.ctx.state.layers = undefined;
    // The shell provisioner's record of what it left in the guest (ProvisionerState).
    const st = h.ctx.state as typeof h.ctx.state & { guestLeftovers?: string[] };
    st.guestLeftovers = ['/tmp/kiln-1.sh'];
    // The second provisioner's script, recorded as the first one's leftovers go.
    const reply = ssh as unknown as { commands: { command: string }[] };
    const original = ssh.session.exec.bind(ssh.session);
    (ssh.session as { exec: typeof original }).exec = async (command, io) => {
      if (command === "rm -f '/tmp/kiln-1.sh'") st.guestLeftovers = ['/tmp/kiln-2.sh'];
      return original(command, io);
    };
    expect((await runStep(provisionStep, h.ctx)).error).toBeUndefined();
    expect(reply.commands.map((c) => c.command)).toEqual(["rm -f '/tmp/kiln-1.sh'"]);
    expect(st.guestLeftovers).toEqual(['/tmp/kiln-2.sh']);
    h.ctx.build.source.shutdown_command = 'poweroff'; // the clean-up's shell then ends with its script
    expect((await runStep(cleanGuestStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands[1]!.stdin).toMatch(/^rm -f '\/tmp\/kiln-2.sh'\nset -u\n/);
    expect(st.guestLeftovers).toEqual([]);
  });

  it('skips the cached provisioner, runs the next, freezes its disk through the driver and queues the layer', async () => {
    const { h, ssh, published, metas } = provisioning(1);
    const first = h.ctx.state.disk!.path;
    expect((await runStep(provisionStep, h.ctx)).error).toBeUndefined();
    expect(h.events.map((e) => e.type).filter((t) => t.startsWith('provisioner'))).toEqual([
      'provisioner-cached',
      'provisioner-start',
      'provisioner-end',
    ]);
    expect(ssh.commands.map((c) => c.command)).toEqual(['sync']);
    const overlay = path.join(h.ctx.state.workDir, 'disk-2.qcow2');
    // The overlay is made beside the guest's sync; the switch to it is QMP alone.
    expect(h.driver.callsTo('createSnapshotOverlay')).toEqual([[first, overlay, 1 << 30]]);
    expect(h.driver.callsTo('snapshotActiveDisk')).toEqual([[overlay, 'kiln-layer-2']]);
    expect(h.ctx.state.disk!.path).toBe(overlay);
    await h.ctx.state.layers!.publishing;
    expect(published).toEqual([['k2', first, { name: 'k1.qcow2', format: 'qcow2' }]]);
    // An ordinary build's layer holds no package proxy of kiln's: a rebuild on it skips taking one out.
    expect(metas.map((m) => m.guestProxy)).toEqual([false]);
    expect(h.events.find((e) => e.type === 'layer-saved')).toMatchObject({ key: 'k2', size: 42 });
    expect(h.ctx.state.provisionersDone).toBe(2);
  });

  it("a --record/--offline build's layers say their guest holds kiln's package proxy", async () => {
    const { h, metas } = provisioning(1, {
      options: {
        airgap: {
          proxyHostPort: 40123,
          guestProxy: { ip: '10.0.2.100', port: 3128 },
          offline: false,
          httpIp: '10.0.2.101',
        },
      },
    });
    expect((await runStep(provisionStep, h.ctx)).error).toBeUndefined();
    await h.ctx.state.layers!.publishing;
    expect(metas.map((m) => m.guestProxy)).toEqual([true]);
  });

  it('a retried step resumes after the provisioners already done', async () => {
    const { h } = provisioning(0);
    h.ctx.state.provisionersDone = 1;
    await runStep(provisionStep, h.ctx);
    expect(h.events.filter((e) => e.type === 'provisioner-start').map((e) => (e as { index: number }).index)).toEqual([
      1,
    ]);
  });

  it('a failed snapshot fails the step and the disk stays the one QEMU writes', async () => {
    const { h } = provisioning(1);
    const disk = h.ctx.state.disk!.path;
    h.driver.fail('snapshotActiveDisk', new Error('QMP blockdev-snapshot: GenericError: locked'));
    expect((await runStep(provisionStep, h.ctx)).error).toBe('QMP blockdev-snapshot: GenericError: locked');
    expect(h.ctx.state.disk!.path).toBe(disk);
    expect(h.ctx.state.provisionersDone).toBe(1);
  });

  it("an overlay qemu-img could not make fails the step after the guest's sync ended; nothing is frozen", async () => {
    const { h, ssh } = provisioning(1);
    const disk = h.ctx.state.disk!.path;
    h.driver.fail('createSnapshotOverlay', new Error('qemu-img create: No space left on device'));
    expect((await runStep(provisionStep, h.ctx)).error).toBe('qemu-img create: No space left on device');
    expect(ssh.commands.map((c) => c.command)).toEqual(['sync']);
    expect(h.driver.callsTo('snapshotActiveDisk')).toEqual([]);
    expect(h.ctx.state.disk!.path).toBe(disk);
  });

  it('a failing provisioner fails the step with its label and exit', async () => {
    const h = stepContext({ build: { provisioners: [{ type: 'shell-local', inline: ['exit 3'] }] } });
    expect((await runStep(provisionStep, h.ctx)).error).toMatch(/exited with 3/);
    expect(h.driver.callsTo('snapshotActiveDisk')).toEqual([]);
  });
});
