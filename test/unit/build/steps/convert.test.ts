// The convert step against the fake driver: one qemu-img convert per output into the staging
// directory, each checked and measured through the driver and digested; a failed check and
// clashing names fail the step; a VHD gets its disk grown to a whole MiB first.
import { createHash } from 'node:crypto';
import { mkdirSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { convertStep } from '../../../../src/build/steps/convert.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

function converting(outputs: unknown[]) {
  const h = stepContext({ build: { outputs } });
  const staging = path.join(h.dir, 'staging');
  mkdirSync(staging);
  h.ctx.state.stagingDir = staging;
  h.ctx.state.disk = { path: '/w/disk.qcow2', format: 'qcow2', virtualSize: 1 << 30 };
  h.driver.onConvert = (dst, format) => writeFileSync(dst, `image in ${format}`);
  return { h, staging };
}

describe('convert disk', () => {
  it('writes each output from the disk, checks, measures and digests it', async () => {
    const { h, staging } = converting([{ format: 'qcow2' }, { format: 'raw' }]);
    expect((await runStep(convertStep, h.ctx)).error).toBeUndefined();
    const converts = h.driver.callsTo('convert').map((a) => a.slice(0, 4));
    expect(converts).toEqual([
      ['/w/disk.qcow2', 'qcow2', path.join(staging, 'unit.qcow2'), 'qcow2'],
      ['/w/disk.qcow2', 'qcow2', path.join(staging, 'unit.raw'), 'raw'],
    ]);
    expect(h.driver.callsTo('check').map((a) => a[0])).toContain(path.join(staging, 'unit.qcow2'));
    const qcow2 = h.ctx.state.artifacts[0]!;
    expect(qcow2).toMatchObject({
      name: 'unit.qcow2',
      format: 'qcow2',
      size: 'image in qcow2'.length,
      virtualSize: 1 << 30,
    });
    expect(qcow2.sha256).toBe(createHash('sha256').update('image in qcow2').digest('hex'));
    expect(h.events.filter((e) => e.type === 'progress').map((e) => (e as { percent: number }).percent)).toContain(100);
  });

  it('an output that fails qemu-img check fails the step with its report', async () => {
    const { h, staging } = converting([{ format: 'qcow2' }]);
    h.driver.badImages.set(path.join(staging, 'unit.qcow2'), 'ERROR cluster 4 refcount=0 reference=1');
    expect((await runStep(convertStep, h.ctx)).error).toBe(
      'qemu-img check failed for unit.qcow2:\nERROR cluster 4 refcount=0 reference=1',
    );
  });

  it('two outputs of one name are refused before anything is converted', async () => {
    // The loader refuses this too; the step checks again, as outputs may come from elsewhere (the API).
    const { h } = converting([{ format: 'qcow2' }]);
    h.ctx.build.outputs.push({ ...h.ctx.build.outputs[0]! });
    expect((await runStep(convertStep, h.ctx)).error).toBe(
      'two outputs would both write unit.qcow2\n  fix: give one of them a different "name"',
    );
    expect(h.driver.callsTo('convert')).toEqual([]);
  });

  it('a VHD output grows a disk that is not a whole MiB first, with a warning', async () => {
    const { h } = converting([{ format: 'vhd' }]);
    h.driver.images.set('/w/disk.qcow2', { virtualSize: (1 << 30) + 512 });
    await runStep(convertStep, h.ctx);
    expect(h.driver.callsTo('resize')).toEqual([['/w/disk.qcow2', 'qcow2', (1 << 30) + (1 << 20)]]);
    expect(h.said('warn')).toEqual(['disk grown to a whole MiB for the VHD output (Azure requires it)']);
  });

  it('a full disk names the output, where it was staged and the fix', async () => {
    const { h, staging } = converting([{ format: 'qcow2' }]);
    h.driver.fail(
      'convert',
      new Error('converting to qcow2 failed: qemu-img: error while writing at byte 0: No space left on device'),
    );
    const { error } = await runStep(convertStep, h.ctx);
    expect(error).toMatch(
      new RegExp(
        `^disk full \\(ENOSPC\\) while writing ${h.ctx.build.output_directory}/unit.qcow2 \\(staged as ${staging}/unit.qcow2, on a file system of .+\\); the partial output is removed\\n  fix: free space`,
      ),
    );
  });
});
