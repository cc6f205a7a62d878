/**
 * Step: consult the layer cache. Computes every provisioner's layer key, finds the deepest chain of
 * cached layers that is intact (digest-checked; a damaged layer is removed and rebuilt), and notices
 * when the finished artifacts of an identical build are still in place, in which case the build is up
 * to date and nothing boots. Its cleanup waits for layers still being copied into the store.
 */
import { readFileSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { need } from '../state.js';
import type { PlannedLayer } from '../../cache/layer-keys.js';
import { LayerStore, type LayerMeta } from '../../cache/layers.js';
import { planBuild, type BuildPlan } from '../../cache/plan.js';
import type { Manifest } from '../../artifacts/manifest.js';
import { describeProvisioner } from '../../template/provisioner-kinds/index.js';
import { layerCaptureTiming } from '../layer-capture.js';
import { pullFromRemote, pushToRemote, remoteFor, sharesIntermediate } from '../remote-cache.js';
import type { LayerPlan } from '../state.js';
import { savedVmUnloadable, vmStateSetting, warmBaseUnusable } from '../saved-vm-rules.js';
import { networkFileSystem } from '../../cache/network-fs.js';

const short = (key: string) => key.slice(0, 12);

/** The earlier build's artifacts, as its manifest lists them (the plan found them exactly in place). */
function reusedArtifacts(ctx: BuildContext): BuildContext['state']['artifacts'] {
  const manifest = JSON.parse(readFileSync(path.join(ctx.build.output_directory, 'manifest.json'), 'utf8')) as Manifest;
  return manifest.artifacts.map((a) => ({
    name: a.name,
    path: a.path,
    format: a.format,
    size: a.size,
    virtualSize: a.virtual_size,
    sha256: a.sha256,
    sha512: a.sha512,
    compression: a.compression,
  }));
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
    for (const f of store.removeStaleTemp())
      ctx.log(`layer cache: removed ${f}, left by a kiln process that no longer exists`, 'warn');
    const vmState = savesVmState(ctx);
    const nfs = networkFileSystem(ctx.options.cacheDir);
    if (nfs)
      ctx.log(
        `layer cache: ${ctx.options.cacheDir} is on ${nfs}: kiln's locks hold a pid and work on one host only, so builders on other machines sharing it can corrupt each other's layers\n  fix: give each machine a local KILN_CACHE_DIR and share layers with --cache-remote s3://bucket/prefix`,
        'warn',
      );
    const remote = remoteFor(ctx);
    const planOptions = {
      cacheDir: ctx.options.cacheDir,
      store,
      baseSha256: base.sha256,
      finishingScripts: finishingScripts(ctx),
      verify: true,
      vmState,
      remoteIntermediate: remote !== undefined && sharesIntermediate(ctx, remote),
      signal: ctx.signal,
    };
    let plan = await planBuild(ctx.build, { ...planOptions, remote });
    forgetDamaged(ctx, store, plan);
    // Pulled whole and checked, or not at all: a missed final disk plans again (shared layers may
    // still serve), any other miss plans from what this machine holds.
    for (let tries = 0; remote && tries < 2; tries++) {
      const resume = plan.resume;
      if (resume.kind === 'fresh' || resume.kind === 'upToDate' || resume.source !== 'remote') break;
      if (await pullFromRemote(ctx, store, remote, plan, base)) break;
      plan = await planBuild(
        ctx.build,
        resume.kind === 'fromFinalLayer' ? { ...planOptions, remote, remoteFinal: false } : planOptions,
      );
    }
    ctx.state.plan = plan;
    const { layers: planned, rootKey, artifactKey: outputKey, final } = plan;
    const finalKey = final?.key;

    if (plan.resume.kind === 'upToDate') {
      ctx.state.artifacts = reusedArtifacts(ctx);
      ctx.log(
        `up to date: ${ctx.build.output_directory} was built from exactly these inputs (artifact key ${short(outputKey!)}); nothing to do`,
      );
      for (const a of ctx.state.artifacts)
        ctx.events.emit({
          type: 'artifact',
          build: ctx.build.name,
          path: a.path,
          format: a.format,
          size: a.size,
          sha256: a.sha256,
          reused: true,
        });
      return;
    }
    for (const note of plan.notes) ctx.log(note);
    // Every provisioner cached and the final disk too: nothing needs the guest, the outputs are made from it.
    if (plan.resume.kind === 'fromFinalLayer') {
      // A final disk this machine holds and the remote cache lacks is shared while the outputs are made.
      const share =
        remote && !remote.readonly && plan.resume.source === 'local'
          ? (meta: LayerMeta) => pushToRemote(ctx, store, remote, meta, base).catch(() => undefined)
          : undefined;
      return convertFromFinalLayer(ctx, store, {
        rootKey: rootKey!,
        plan: planned,
        finalKey: finalKey!,
        outputKey,
        share,
      });
    }

    const cachedCount = plan.resume.kind === 'resume' ? plan.resume.at : 0;
    const cachedKeys = planned.slice(0, cachedCount).map((l) => l.key!);
    for (const k of cachedKeys) store.touch(k);
    const release = store.claim(cachedKeys);

    const next = planned[cachedCount];
    if (cachedCount > 0) {
      ctx.log(
        next
          ? `provisioners ${cachedCount === 1 ? '1' : `1-${cachedCount}`} cached, starting at ${cachedCount + 1} (${next.description})`
          : `all ${cachedCount} provisioner${cachedCount === 1 ? '' : 's'} cached (layer ${short(cachedKeys[cachedCount - 1]!)}); booting it for the final steps`,
      );
    } else if (planned.length && planned[0]!.key) {
      ctx.log('layer cache: nothing cached yet for this build; every provisioner will be saved as a layer', 'debug');
    }
    const uncacheable = planned.find((l) => l.uncacheable && l.uncacheable !== 'an earlier provisioner is not cached');
    if (uncacheable)
      ctx.log(
        `layer cache: caching stops at provisioner ${uncacheable.index + 1} (${uncacheable.description}): ${uncacheable.uncacheable}`,
      );

    // The first new layer (a provisioner's, or the final disk's when there is no provisioner) backs onto the base.
    const willPublish =
      planned.slice(cachedCount).some((l) => l.key) || (planned.length === 0 && finalKey !== undefined);
    const warmBase = plan.resume.kind === 'fresh' && usesWarmBase(ctx, remote) ? {} : undefined;
    const rootBacking =
      (willPublish || warmBase) && cachedCount === 0 && base.kind === 'disk'
        ? { name: await store.ensureBase(base.path, base.sha256, base.format), format: base.format }
        : null;
    const restoreFrom = plan.resume.kind === 'resume' && plan.resume.restoreVm ? plan.resume.key : undefined;
    const layers: LayerPlan = {
      store,
      rootKey: rootKey!,
      plan: planned,
      cachedCount,
      rootBacking,
      artifactKey: outputKey,
      finalKey,
      publishing: Promise.resolve(),
      vmState,
      vmStateBeforeLastOnly: vmState && vmStateSetting(ctx.build) === 'before-last',
      restoreFrom,
      warmBase,
      ...(remote && !remote.readonly
        ? { afterSave: (meta: LayerMeta) => pushToRemote(ctx, store, remote, meta, base) }
        : {}),
    };
    ctx.state.layers = layers;
    return async () => {
      await waitForSaves(ctx, layers);
      // After launch QEMU's cleanup (cleanups run in reverse), so no QEMU writes them any more.
      for (const tmp of layers.stateTemps ?? []) rmSync(tmp, { force: true });
      layers.releaseWarmBase?.();
      release();
    };
  },
});

