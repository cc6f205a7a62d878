// The layer cache step with a real store in a temporary cache directory: disabled by --no-cache;
// an empty cache plans every layer and resumes nowhere; its cleanup waits for layers still being
// copied before it releases the store's claim.
import { afterAll, describe, expect, it } from 'vitest';
import { layerCacheStep } from '../../../src/build/steps/layer-cache.js';
import { removeStepDirs, runStep, stepContext } from '../../helpers/step-context.js';

afterAll(removeStepDirs);

const provisioners = [{ type: 'shell', inline: ['echo one'] }, { type: 'shell', inline: ['echo two'] }];

describe('check layer cache', () => {
  it('is off with --no-cache', () => {
    expect(layerCacheStep.enabled!(stepContext({ options: { noCache: true } }).ctx)).toBe(false);
    expect(layerCacheStep.enabled!(stepContext({ options: { noCache: false } }).ctx)).toBe(true);
  });

  it('an empty cache: every provisioner planned with a key, nothing cached, no driver call', async () => {
    const h = stepContext({ options: { noCache: false }, build: { provisioners } });
    h.ctx.state.base = { path: h.ctx.build.source.base_image!, format: 'qcow2', sha256: 'a'.repeat(64), source: 'base', kind: 'disk' };
    const { error, cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(error).toBeUndefined();
    const layers = h.ctx.state.layers!;
    expect(layers.cachedCount).toBe(0);
    expect(layers.plan.map((l) => Boolean(l.key))).toEqual([true, true]);
    expect(h.ctx.state.resumedFromLayer).toBe(false);
    expect(h.ctx.state.upToDate).toBeUndefined();
    expect(h.driver.calls).toEqual([]);

    // The cleanup waits for the layers being copied.
    let copied = false;
    layers.publishing = new Promise((resolve) => setTimeout(() => { copied = true; resolve(); }, 20));
    await cleanup!();
    expect(copied).toBe(true);
  });
});
