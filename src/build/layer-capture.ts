/**
 * Saving a layer into the store off the critical path: the copy, digest and rename are queued behind
 * the layers already being saved (a layer backs onto the one before it), while the build goes on. The
 * layer-cache step's cleanup waits for the queue at the end of the build. Each save reports a
 * `layer-saved` event with its duration, and adds it to the build's "layer capture (background)" timing.
 */
import type { BuildContext } from './state.js';
import { need } from './state.js';
import type { LayerMeta } from '../cache/layers.js';

/** The build timing that sums the time layer saves took, in the background. */
export const layerCaptureTiming = 'layer capture (background)';

export interface LayerSave {
  key: string;
  /** A disk image QEMU no longer writes. */
  frozen: string;
  backing: { name: string; format: string } | null;
  meta: Omit<LayerMeta, 'key' | 'backing' | 'sha256' | 'size' | 'created'>;
  /** Index of the provisioner in build.provisioners, for the event (-1 for the final disk). */
  index: number;
  sshKey?: string;
  /** What to say if the save fails ("the layer after provisioner 2"). */
  what: string;
}

export function queueLayerSave(ctx: BuildContext, save: LayerSave): void {
  const layers = need(ctx.state, 'layers');
  const queued = performance.now();
  const frozenAt = Date.now();
  layers.publishing = layers.publishing.then(async () => {
    if (layers.foreignParent) {
      ctx.log(
        `layer cache: not saving ${save.what}: it would back onto layer ${layers.foreignParent.slice(0, 12)}, which another build saved at the same time from a disk that differs from this build's`,
        'debug',
      );
      return;
    }
    const started = performance.now();
    try {
      const meta = await layers.store.publish(save.key, save.frozen, save.backing, save.meta, ctx.signal, save.sshKey);
      // Another build published this warm base first: a guest booted on its own writes its disk in other
      // blocks (logs, seeds, the journal), and this build's next layers are deltas against its own copy,
      // so those are not saved (the next build makes them on the published one).
      if (save.meta.warmBase && Date.parse(meta.created) < frozenAt - 1000) layers.foreignParent = save.key;
      const ms = performance.now() - started;
      ctx.state.timings[layerCaptureTiming] = (ctx.state.timings[layerCaptureTiming] ?? 0) + ms;
      ctx.state.layerSaves = (ctx.state.layerSaves ?? 0) + 1;
      ctx.events.emit({
        type: 'layer-saved',
        build: ctx.build.name,
        index: save.index,
        key: save.key,
        size: meta.size,
        ms,
        queuedMs: started - queued,
        ...(save.meta.final ? { final: true } : {}),
        ...(save.meta.warmBase ? { warmBase: true } : {}),
      });
      await layers.afterSave?.(meta);
    } catch (e) {
      // The build itself is fine; only a later rebuild loses this shortcut.
      if (!ctx.signal.aborted) ctx.log(`layer cache: could not save ${save.what}: ${(e as Error).message}`, 'warn');
    }
  });
}
