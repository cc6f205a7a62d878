// The package-list step over a fake SSH session: dpkg's list parsed into the state; a failure is a warning.
import { afterAll, describe, expect, it } from 'vitest';
import { sbomStep } from '../../../../src/build/steps/sbom.js';
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
    expect(h.ctx.state.sbom).toBeUndefined();
    expect(h.said('warn')[0]).toMatch(/^could not list the guest's packages: .+exited with 127$/);
  });

  it('applies to SSH builds only', () => {
    expect(sbomStep.enabled!(stepContext({ source: { communicator: { type: 'none' } } }).ctx)).toBe(false);
  });
});
