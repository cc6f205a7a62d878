// The package-list step over a fake SSH session: dpkg's list parsed into the state; a failure is a warning;
// the list runs beside the steps after it, and the build waits for it before the guest shuts down.
import { afterAll, describe, expect, it } from 'vitest';
import { spawnSync } from 'node:child_process';
import { listPackagesScript, sbomStep } from '../../../../src/build/steps/sbom.js';
import { guestScript } from '../../../../src/util/guest-scripts.js';
import { guestReadsDone } from '../../../../src/build/state.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';

afterAll(removeStepDirs);

describe('list guest packages', () => {
  it("records the guest's packages, sorted", async () => {
    const h = stepContext();
    h.ctx.state.ssh = new FakeSsh(() => ({
      exitCode: 0,
      stdout: '#dpkg\nzlib1g\t1:1.2.13\tamd64\nbash\t5.2\tamd64\n',
    })).session;
    expect((await runStep(sbomStep, h.ctx)).error).toBeUndefined();
    await guestReadsDone(h.ctx.state);
    expect(h.ctx.state.sbom).toEqual({
      recordedAt: expect.any(String),
      kilnVersion: expect.any(String),
      manager: 'dpkg',
      packages: [
        { name: 'bash', version: '5.2', arch: 'amd64' },
        { name: 'zlib1g', version: '1:1.2.13', arch: 'amd64' },
      ],
    });
    expect(h.driver.calls).toEqual([]);
  });

  it('a guest that cannot list its packages still builds, with a warning', async () => {
    const h = stepContext();
    h.ctx.state.ssh = new FakeSsh(() => ({ exitCode: 127 })).session;
    expect((await runStep(sbomStep, h.ctx)).error).toBeUndefined();
    await guestReadsDone(h.ctx.state);
    expect(h.ctx.state.sbom).toBeUndefined();
    expect(h.said('warn')[0]).toMatch(/^could not list the guest's packages: .+exited with 127$/);
  });

  it('returns while the guest lists its packages; the wait before shut-down and its clean-up end when the list is in', async () => {
    const h = stepContext();
    let answer!: () => void;
    const answered = new Promise<void>((resolve) => (answer = resolve));
    h.ctx.state.ssh = new FakeSsh(async () => {
      await answered;
      return { exitCode: 0, stdout: '#dpkg\nbash\t5.2\tamd64\tinstalled\n' };
    }).session;
    const { error, cleanup } = await runStep(sbomStep, h.ctx);
    expect(error).toBeUndefined();
    expect(h.ctx.state.sbom).toBeUndefined();
    const done = guestReadsDone(h.ctx.state);
    answer();
    await done;
    expect(h.ctx.state.sbom?.packages).toEqual([{ name: 'bash', version: '5.2', arch: 'amd64' }]);
    expect(h.ctx.state.timings['package list (beside the clean-up and trim)']).toBeGreaterThanOrEqual(0);
    await cleanup?.();
  });

  it('an interrupted list says nothing and the wait ends', async () => {
    const h = stepContext();
    h.ctx.state.ssh = new FakeSsh(() => {
      h.abort.abort();
      throw new Error('interrupted');
    }).session;
    await runStep(sbomStep, h.ctx);
    await guestReadsDone(h.ctx.state);
    expect(h.said('warn')).toEqual([]);
  });

  it('applies to SSH builds only', () => {
    expect(sbomStep.enabled!(stepContext({ source: { communicator: { type: 'none' } } }).ctx)).toBe(false);
  });

  it("on a cloud-init guest the list first waits for cloud-init's last stage (it runs beside the clean-up)", () => {
    const withWait = listPackagesScript(true);
    expect(spawnSync('sh', ['-n'], { input: withWait }).status).toBe(0);
    expect(withWait.indexOf('cloud_init_final_wait || true')).toBeGreaterThan(
      withWait.indexOf('cloud_init_final_wait() {'),
    );
    expect(withWait.endsWith(guestScript('list-packages'))).toBe(true);
    expect(listPackagesScript(false)).toBe(guestScript('list-packages'));
  });
});
