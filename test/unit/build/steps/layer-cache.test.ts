// The layer cache step with a real store in a temporary cache directory: disabled by --no-cache;
// an empty cache plans every layer and resumes nowhere; its cleanup waits for layers still being
// copied before it releases the store's claim. With every provisioner and the final disk cached, the
// build converts from that final layer: no guest step runs.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { layerCacheStep } from '../../../../src/build/steps/layer-cache.js';
import { stepsFor } from '../../../../src/build/build.js';
import { convertsFromCache } from '../../../../src/build/state.js';
import { LayerStore } from '../../../../src/cache/layers.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

const provisioners = [
  { type: 'shell', inline: ['echo one'] },
  { type: 'shell', inline: ['echo two'] },
];

describe('check layer cache', () => {
  it('is off with --no-cache', () => {
    expect(layerCacheStep.enabled!(stepContext({ options: { noCache: true } }).ctx)).toBe(false);
    expect(layerCacheStep.enabled!(stepContext({ options: { noCache: false } }).ctx)).toBe(true);
  });

  it('an empty cache: every provisioner planned with a key, nothing cached, no driver call', async () => {
    const h = stepContext({ options: { noCache: false }, build: { provisioners } });
    h.ctx.state.base = {
      path: h.ctx.build.source.base_image!,
      format: 'qcow2',
      sha256: 'a'.repeat(64),
      source: 'base',
      kind: 'disk',
    };
    const { error, cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(error).toBeUndefined();
    const layers = h.ctx.state.layers!;
    expect(layers.cachedCount).toBe(0);
    expect(layers.plan.map((l) => Boolean(l.key))).toEqual([true, true]);
    expect(h.ctx.state.plan!.resume).toEqual({ kind: 'fresh' });
    expect(h.driver.calls).toEqual([]);

    // The cleanup waits for the layers being copied.
    let copied = false;
    layers.publishing = new Promise((resolve) =>
      setTimeout(() => {
        copied = true;
        resolve();
      }, 20),
    );
    h.ctx.state.timings['layer capture (background)'] = 30;
    h.ctx.state.layerSaves = 1;
    await cleanup!();
    expect(copied).toBe(true);
    // The breakdown: how long saves took in the background, and how much of it the build waited for.
    const capture = h.events.find((e) => e.type === 'layer-capture') as {
      layers: number;
      ms: number;
      waitedMs: number;
    };
    expect(capture).toMatchObject({ layers: 1, ms: 30 });
    expect(capture.waitedMs).toBeGreaterThan(0);
    expect(h.ctx.state.timings['layer capture (waited for at the end)']).toBe(capture.waitedMs);
  });
});

describe('check layer cache: the final layer', () => {
  const base = (h: ReturnType<typeof stepContext>) => ({
    path: h.ctx.build.source.base_image!,
    format: 'qcow2',
    sha256: 'b'.repeat(64),
    source: 'base',
    kind: 'disk' as const,
  });
  const sbom = { manager: 'dpkg' as const, packages: [{ name: 'jq', version: '1.6', arch: 'amd64' }] };

  /** A cache holding both provisioners' layers and, unless told otherwise, the final disk. */
  async function filledCache(o: { final?: boolean } = {}) {
    const plan = stepContext({ options: { noCache: false }, build: { provisioners } });
    plan.ctx.state.base = base(plan);
    const first = await runStep(layerCacheStep, plan.ctx);
    await first.cleanup!();
    const { plan: layers, finalKey } = plan.ctx.state.layers!;
    expect(finalKey).toMatch(/^[0-9a-f]{64}$/);
    const cacheDir = plan.ctx.options.cacheDir;
    const store = new LayerStore(cacheDir, plan.driver);
    const frozen = path.join(plan.dir, 'frozen.qcow2');
    writeFileSync(frozen, 'a layer');
    const rootName = await store.ensureBase(plan.ctx.build.source.base_image!, 'b'.repeat(64), 'qcow2');
    const meta = { build: 'unit', template: 'unit.yaml', description: 'shell' };
    await store.publish(
      layers[0]!.key!,
      frozen,
      { name: rootName, format: 'qcow2' },
      { ...meta, parent: null, provisioner: 1 },
    );
    await store.publish(
      layers[1]!.key!,
      frozen,
      { name: `${layers[0]!.key}.qcow2`, format: 'qcow2' },
      { ...meta, parent: layers[0]!.key!, provisioner: 2 },
    );
    if (o.final !== false) {
      await store.publish(
        finalKey!,
        frozen,
        { name: `${layers[1]!.key}.qcow2`, format: 'qcow2' },
        {
          ...meta,
          parent: layers[1]!.key!,
          provisioner: 0,
          final: { sbom, compaction: { beforeBytes: 9, afterBytes: 5 }, accelerator: 'tcg' },
        },
      );
    }
    return { cacheDir, store, plan: layers, finalKey: finalKey! };
  }

  it('every provisioner and the final disk cached: converts from it, the guest steps are off, the layers are claimed until the end', async () => {
    const cache = await filledCache();
    const h = stepContext({ options: { noCache: false, cacheDir: cache.cacheDir }, build: { provisioners } });
    h.ctx.state.base = base(h);
    const { error, cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(error).toBeUndefined();
    expect(convertsFromCache(h.ctx)).toBe(true);
    expect(h.ctx.state.disk).toEqual({
      path: cache.store.layerFile(cache.finalKey),
      format: 'qcow2',
      virtualSize: 1 << 30,
    });
    expect(h.ctx.state.sbom).toEqual(sbom);
    expect(h.ctx.state.compaction).toEqual({ beforeBytes: 9, afterBytes: 5 });
    expect(h.ctx.state.accelerator).toBe('tcg');
    expect(h.events.filter((e) => e.type === 'provisioner-cached').map((e) => (e as { index: number }).index)).toEqual([
      0, 1,
    ]);
    expect(h.said('info')).toContain(
      `all 2 provisioners and the clean-up cached (layer ${cache.finalKey.slice(0, 12)}…); converting without booting`,
    );
    expect(h.driver.methods()).toEqual(['imageInfo']);
    const active = stepsFor(h.ctx)
      .filter((s) => s.enabled?.(h.ctx) ?? true)
      .map((s) => s.name);
    expect(active).toEqual([
      'fetch base image',
      'check layer cache',
      'prepare output directory',
      'convert disk',
      'write manifest and commit output',
    ]);
    // Claimed: the store's garbage collection leaves the final layer and its chain alone.
    expect(cache.store.inUse()).toEqual(new Set([cache.finalKey, ...cache.plan.map((l) => l.key!)]));
    await cleanup!();
    expect(cache.store.inUse().size).toBe(0);
  });

  it('a VHD output gets an overlay on the final layer (the conversion may grow it), never the layer itself', async () => {
    const cache = await filledCache();
    const h = stepContext({
      options: { noCache: false, cacheDir: cache.cacheDir },
      build: { provisioners, outputs: [{ format: 'vhd' }] },
    });
    h.ctx.state.base = base(h);
    const { cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(convertsFromCache(h.ctx)).toBe(true);
    expect(h.ctx.state.disk!.path).toBe(path.join(h.ctx.state.workDir, 'disk-output.qcow2'));
    expect(h.driver.callsTo('createOverlay')[0]!.slice(0, 3)).toEqual([
      cache.store.layerFile(cache.finalKey),
      'qcow2',
      h.ctx.state.disk!.path,
    ]);
    await cleanup!();
  });

  it('without the final layer, or with a damaged one, boots the last layer as before', async () => {
    const cache = await filledCache({ final: false });
    const h = stepContext({ options: { noCache: false, cacheDir: cache.cacheDir }, build: { provisioners } });
    h.ctx.state.base = base(h);
    let run = await runStep(layerCacheStep, h.ctx);
    expect(convertsFromCache(h.ctx)).toBe(false);
    expect(h.ctx.state.layers!.cachedCount).toBe(2);
    expect(
      stepsFor(h.ctx)
        .filter((s) => s.enabled?.(h.ctx) ?? true)
        .map((s) => s.name),
    ).toContain('launch QEMU');
    await run.cleanup!();

    const damaged = await filledCache();
    writeFileSync(damaged.store.layerFile(damaged.finalKey), 'not what was digested');
    const d = stepContext({ options: { noCache: false, cacheDir: damaged.cacheDir }, build: { provisioners } });
    d.ctx.state.base = base(d);
    run = await runStep(layerCacheStep, d.ctx);
    expect(convertsFromCache(d.ctx)).toBe(false);
    expect(d.said('warn')[0]).toMatch(
      new RegExp(`final layer ${damaged.finalKey.slice(0, 12)} is damaged: digest mismatch`),
    );
    expect(damaged.store.meta(damaged.finalKey)).toBeUndefined();
    await run.cleanup!();
  });

  it('an uncached provisioner: no final layer, every guest step runs', async () => {
    const h = stepContext({
      options: { noCache: false },
      build: { provisioners: [...provisioners, { type: 'shell', inline: ['date'], cache: false }] },
    });
    h.ctx.state.base = base(h);
    const { cleanup } = await runStep(layerCacheStep, h.ctx);
    expect(h.ctx.state.layers!.finalKey).toBeUndefined();
    expect(convertsFromCache(h.ctx)).toBe(false);
    await cleanup!();
  });
});
