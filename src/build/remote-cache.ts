/**
 * The layer-cache step's use of a shared remote cache (src/cache/remote): pulling a build's final disk
 * (checked by digest, then published into the local store like any layer) and sharing the final disk
 * this build saved, made self-contained on the base image (a copy rebased onto it), or for an ISO
 * build, which has no base image, on nothing (its chain flattened by qemu-img convert). Intermediate
 * layers are disks before kiln's clean-up (what the provisioners wrote is in them): they are shared
 * and pulled only with --cache-remote-intermediate, as a chain whose records name their parents by
 * digest, and never for a guest that only kiln's generated key logs into (that key stays here). VM
 * states hold the guest's RAM and never leave the machine.
 */
import { rmSync, statSync } from 'node:fs';
import path from 'node:path';
import { execa } from 'execa';
import type { BuildContext } from './state.js';
import type { LayerMeta, LayerStore } from '../cache/layers.js';
import type { BuildPlan } from '../cache/plan.js';
import { SELF_CONTAINED, type RemoteCache } from '../cache/remote/protocol.js';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import { formatBytes, formatDuration } from '../template/units.js';

type Base = NonNullable<BuildContext['state']['base']>;
const short = (key: string) => key.slice(0, 12);

/**
 * Whether this build may use the remote cache: names in the store are keyed with the shared secret,
 * and without one a template with sensitive values would put guessable digests of them in the bucket.
 */
export function remoteFor(ctx: BuildContext): RemoteCache | undefined {
  const remote = ctx.options.remoteCache;
  if (!remote) return undefined;
  const sensitive = ctx.template.variables.sensitive.size > 0 || ctx.template.variables.secrets.length > 0;
  if (sensitive && !remote.keyed) {
    ctx.log(
      `remote cache: not used for this build: its template has sensitive values, and without a shared secret the layer names in ${remote.location} could be used to test guesses at them\n  fix: give every builder the same secret file (--cache-remote-secret-file FILE)`,
      'warn',
    );
    return undefined;
  }
  return remote.withLog(ctx.log);
}

/**
 * Pulls what the plan found only remotely (the final disk) into the local store. True when it is
 * there now; false on a miss (already said why), and the build plans again from the local store.
 */
export async function pullFromRemote(
  ctx: BuildContext,
  store: LayerStore,
  remote: RemoteCache,
  plan: BuildPlan,
  base: Base,
): Promise<boolean> {
  if (plan.resume.kind === 'resume') return pullChain(ctx, store, remote, plan, plan.resume.at, base);
  if (plan.resume.kind !== 'fromFinalLayer' || !plan.final) return false;
  const started = performance.now();
  const finalKey = plan.final.key;
  const pulled = await remote.pullChain(
    [{ key: finalKey, kind: 'final' }],
    base.sha256,
    () => path.join(ctx.state.workDir, 'remote-final.qcow2'),
    ctx.signal,
  );
  if (!pulled) {
    ctx.log(
      `remote cache: the final disk ${short(finalKey)} could not be pulled from ${remote.location}; building it here`,
      'warn',
    );
    return false;
  }
  const { record, file } = pulled[0]!;
  try {
    // An ISO build's final disk was shared flattened: it must back onto nothing (a backing file name
    // would point into this store at whatever happens to carry that name).
    if (base.kind === 'iso' && !(await selfContained(ctx, file, record.baseFormat))) {
      ctx.log(
        `remote cache: the final disk ${short(finalKey)} in ${remote.location} is not a self-contained disk, as an ISO build's must be; building it here`,
        'warn',
      );
      return false;
    }
    const backing =
      base.kind === 'iso'
        ? null
        : { name: await store.ensureBase(base.path, base.sha256, base.format), format: base.format };
    await store.publish(
      finalKey,
      file,
      backing,
      {
        parent: null,
        build: ctx.build.name,
        template: ctx.template.file,
        provisioner: 0,
        description: `final disk (from ${remote.location}, built by ${record.builder})`,
        final: record.final,
      },
      ctx.signal,
    );
  } finally {
    rmSync(file, { force: true });
  }
  plan.final.local = true;
  const ms = performance.now() - started;
  ctx.state.timings['remote cache pull'] = ms;
  ctx.log(
    `remote cache: pulled the final disk ${short(finalKey)} (blob ${short(record.digest)}, ${formatBytes(record.size)}, built by ${record.builder}) from ${remote.location} in ${formatDuration(ms)}`,
  );
  return true;
}

