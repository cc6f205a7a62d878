/**
 * Step: the build disk: a qcow2 overlay on the base image (the base is never written), grown to
 * disk_size with its root partition (when kiln can be sure which it is); or, for an ISO install, a
 * blank disk of disk_size.
 */
import path from 'node:path';
import type { Step } from '../step.js';
import { need, type BuildContext } from '../state.js';
import { gptHeadBytes, growRootPartition } from '../../qemu/gpt.js';
import { userDataConfiguresGrowpart } from '../../cloudinit/seed.js';
import { formatBytes } from '../../template/units.js';
import { KilnError } from '../../util/errors.js';

export const createDiskStep: Step = {
  name: 'create disk',
  async run(ctx) {
    const base = need(ctx.state, 'base');
    const disk = path.join(ctx.state.workDir, 'disk.qcow2');
    const layers = ctx.state.layers;
    if (layers && layers.cachedCount > 0) {
      // Resume on the deepest cached layer; its size already is the build's disk size (part of its key).
      const layer = layers.store.layerFile(layers.plan[layers.cachedCount - 1]!.key!);
      await ctx.driver.createOverlay(layer, 'qcow2', disk);
      ctx.state.disk = {
        path: disk,
        format: 'qcow2',
        virtualSize: (await ctx.driver.imageInfo(disk, 'qcow2')).virtualSize,
      };
      return;
    }
    const media = ctx.build.source.media;
    if (media.kind === 'iso') {
      // The installer partitions this blank disk (disk_size, which an ISO source must have).
      const size = media.diskSize;
      await ctx.driver.createBlank(disk, size);
      ctx.state.disk = { path: disk, format: 'qcow2', virtualSize: size };
      return;
    }
    const baseInfo = await ctx.driver.imageInfo(base.path, base.format);
    const wanted = ctx.build.source.disk_size;
    if (wanted !== undefined && wanted < baseInfo.virtualSize) {
      throw new KilnError(
        `disk_size ${formatBytes(wanted)} is smaller than the base image (${formatBytes(baseInfo.virtualSize)}); shrinking would destroy data`,
        { fix: `set disk_size to at least ${formatBytes(baseInfo.virtualSize)} or leave it out` },
      );
    }
    const grown = wanted && wanted > baseInfo.virtualSize ? wanted : undefined;
    await ctx.driver.createOverlay(base.path, base.format, disk, grown);
    ctx.state.disk = { path: disk, format: 'qcow2', virtualSize: grown ?? baseInfo.virtualSize };
    if (grown) await growRootOnHost(ctx, disk, baseInfo.virtualSize, grown);
  },
};

/**
 * Grows the root partition into the larger disk before the first boot, where cloud-init would (its
 * growpart: 2.6-3.3 s of the Debian fixture's path to sshd under TCG). Only for guests whose seed is
 * kiln's to write (growpart is then turned off in it) and whose template leaves growpart alone;
 * a table this cannot be sure of is left to cloud-init, as before.
 */
async function growRootOnHost(ctx: BuildContext, disk: string, oldSize: number, newSize: number): Promise<void> {
  const ci = ctx.build.source.cloud_init;
  if (ci === false || userDataConfiguresGrowpart(ci.user_data)) return;
  const r = growRootPartition(await ctx.driver.readStart(disk, 'qcow2', gptHeadBytes, ctx.signal), oldSize, newSize);
  if ('skipped' in r) {
    ctx.log(`disk: the root partition is left to cloud-init's growpart: ${r.skipped}`, 'debug');
    return;
  }
  // Backup table first: until the primary is rewritten the disk still reads as the base's.
  await ctx.driver.writeBytes(disk, 'qcow2', [...r.grown.writes].reverse(), ctx.signal);
  ctx.state.rootPartitionGrown = true;
  ctx.log(
    `disk: grew partition ${r.grown.partition} to the end of the ${formatBytes(newSize)} disk (cloud-init's growpart is turned off for the build; resizefs grows the filesystem)`,
    'debug',
  );
}
