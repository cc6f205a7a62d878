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
import { LayerStore } from '../../cache/layers.js';
import { artifactKey, planLayers, resumePoint, sourceKey } from '../../cache/layer-keys.js';
import type { Manifest } from '../../artifacts/manifest.js';

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

export const layerCacheStep: Step = {
  name: 'check layer cache',
  enabled: (ctx) => !ctx.options.noCache,
  async run(ctx) {
    const base = need(ctx.state, 'base');
    const store = new LayerStore(ctx.options.cacheDir, ctx.driver);
    for (const f of store.removeStaleTemp()) ctx.log(`layer cache: removed ${f}, left by a kiln process that no longer exists`, 'warn');
    const rootKey = await sourceKey(ctx.build, base.sha256);
    const plan = await planLayers(ctx.build, rootKey);
    const finalKey = await artifactKey(ctx.build, rootKey, plan);

    const reusable = finalKey ? reusableOutput(ctx, store, finalKey) : undefined;
    if (reusable) {
      ctx.state.upToDate = true;
      ctx.state.artifacts = reusable.artifacts.map((a) => ({ name: a.name, path: a.path, format: a.format, size: a.size, virtualSize: a.virtual_size, sha256: a.sha256, sha512: a.sha512, compression: a.compression }));
      ctx.log(`up to date: ${ctx.build.output_directory} was built from exactly these inputs (artifact key ${short(finalKey!)}); nothing to do`);
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
    const resumeAt = resumePoint(plan, cachedCount);
    if (resumeAt < cachedCount) {
      const again = plan.slice(resumeAt, cachedCount).map((l) => `${l.index + 1} (${l.description})`).join(', ');
      ctx.log(`provisioner ${again} runs again: it uploads into a directory the guest empties at boot, and a later provisioner may need the file`);
      cachedCount = resumeAt;
    }
    const cachedKeys = plan.slice(0, cachedCount).map((l) => l.key!);
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

    const willPublish = plan.slice(cachedCount).some((l) => l.key);
    const rootBacking = willPublish && cachedCount === 0 && base.kind === 'disk'
      ? { name: await store.ensureBase(base.path, base.sha256, base.format), format: base.format }
      : null;
    const layers = { store, rootKey, plan, cachedCount, rootBacking, artifactKey: finalKey, publishing: Promise.resolve() };
    ctx.state.layers = layers;
    return async () => {
      await layers.publishing;
      release();
    };
  },
};