/** Layers the plan found damaged: removed (with what backs onto them), so they are rebuilt. */
function forgetDamaged(ctx: BuildContext, store: LayerStore, plan: BuildPlan): void {
  for (const d of plan.damaged) {
    const removed = store.remove(d.key);
    const at = plan.layers.find((l) => l.key === d.key);
    const what = d.final
      ? `the final layer ${short(d.key)}`
      : `layer ${short(d.key)}${at ? ` (provisioner ${at.index + 1})` : ''}`;
    ctx.log(
      `layer cache: ${what} is damaged: ${d.problem}; removed it${removed.length > 1 ? ` and ${removed.length - 1} layer(s) built on it` : ''}, rebuilding from there`,
      'warn',
    );
  }
}

/**
 * cache.vm_state, where a saved VM can be loaded again as it was (src/build/saved-vm-rules.ts): not with
 * UEFI or a TPM (files outside the state) nor on --record/--offline's network (its forwards are sockets).
 */
function savesVmState(ctx: BuildContext): boolean {
  const setting = vmStateSetting(ctx.build);
  if (setting === false) return false;
  const why = savedVmUnloadable(ctx.build, Boolean(ctx.options.airgap));
  // Asked for in the template: a warning; the default: one line in the debug log.
  if (why)
    ctx.log(
      `layer cache: cache.vm_state is not used for ${why}; layers hold disks only`,
      setting === true ? 'warn' : 'debug',
    );
  return !why;
}