/**
 * After a layer was saved locally: shares it when it is the final disk. The copy is rebased onto the
 * base image in the store (so it needs no layer below it), uploaded, read back and checked; only then
 * is the record written. A failure is a warning: the build itself is fine.
 */
export async function pushToRemote(
  ctx: BuildContext,
  store: LayerStore,
  remote: RemoteCache,
  meta: LayerMeta,
  base: Base,
): Promise<void> {
  if (remote.readonly) return;
  if (!meta.final) {
    if (!sharesIntermediate(ctx, remote)) return;
    await shareLayer(ctx, store, remote, meta.key, base).catch((e: Error) => {
      if (ctx.signal.aborted) throw e;
      ctx.log(`remote cache: could not share layer ${short(meta.key)} to ${remote.location}: ${e.message}`, 'warn');
    });
    return;
  }
  if (!(await remote.lacks(meta.key, 'final', ctx.signal))) {
    ctx.log(`remote cache: ${remote.location} holds the final disk ${short(meta.key)} already`, 'debug');
    return;
  }
  const started = performance.now();
  // In the store, so the layer's store-relative backing names resolve; swept as .tmp-<pid> if kiln dies.
  const tmp = path.join(store.dir, `${meta.key}.remote.tmp-${process.pid}`);
  try {
    if (base.kind === 'iso') {
      // An installed disk backs onto no image another builder has: its whole chain, flattened.
      await ctx.driver.convert(store.layerFile(meta.key), 'qcow2', tmp, 'qcow2', { signal: ctx.signal });
    } else {
      await execa(...diesWithKiln('cp', ['--sparse=always', '--reflink=auto', store.layerFile(meta.key), tmp]), {
        cancelSignal: ctx.signal,
      });
      const baseName = await store.ensureBase(base.path, base.sha256, base.format);
      await ctx.driver.rebase(tmp, { name: baseName, format: base.format }, ctx.signal);
    }
    ctx.log(
      `remote cache: sharing the final disk ${short(meta.key)} (${formatBytes(statSync(tmp).size)}, ${base.kind === 'iso' ? 'the installed disk and all, self-contained' : 'self-contained on the base image'}) to ${remote.location}`,
    );
    const record = await remote.push(
      meta.key,
      'final',
      tmp,
      {
        parent: null,
        // An ISO build's record names the ISO, which its key already digests; its blob backs onto nothing.
        base: base.sha256,
        baseFormat: base.kind === 'iso' ? SELF_CONTAINED : base.format,
        final: meta.final,
        description: meta.description,
      },
      ctx.signal,
    );
    const ms = performance.now() - started;
    ctx.state.timings['remote cache push'] = ms;
    ctx.log(
      `remote cache: shared the final disk ${short(meta.key)} (blob ${short(record.digest)}, ${formatBytes(record.size)}) to ${remote.location} in ${formatDuration(ms)}`,
    );
  } catch (e) {
    if (!ctx.signal.aborted)
      ctx.log(
        `remote cache: could not share the final disk ${short(meta.key)} to ${remote.location}: ${(e as Error).message}`,
        'warn',
      );
    else throw e;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Whether a pulled blob backs onto nothing, as its record says (`SELF_CONTAINED`) and the file confirms. */
async function selfContained(ctx: BuildContext, file: string, baseFormat: string): Promise<boolean> {
  if (baseFormat !== SELF_CONTAINED) return false;
  const info = await ctx.driver.imageInfo(file, 'qcow2', false, ctx.signal).catch(() => undefined);
  return info !== undefined && !info.backingFile;
}

/**
 * Intermediate layers are usable by another builder only when it can log into them: a guest with
 * cloud-init takes the new build's key, a communicator key file is the user's own; a key kiln
 * generated for a guest without cloud-init exists only in this machine's store.
 */
export function sharesIntermediate(ctx: BuildContext, remote: RemoteCache): boolean {
  const comm = ctx.build.source.communicator;
  return (
    remote.sharesIntermediate &&
    ctx.state.base?.kind === 'disk' &&
    (ctx.build.source.cloud_init !== false || (comm.type === 'ssh' && comm.private_key_file !== undefined))
  );
}

/** The name a shared intermediate layer's backing file has in the store: its parent's key stays here. */
const neutralParent = 'parent.qcow2';

/** Blob digests of this build's layers as shared (local key -> digest), so a child names its parent. */
const sharedDigests = new WeakMap<BuildContext, Map<string, string>>();

/**
 * Shares an intermediate layer and, first, the layers under it the remote cache lacks: each a copy
 * whose backing file is renamed to a neutral name (the base's, or "parent.qcow2"), its record naming
 * the parent's blob by digest. Returns the layer's blob digest.
 */
export async function shareLayer(
  ctx: BuildContext,
  store: LayerStore,
  remote: RemoteCache,
  key: string,
  base: Base,
): Promise<string> {
  let digests = sharedDigests.get(ctx);
  if (!digests) sharedDigests.set(ctx, (digests = new Map()));
  const known = digests.get(key);
  if (known) return known;
  const meta = store.meta(key);
  if (!meta) throw new Error(`layer ${short(key)} is not in the store`);
  const parent = meta.parent ? await shareLayer(ctx, store, remote, meta.parent, base) : null;
  const baseName = await store.ensureBase(base.path, base.sha256, base.format);
  const tmp = path.join(store.dir, `${key}.remote.tmp-${process.pid}`);
  try {
    await execa(...diesWithKiln('cp', ['--sparse=always', '--reflink=auto', store.layerFile(key), tmp]), {
      cancelSignal: ctx.signal,
    });
    await ctx.driver.rebaseUnsafe(
      tmp,
      { name: parent ? neutralParent : baseName, format: parent ? 'qcow2' : base.format },
      ctx.signal,
    );
    const started = performance.now();
    const record = await remote.push(
      key,
      'layer',
      tmp,
      { parent, base: base.sha256, baseFormat: base.format, description: meta.description },
      ctx.signal,
    );
    ctx.log(
      `remote cache: shared the layer after provisioner ${meta.provisioner} (${short(key)}, blob ${short(record.digest)}, ${formatBytes(record.size)}) in ${formatDuration(performance.now() - started)}`,
    );
    digests.set(key, record.digest);
    return record.digest;
  } finally {
    rmSync(tmp, { force: true });
  }
}

/** Pulls layers 1..at as one chain consistent by digest and publishes them into the store, bottom first. */
async function pullChain(
  ctx: BuildContext,
  store: LayerStore,
  remote: RemoteCache,
  plan: BuildPlan,
  at: number,
  base: Base,
): Promise<boolean> {
  if (base.kind !== 'disk' || !sharesIntermediate(ctx, remote)) return false;
  const started = performance.now();
  const keys = plan.layers.slice(0, at).map((l) => ({ key: l.key!, kind: 'layer' as const }));
  const pulled = await remote.pullChain(
    keys,
    base.sha256,
    (i) => path.join(ctx.state.workDir, `remote-layer-${i}.qcow2`),
    ctx.signal,
  );
  if (!pulled) {
    ctx.log(
      `remote cache: the layers up to provisioner ${plan.layers[at - 1]!.index + 1} could not be pulled from ${remote.location}; building them here`,
      'warn',
    );
    return false;
  }
  try {
    const baseName = await store.ensureBase(base.path, base.sha256, base.format);
    for (const [i, { record, file }] of pulled.entries()) {
      const layer = plan.layers[i]!;
      const parent = i > 0 ? plan.layers[i - 1]!.key! : null;
      await store.publish(
        layer.key!,
        file,
        parent ? { name: `${parent}.qcow2`, format: 'qcow2' } : { name: baseName, format: base.format },
        {
          parent,
          build: ctx.build.name,
          template: ctx.template.file,
          provisioner: layer.index + 1,
          description: `${layer.description} (from ${remote.location}, built by ${record.builder})`,
        },
        ctx.signal,
      );
      layer.local = true;
    }
  } finally {
    for (const { file } of pulled) rmSync(file, { force: true });
  }
  const ms = performance.now() - started;
  ctx.state.timings['remote cache pull'] = ms;
  ctx.log(
    `remote cache: pulled the layers of provisioners 1-${plan.layers[at - 1]!.index + 1} (${pulled.map((p) => short(p.record.digest)).join(', ')}) from ${remote.location} in ${formatDuration(ms)}`,
  );
  return true;
}
