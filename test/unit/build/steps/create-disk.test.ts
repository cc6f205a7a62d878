// The create-disk step against the fake driver: an overlay on the base (grown to disk_size), a blank
// disk for an ISO install, an overlay on the deepest cached layer, and a disk_size that would shrink.
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createDiskStep } from '../../../../src/build/steps/create-disk.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);
const GiB = 2 ** 30;

describe('create disk', () => {
  it('puts a qcow2 overlay on the base image, its size when disk_size is not given', async () => {
    const h = stepContext({
      state: { base: { path: '/images/base.img', format: 'raw', sha256: 'a', source: 'base.img', kind: 'disk' } },
    });
    h.driver.images.set('/images/base.img', { format: 'raw', virtualSize: 2 * GiB });
    expect((await runStep(createDiskStep, h.ctx)).error).toBeUndefined();
    const disk = path.join(h.ctx.state.workDir, 'disk.qcow2');
    expect(h.driver.callsTo('createOverlay')).toEqual([['/images/base.img', 'raw', disk, undefined]]);
    expect(h.ctx.state.disk).toEqual({ path: disk, format: 'qcow2', virtualSize: 2 * GiB });
  });

  it('grows the overlay to disk_size', async () => {
    const h = stepContext({
      source: { disk_size: '4G' },
      state: { base: { path: '/b.qcow2', format: 'qcow2', sha256: 'a', source: 'b', kind: 'disk' } },
    });
    h.driver.images.set('/b.qcow2', { virtualSize: 2 * GiB });
    await runStep(createDiskStep, h.ctx);
    expect(h.driver.callsTo('createOverlay')[0]![3]).toBe(4 * GiB);
    expect(h.ctx.state.disk!.virtualSize).toBe(4 * GiB);
  });

  it('refuses a disk_size smaller than the base, naming both sizes and the fix, and creates nothing', async () => {
    const h = stepContext({
      source: { disk_size: '1G' },
      state: { base: { path: '/b.qcow2', format: 'qcow2', sha256: 'a', source: 'b', kind: 'disk' } },
    });
    h.driver.images.set('/b.qcow2', { virtualSize: 2 * GiB });
    const { error } = await runStep(createDiskStep, h.ctx);
    expect(error).toMatch(
      /^disk_size 1(\.0)? GiB is smaller than the base image \(2(\.0)? GiB\); shrinking would destroy data\n  fix: set disk_size to at least 2(\.0)? GiB or leave it out$/,
    );
    expect(h.driver.callsTo('createOverlay')).toEqual([]);
    expect(h.ctx.state.disk).toBeUndefined();
  });

  it('makes a blank disk of disk_size for an ISO install', async () => {
    const h = stepContext({
      source: { base_image: undefined, iso: '$base', disk_size: '3G' },
      state: { base: { path: '/i.iso', format: 'raw', sha256: 'a', source: 'i', kind: 'iso' } },
    });
    await runStep(createDiskStep, h.ctx);
    expect(h.driver.methods()).toEqual(['createBlank']);
    expect(h.ctx.state.disk).toEqual({
      path: path.join(h.ctx.state.workDir, 'disk.qcow2'),
      format: 'qcow2',
      virtualSize: 3 * GiB,
    });
  });

  it('resumes on the deepest cached layer', async () => {
    const store = { layerFile: (key: string) => `/cache/layers/${key}.qcow2` };
    const h = stepContext({
      state: {
        base: { path: '/b.qcow2', format: 'qcow2', sha256: 'a', source: 'b', kind: 'disk' },
        layers: { store, plan: [{ key: 'k1' }, { key: 'k2' }, { key: 'k3' }], cachedCount: 2 } as never,
      },
    });
    await runStep(createDiskStep, h.ctx);
    expect(h.driver.callsTo('createOverlay')[0]!.slice(0, 2)).toEqual(['/cache/layers/k2.qcow2', 'qcow2']);
  });

  it('passes a qemu-img failure on as it is', async () => {
    const h = stepContext({
      state: { base: { path: '/b.qcow2', format: 'qcow2', sha256: 'a', source: 'b', kind: 'disk' } },
    });
    h.driver.fail('createOverlay', new Error('creating overlay x failed: Permission denied'));
    expect((await runStep(createDiskStep, h.ctx)).error).toBe('creating overlay x failed: Permission denied');
    expect(h.ctx.state.disk).toBeUndefined();
  });
});
