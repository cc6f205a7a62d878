// The fetch step for a local base image against the fake driver: checksum checked, the image checked
// through the driver before QEMU boots it (boot sector required unless the build boots a kernel), its
// warnings passed on; an ISO is not checked as a disk.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { fetchBaseStep } from '../../../../src/build/steps/fetch-base.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('fetch base image', () => {
  it('checks a local image through the driver and records its format and digest', async () => {
    const h = stepContext();
    h.driver.baseImage = { format: 'raw', warnings: ['base image has 3 leaked clusters'] };
    expect((await runStep(fetchBaseStep, h.ctx)).error).toBeUndefined();
    const file = h.ctx.build.source.base_image!;
    expect(h.driver.callsTo('checkBaseImage')).toEqual([[file, { bootSectorRequired: true }]]);
    const sha256 = createHash('sha256').update(readFileSync(file)).digest('hex');
    expect(h.ctx.state.base).toEqual({ path: file, format: 'raw', sha256, source: file, kind: 'disk' });
    expect(h.said('warn')).toEqual(['base image has 3 leaked clusters']);
  });

  it('a build that boots a kernel does not need a boot sector', async () => {
    const h = stepContext({ source: { qemu_args: [['-kernel', '/boot/vmlinuz']] } });
    await runStep(fetchBaseStep, h.ctx);
    expect(h.driver.callsTo('checkBaseImage')[0]![1]).toEqual({ bootSectorRequired: false });
  });

  it('a wrong checksum fails before the image is looked at, naming both digests and the fix', async () => {
    const h = stepContext({ source: { checksum: `sha256:${'0'.repeat(64)}` } });
    const { error } = await runStep(fetchBaseStep, h.ctx);
    expect(error).toMatch(
      new RegExp(
        `^checksum mismatch for .+base\\.qcow2: expected sha256:0{64}, got sha256:[0-9a-f]{64}\\n  fix: the file changed or the checksum is wrong; correct "checksum" or use "none"$`,
      ),
    );
    expect(h.driver.calls).toEqual([]);
    expect(h.ctx.state.base).toBeUndefined();
  });

  it("the driver's verdict on a damaged image fails the step as it is", async () => {
    const h = stepContext();
    h.driver.fail('checkBaseImage', new Error('base image x is damaged: truncated'));
    expect((await runStep(fetchBaseStep, h.ctx)).error).toBe('base image x is damaged: truncated');
    expect(h.ctx.state.base).toBeUndefined();
  });

  it('an installer ISO is recorded as raw install media, not checked as a disk', async () => {
    const h = stepContext({ source: { base_image: undefined, iso: '$base', disk_size: '1G' } });
    await runStep(fetchBaseStep, h.ctx);
    expect(h.driver.calls).toEqual([]);
    expect(h.ctx.state.base).toMatchObject({ format: 'raw', kind: 'iso' });
  });
});
