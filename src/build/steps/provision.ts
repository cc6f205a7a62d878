/**
 * Step: run the build's provisioners in order. With the layer cache, provisioners the cached chain
 * covers are skipped, and after each cacheable one succeeds the disk below the guest is frozen (live,
 * no reboot) and copied into the store in the background while the next provisioner runs.
 */
import path from 'node:path';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { need } from '../state.js';
import { appliesTo, describeProvisioner, runProvisioner } from '../../provisioners/index.js';
import { removeGuestLeftovers, sshSession, takeGuestLeftovers } from '../../provisioners/context.js';
import { queueLayerSave } from '../layer-capture.js';
import { freezeLayer } from '../vm-state.js';
import { settleAll } from '../../util/settle.js';
import { guestCleanUpRuns } from '../guest-finishing.js';

/**
 * A guest without cloud-init cannot take a new key when a later build boots this layer, so a key kiln
 * generated is kept with the layer (in the private store) and that build logs in with it.
 */
function keyToKeepWithLayer(ctx: BuildContext): string | undefined {
  const comm = ctx.build.source.communicator;
  if (comm.type !== 'ssh' || comm.private_key_file || ctx.build.source.cloud_init !== false) return undefined;
  return ctx.state.buildKey?.privateKey;
}

/** Freezes the disk as it is after plan[position] and queues its copy into the layer store. */
async function captureLayer(ctx: BuildContext, position: number): Promise<void> {
  const layers = need(ctx.state, 'layers');
  const planned = layers.plan[position]!;
  const disk = need(ctx.state, 'disk');
  if (ctx.build.source.communicator.type === 'none') {
    ctx.log(
      `layer cache: not saving provisioner ${planned.index + 1}: without a communicator kiln cannot flush the guest's writes first`,
      'debug',
    );
    return;
  }
  // Data the guest still holds in its page cache would be missing from the frozen image. The
  // provisioner's own files leave first, in the same command (one process start instead of two).
  const leftovers = takeGuestLeftovers(ctx.state);
  const frozen = disk.path;
  const overlay = path.join(ctx.state.workDir, `disk-${position + 1}.qcow2`);
  // The overlay the guest's writes go to next is made while the guest syncs (its own process start).
  const created = ctx.driver.createSnapshotOverlay(frozen, overlay, disk.virtualSize, ctx.signal);
  const synced = sshSession(ctx).then((ssh) => ssh.run(leftovers ? `${leftovers}; sync` : 'sync', ctx.signal));
  // Both settle before anything goes on; the guest's failure is the one reported when both fail.
  await settleAll([synced, created]);
  // With cache.vm_state the guest is paused around the freeze and saved beside the layer (build/vm-state.ts).
  const queueVmState = await freezeLayer(ctx, planned.key!, planned.index, () =>
    ctx.driver.snapshotActiveDisk(need(ctx.state, 'qmp'), overlay, `kiln-layer-${position + 1}`),
  );
  ctx.state.disk = { ...disk, path: overlay };

  const parentKey = position > 0 ? layers.plan[position - 1]!.key! : layers.rootParent;
  const backing = position > 0 ? { name: `${parentKey}.qcow2`, format: 'qcow2' } : layers.rootBacking;
  queueLayerSave(ctx, {
    key: planned.key!,
    frozen,
    backing,
    index: planned.index,
    sshKey: keyToKeepWithLayer(ctx),
    what: `the layer after provisioner ${planned.index + 1}`,
    meta: {
      parent: parentKey ?? null,
      build: ctx.build.name,
      template: ctx.template.file,
      provisioner: planned.index + 1,
      description: planned.description,
      // The guest-proxy step put them in before the first provisioner of a --record/--offline build,
      // and took any a cached layer held out before an ordinary build's.
      guestProxy: Boolean(ctx.options.airgap),
    },
  });
  queueVmState();
}

/** Whether provisioner `i` is the last one that applies to this build. */
function isLast(ctx: BuildContext, i: number): boolean {
  return !ctx.build.provisioners.slice(i + 1).some((p) => appliesTo(p, ctx.build.name));
}

export const provisionStep: Step = {
  name: 'provision',
  enabled: (ctx) => ctx.build.provisioners.some((p) => appliesTo(p, ctx.build.name)),
  async run(ctx) {
    const layers = ctx.state.layers;
    let position = 0;
    const list = ctx.build.provisioners;
    for (let i = 0; i < list.length; i++) {
      const p = list[i]!;
      if (!appliesTo(p, ctx.build.name)) continue;
      // A retried step (--on-error=ask) goes on from the provisioner that failed.
      if (position < (ctx.state.provisionersDone ?? 0)) {
        position++;
        continue;
      }
      const planned = layers?.plan[position];
      if (layers && planned && position < layers.cachedCount) {
        ctx.events.emit({
          type: 'provisioner-cached',
          build: ctx.build.name,
          index: i,
          provisioner: describeProvisioner(p),
          key: planned.key!,
        });
        ctx.state.provisionersDone = ++position;
        continue;
      }
      const started = performance.now();
      ctx.events.emit({
        type: 'provisioner-start',
        build: ctx.build.name,
        index: i,
        provisioner: describeProvisioner(p),
      });
      await runProvisioner(ctx, p, i);
      const ms = performance.now() - started;
      ctx.state.timings[`provisioner ${i + 1}`] = ms;
      ctx.events.emit({
        type: 'provisioner-end',
        build: ctx.build.name,
        index: i,
        provisioner: describeProvisioner(p),
        ms,
      });
      if (planned?.key) await captureLayer(ctx, position);
      // What the provisioner left for kiln's next command, when no layer capture took it along; after
      // the last one, the clean-up's root shell removes it when the clean-up runs (one guest command fewer).
      if (!(isLast(ctx, i) && guestCleanUpRuns(ctx))) await removeGuestLeftovers(ctx);
      ctx.state.provisionersDone = ++position;
    }
  },
};
