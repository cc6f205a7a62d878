// The layer cache step with cache.vm_state: a saved VM after the last cached layer is the restore
// point, and, as a restored guest did not boot, an upload into /tmp ending the cached chain is not run
// again; without a state the step falls back to the booted rule. Not for UEFI (its variable store is a file).
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layerCacheStep } from '../../../../src/build/steps/layer-cache.js';
import { LayerStore } from '../../../../src/cache/layers.js';
import { publishVmState, vmStateTemp } from '../../../../src/cache/vm-states.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('check layer cache with cache.vm_state', () => {
  async function cachedUpload(withState: boolean, source: Record<string, unknown> = {}) {
    const first = stepContext({ options: { noCache: false }, build: {} });
    const upload = path.join(first.dir, 'upload.bin');
    writeFileSync(upload, 'payload');
    const build = {
      cache: { vm_state: true },
      provisioners: [
        { type: 'file', source: upload, destination: '/tmp/upload.bin' },
        { type: 'shell', inline: ['use /tmp/upload.bin'] },
      ],
    };
    const plan = stepContext({ options: { noCache: false }, build, source });
    plan.ctx.state.base = {
      path: plan.ctx.build.source.base_image!,
      format: 'qcow2',
      sha256: 'c'.repeat(64),
      source: 'base',
      kind: 'disk',
    };
    await (
      await runStep(layerCacheStep, plan.ctx)
    ).cleanup!();
    const key = plan.ctx.state.layers!.plan[0]!.key!;
    const store = new LayerStore(plan.ctx.options.cacheDir, plan.driver);
    const frozen = path.join(plan.dir, 'frozen.qcow2');
    writeFileSync(frozen, 'a layer');
    const root = await store.ensureBase(plan.ctx.build.source.base_image!, 'c'.repeat(64), 'qcow2');
    await store.publish(
      key,
      frozen,
      { name: root, format: 'qcow2' },
      { parent: null, build: 'unit', template: 'unit.yaml', provisioner: 1, description: 'file' },
    );
    if (withState) {
      const tmp = vmStateTemp(store.dir, key);
      writeFileSync(tmp, 'ram');
      await publishVmState(store.dir, tmp, { key, qemuVersion: '7.2.22', shape: [], saveMs: 1 });
    }
    const h = stepContext({ options: { noCache: false, cacheDir: plan.ctx.options.cacheDir }, build, source });
    h.ctx.state.base = plan.ctx.state.base;
    const r = await runStep(layerCacheStep, h.ctx);
    expect(r.error).toBeUndefined();
    await r.cleanup!();
    return { h, key };
  }

  it('a VM saved after the /tmp upload: restored from there, the upload is not run again', async () => {
    const { h, key } = await cachedUpload(true);
    expect(h.ctx.state.layers).toMatchObject({ cachedCount: 1, vmState: true, restoreFrom: key });
  });

  it('no saved VM: the layer boots, so the upload into /tmp runs again (as without vm_state)', async () => {
    const { h } = await cachedUpload(false);
    expect(h.ctx.state.layers).toMatchObject({ cachedCount: 0, vmState: true });
    expect(h.ctx.state.layers!.restoreFrom).toBeUndefined();
  });

  it('firmware: uefi: states are neither saved nor restored, and the build says so', async () => {
    const { h } = await cachedUpload(true, { firmware: 'uefi' });
    expect(h.ctx.state.layers).toMatchObject({ cachedCount: 0, vmState: false });
    expect(h.said('warn')).toContain(
      'layer cache: cache.vm_state is not used for firmware: uefi; layers hold disks only',
    );
  });
});