/** cache.boot_snapshot for a build that starts fresh: whether it has a warm base (saved-vm-rules.ts says when). */
function usesWarmBase(ctx: BuildContext, remote: ReturnType<typeof remoteFor>): boolean {
  if (ctx.state.base?.kind !== 'disk') return false;
  const unusable = warmBaseUnusable(ctx.build, {
    airgap: Boolean(ctx.options.airgap),
    sharesIntermediate: remote !== undefined && sharesIntermediate(ctx, remote),
  });
  if (unusable && !unusable.quiet)
    ctx.log(`layer cache: no warm base (cache.boot_snapshot) for ${unusable.why}; the guest boots every build`);
  return !unusable;
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
  ctx.events.emit({
    type: 'layer-capture',
    build: ctx.build.name,
    layers: ctx.state.layerSaves ?? 0,
    ms: background,
    waitedMs: waited,
  });
}

/**
 * Every provisioner and the final steps are cached: the guest steps are skipped (see convertsFromCache)
 * and the conversion reads the final layer. The store keeps it (claimed) until the build ends.
 */
async function convertFromFinalLayer(
  ctx: BuildContext,
  store: LayerStore,
  o: {
    rootKey: string;
    plan: PlannedLayer[];
    finalKey: string;
    outputKey?: string;
    share?: (meta: LayerMeta) => Promise<void>;
  },
) {
  const meta = store.meta(o.finalKey)!;
  const used = [o.finalKey];
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
  const layers: LayerPlan = {
    store,
    rootKey: o.rootKey,
    plan: o.plan,
    cachedCount: o.plan.length,
    rootBacking: null,
    artifactKey: o.outputKey,
    finalKey: o.finalKey,
    publishing: o.share ? o.share(meta) : Promise.resolve(),
  };
  ctx.state.layers = layers;
  const applicable = ctx.build.provisioners
    .map((p, i) => ({ p, i }))
    .filter(({ i }) => o.plan.some((l) => l.index === i));
  for (const [n, { p, i }] of applicable.entries()) {
    ctx.events.emit({
      type: 'provisioner-cached',
      build: ctx.build.name,
      index: i,
      provisioner: describeProvisioner(p),
      key: o.plan[n]!.key!,
    });
  }
  const n = o.plan.length;
  ctx.log(
    `${n === 0 ? 'no provisioners;' : `all ${n} provisioner${n === 1 ? '' : 's'} and`} the clean-up cached (layer ${short(o.finalKey)}…); converting without booting`,
  );
  return async () => {
    await layers.publishing;
    release();
  };
}
