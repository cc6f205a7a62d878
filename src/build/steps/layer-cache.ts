/**
 * Step: consult the layer cache. Computes every provisioner's layer key, finds the deepest chain of
 * cached layers that is intact (digest-checked; a damaged layer is removed and rebuilt), and notices
 * when the finished artifacts of an identical build are still in place, in which case the build is up
 * to date and nothing boots. Its cleanup waits for layers still being copied into the store.
 */
import { existsSync, readFileSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { need } from '../state.js';
import type { PlannedLayer } from '../../cache/layer-keys.js';
import { LayerStore } from '../../cache/layers.js';
import { artifactKey, finalLayerKey, planLayers, resumePoint, sourceKey } from '../../cache/layer-keys.js';
import type { Manifest } from '../../artifacts/manifest.js';
import { describeProvisioner } from '../../template/provisioners.js';
import { layerCaptureTiming } from '../layer-capture.js';
import { readVmStateMeta } from '../../cache/vm-states.js';
import { usesUefi } from '../../template/schema.js';

const short = (key: string) => key.slice(0, 12);

/** The earlier build's artifacts, if they are exactly what this build would make. */
function reusableOutput(ctx: BuildContext, store: LayerStore, key: string): Manifest | undefined {
  const record = store.artifactRecord(key);
  if (!record || record.outputDirectory !== ctx.build.output_directory || !LayerStore.untouched(record)) return undefined;
  const manifestFile = path.join(ctx.build.output_directory!, 'manifest.json');
  if (!existsSync(manifestFile)) return undefined;
  const manifest = JSON.parse(readFileSync(manifestFile, 'utf8')) as Manifest;
  return manifest.cache?.artifact_key === key ? manifest : undefined;
}

/**
 * The step, given what the finishing steps run in the guest (their scripts are part of the final
 * layer's key; steps/index.ts passes them, as a step does not import another).
 */
export const layerCacheStepFor = (finishingScripts: (ctx: BuildContext) => string[]): Step => ({
  name: 'check layer cache',
  enabled: (ctx) => !ctx.options.noCache,
  async run(ctx) {
    const base = need(ctx.state, 'base');
    const store = new LayerStore(ctx.options.cacheDir, ctx.driver);
    for (const f of store.removeStaleTemp()) ctx.log(`layer cache: removed ${f}, left by a kiln process that no longer exists`, 'warn');
    const rootKey = await sourceKey(ctx.build, base.sha256);
    const plan = await planLayers(ctx.build, rootKey);
    const outputKey = await artifactKey(ctx.build, rootKey, plan);
    // What the finishing steps run is part of the final disk's key: a changed clean-up makes a new one.
    const finalKey = finalLayerKey(ctx.build, rootKey, plan, finishingScripts(ctx));

    const reusable = outputKey ? reusableOutput(ctx, store, outputKey) : undefined;
    if (reusable) {
      ctx.state.upToDate = true;
      ctx.state.artifacts = reusable.artifacts.map((a) => ({ name: a.name, path: a.path, format: a.format, size: a.size, virtualSize: a.virtual_size, sha256: a.sha256, sha512: a.sha512, compression: a.compression }));
      ctx.log(`up to date: ${ctx.build.output_directory} was built from exactly these inputs (artifact key ${short(outputKey!)}); nothing to do`);
      for (const a of ctx.state.artifacts) ctx.events.emit({ type: 'artifact', build: ctx.build.name, path: a.path, format: a.format, size: a.size, sha256: a.sha256, reused: true });
      return;
    }

    // The deepest run of consecutive layers the store holds, each checked against its digest.
    let cachedCount = 0;
    while (cachedCount < plan.length && plan[cachedCount]!.key && store.meta(plan[cachedCount]!.key!)) {
      const key = plan[cachedCount]!.key!;
      const check = await store.verify(key);
      if (!check.ok) {
        const removed = store.remove(key);
        ctx.log(`layer cache: layer ${short(key)} (provisioner ${plan[cachedCount]!.index + 1}) is damaged: ${check.problem}; removed it${removed.length > 1 ? ` and ${removed.length - 1} layer(s) built on it` : ''}, rebuilding from there`, 'warn');
        break;
      }
      cachedCount++;
    }
    // A VM restored from its saved state did not boot: what a provisioner left in /tmp is still there.
    const vmState = savesVmState(ctx);
    const restorable = (n: number) => vmState && n > 0 && readVmStateMeta(store.dir, plan[n - 1]!.key!) !== undefined;
    const resumeAt = restorable(cachedCount) ? cachedCount : resumePoint(plan, cachedCount);
    if (resumeAt < cachedCount) {
      const again = plan.slice(resumeAt, cachedCount).map((l) => `${l.index + 1} (${l.description})`).join(', ');
      ctx.log(`provisioner ${again} runs again: it uploads into a directory the guest empties at boot, and a later provisioner may need the file`);
      cachedCount = resumeAt;
    }
    const cachedKeys = plan.slice(0, cachedCount).map((l) => l.key!);

    // Every provisioner cached and the final disk too: nothing needs the guest, the outputs are made from it.
    if (finalKey && cachedCount === plan.length && store.meta(finalKey)?.final) {
      const check = await store.verify(finalKey);
      if (check.ok) return convertFromFinalLayer(ctx, store, { rootKey, plan, finalKey, outputKey, cachedKeys });
      store.remove(finalKey);
      ctx.log(`layer cache: the final layer ${short(finalKey)} is damaged: ${check.problem}; removed it, booting the last layer for the final steps`, 'warn');
    }

    ctx.state.resumedFromLayer = cachedCount > 0;
    for (const k of cachedKeys) store.touch(k);
    const release = store.claim(cachedKeys);

    const next = plan[cachedCount];
    if (cachedCount > 0) {
      ctx.log(next
        ? `provisioners ${cachedCount === 1 ? '1' : `1-${cachedCount}`} cached, starting at ${cachedCount + 1} (${next.description})`
        : `all ${cachedCount} provisioner${cachedCount === 1 ? '' : 's'} cached (layer ${short(cachedKeys[cachedCount - 1]!)}); booting it for the final steps`);
    } else if (plan.length && plan[0]!.key) {
      ctx.log('layer cache: nothing cached yet for this build; every provisioner will be saved as a layer', 'debug');
    }
    const uncacheable = plan.find((l) => l.uncacheable && l.uncacheable !== 'an earlier provisioner is not cached');
    if (uncacheable) ctx.log(`layer cache: caching stops at provisioner ${uncacheable.index + 1} (${uncacheable.description}): ${uncacheable.uncacheable}`);

    // The first new layer (a provisioner's, or the final disk's when there is no provisioner) backs onto the base.
    const willPublish = plan.slice(cachedCount).some((l) => l.key) || (plan.length === 0 && finalKey !== undefined);
    const rootBacking = willPublish && cachedCount === 0 && base.kind === 'disk'
      ? { name: await store.ensureBase(base.path, base.sha256, base.format), format: base.format }
      : null;
    const restoreFrom = restorable(cachedCount) ? cachedKeys[cachedCount - 1] : undefined;
    const layers = { store, rootKey, plan, cachedCount, rootBacking, artifactKey: outputKey, finalKey, publishing: Promise.resolve(), vmState, restoreFrom };
    ctx.state.layers = layers;
    return async () => {
      await waitForSaves(ctx, layers);
      release();
    };
  },
});

/**
 * cache.vm_state, where a saved VM can be loaded again as it was: not with UEFI (the firmware's variable
 * store is a file outside the state) nor on --record/--offline's network (its guest forwards are sockets
 * the state would have to match).
 */
function savesVmState(ctx: BuildContext): boolean {
  if (ctx.build.cache?.vm_state !== true) return false;
  const why = usesUefi(ctx.build.source.firmware) ? `firmware: ${ctx.build.source.firmware}` : ctx.build.source.tpm ? 'tpm: true' : ctx.options.airgap ? 'a --record/--offline build' : undefined;
  if (why) ctx.log(`layer cache: cache.vm_state is not used for ${why}; layers hold disks only`, 'warn');
  return !why;
}

/** Without the finishing scripts in the final layer's key (the step tests; steps/index.ts passes them). */
export const layerCacheStep: Step = layerCacheStepFor(() => []);

/** The cleanup's wait for layers still being saved: the part of layer capture the build waited for. */
async function waitForSaves(ctx: BuildContext, layers: { publishing: Promise<void> }): Promise<void> {
  const started = performance.now();
  await layers.publishing;
  const waited = performance.now() - started;
  const background = ctx.state.timings[layerCaptureTiming];
  if (background === undefined) return;
  ctx.state.timings['layer capture (waited for at the end)'] = waited;
  ctx.events.emit({ type: 'layer-capture', build: ctx.build.name, layers: ctx.state.layerSaves ?? 0, ms: background, waitedMs: waited });
}

/**
 * Every provisioner and the final steps are cached: the guest steps are skipped (see convertsFromCache)
 * and the conversion reads the final layer. The store keeps it (claimed) until the build ends.
 */
async function convertFromFinalLayer(ctx: BuildContext, store: LayerStore, o: { rootKey: string; plan: PlannedLayer[]; finalKey: string; outputKey?: string; cachedKeys: string[] }) {
  const meta = store.meta(o.finalKey)!;
  const used = [...o.cachedKeys, o.finalKey];
  for (const k of used) store.touch(k);
  const release = store.claim(used);
  try {
    const layerFile = store.layerFile(o.finalKey);
    let disk = layerFile;
    // The conversion grows its input for a VHD output: give it an overlay, the layer stays as it is.
    if (ctx.build.outputs.some((out) => out.format === 'vhd')) {
      disk = path.join(ctx.state.workDir, 'disk-output.qcow2');
      await ctx.driver.createOverlay(layerFile, 'qcow2', disk, undefined, ctx.signal);
    }
    const { virtualSize } = await ctx.driver.imageInfo(disk, 'qcow2', false, ctx.signal);
    ctx.state.disk = { path: disk, format: 'qcow2', virtualSize };
  } catch (e) {
    release();
    throw e;
  }
  ctx.state.sbom = meta.final?.sbom;
  ctx.state.compaction = meta.final?.compaction;
  ctx.state.accelerator = meta.final?.accelerator as BuildContext['state']['accelerator'];
  ctx.state.resumedFromLayer = true;
  const layers = { store, rootKey: o.rootKey, plan: o.plan, cachedCount: o.plan.length, rootBacking: null, artifactKey: o.outputKey, finalKey: o.finalKey, fromFinalLayer: true, publishing: Promise.resolve() };
  ctx.state.layers = layers;
  const applicable = ctx.build.provisioners.map((p, i) => ({ p, i })).filter(({ i }) => o.plan.some((l) => l.index === i));
  for (const [n, { p, i }] of applicable.entries()) {
    ctx.events.emit({ type: 'provisioner-cached', build: ctx.build.name, index: i, provisioner: describeProvisioner(p), key: o.plan[n]!.key! });
  }
  const n = o.plan.length;
  ctx.log(`${n === 0 ? 'no provisioners;' : `all ${n} provisioner${n === 1 ? '' : 's'} and`} the clean-up cached (layer ${short(o.finalKey)}…); converting without booting`);
  return async () => {
    await layers.publishing;
    release();
  };
}
