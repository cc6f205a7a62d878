/**
 * cache.vm_state: layers that hold a running VM. When a layer is frozen the guest is paused first, so
 * the frozen disk and the saved RAM are the same instant; the state is written while paused (QEMU
 * migration to a file, src/qemu/vm-state.ts), the guest goes on, and the state is digested and
 * published beside its layer in the background. A rebuild that resumes after that layer starts QEMU
 * with `-incoming defer`, loads the state and goes on with the next provisioner: no firmware, kernel or
 * cloud-init. Anything that makes a state unusable (another QEMU or VM shape, a damaged file, a failed
 * load) falls back to booting the layer, with one line saying why.
 */
import { renameSync, rmSync } from 'node:fs';
import path from 'node:path';
import type { BuildContext } from './state.js';
import { need } from './state.js';
import { queueLayerSave } from './layer-capture.js';
import { buildQemuArgs, cpuModelOf, shellQuote } from '../qemu/argv.js';
import {
  loadMismatch,
  loadVmState,
  qemuVersionOf,
  saveVmState,
  vmGenerationId,
  vmStateShape,
} from '../qemu/vm-state.js';
import {
  publishVmState,
  readVmStateMeta,
  removeVmState,
  verifyVmState,
  vmStateFile,
  vmStateTemp,
} from '../cache/vm-states.js';
import { seedSmbiosFile, vmSpecFor, writeSeedSmbios } from './vm.js';
import { resumePoint, warmBaseKey } from '../cache/layer-keys.js';
import { archOf } from '../qemu/arch.js';
import { abortable } from '../util/abort.js';
import { formatDuration } from '../template/units.js';

const short = (key: string) => key.slice(0, 12);

/** A paused guest's VM written to `tmp` with its disk frozen at the same instant, or why not. */
interface PausedSave {
  saved: boolean;
  pausedMs: number;
  /** When the guest was paused (epoch ms): the layer the state pairs with was saved after this. */
  frozenAt: number;
}

/**
 * Pauses the guest, freezes its disk (`freeze`, the live snapshot), writes the VM's state to `tmp`,
 * and lets the guest go on: the frozen disk and the saved RAM are the same instant. A failed state
 * save is a warning naming `what`; a failed freeze is the caller's error.
 */
async function pauseFreezeSave(
  ctx: BuildContext,
  tmp: string,
  what: string,
  freeze: () => Promise<void>,
): Promise<PausedSave> {
  const qmp = need(ctx.state, 'qmp');
  const started = performance.now();
  const frozenAt = Date.now();
  // QEMU's `cat` may create the file after an interrupted save gave up on it: the layer-cache step's
  // cleanup removes it once QEMU is gone.
  (need(ctx.state, 'layers').stateTemps ??= new Set()).add(tmp);
  await qmp.execute('stop');
  let saved = false;
  try {
    await freeze();
    try {
      await saveVmState(qmp, tmp, ctx.signal);
      saved = true;
    } catch (e) {
      rmSync(tmp, { force: true });
      if (!ctx.signal.aborted) ctx.log(`layer cache: not saving the VM with ${what}: ${(e as Error).message}`, 'warn');
    }
  } finally {
    if (!ctx.state.qemu?.hasExited) await qmp.execute('cont');
  }
  return { saved, pausedMs: performance.now() - started, frozenAt };
}

/**
 * What publishing a state written by pauseFreezeSave needs, read while its QEMU runs; returns the
 * function that queues the publication behind the save of its layer (`key`): a state is published
 * only once its layer is, and only beside the very copy of the layer it was frozen with.
 */
async function stateToPublish(
  ctx: BuildContext,
  tmp: string,
  key: string,
  index: number,
  save: PausedSave,
  warmBase: boolean,
): Promise<() => void> {
  const layers = need(ctx.state, 'layers');
  const qmp = need(ctx.state, 'qmp');
  const comm = ctx.build.source.communicator;
  const vmgenid = await vmGenerationId(qmp);
  let qemuVersion: string;
  try {
    qemuVersion = await qemuVersionOf(qmp);
  } catch (e) {
    // The saved state (the guest's RAM) is not left in the store when the build stops here.
    rmSync(tmp, { force: true });
    throw e;
  }
  const meta = {
    key,
    qemuVersion,
    shape: vmStateShape(need(ctx.state, 'qemu').argv, ctx.state.workDir),
    saveMs: save.pausedMs,
    // A key from communicator.private_key_file stays the user's file; a generated one exists nowhere else.
    buildKey: comm.type === 'ssh' && !comm.private_key_file ? ctx.state.buildKey : undefined,
    hostKey: ctx.state.hostKey,
  };
  const dir = layers.store.dir;
  return () => {
    layers.publishing = layers.publishing.then(async () => {
      const t = performance.now();
      try {
        const layer = layers.store.meta(key);
        if (!layer) throw new Error('its layer was not saved');
        // RAM pairs with the exact disk it was frozen with: a layer another build saved under this key
        // holds the same files in other blocks, which this guest's page cache would not match.
        if (Date.parse(layer.created) < save.frozenAt - 1000)
          throw new Error('the layer in the store was saved by another build');
        const published = await publishVmState(dir, tmp, { ...meta, layerSha256: layer.sha256 });
        ctx.events.emit({
          type: 'vm-state-saved',
          build: ctx.build.name,
          index,
          key,
          size: published.size,
          pausedMs: save.pausedMs,
          ms: performance.now() - t,
          vmgenid,
          ...(warmBase ? { warmBase: true } : {}),
        });
      } catch (e) {
        rmSync(tmp, { force: true });
        if (!ctx.signal.aborted)
          ctx.log(`layer cache: could not save the VM state of layer ${short(key)}: ${(e as Error).message}`, 'warn');
      }
    });
  };
}

/**
 * Freezes the disk (`freeze`, the live snapshot) and, when the build saves VM states, saves the VM
 * beside layer `key` with the guest paused around both. Returns what queues the state's publication,
 * to be called after the layer's own save was queued.
 */
export async function freezeLayer(
  ctx: BuildContext,
  key: string,
  index: number,
  freeze: () => Promise<void>,
): Promise<() => void> {
  const layers = ctx.state.layers;
  const position = layers?.plan.findIndex((l) => l.key === key) ?? -1;
  // The default keeps one state per chain: the one a rebuild after changing the last provisioner resumes from.
  const wanted = layers?.vmState && (!layers.vmStateBeforeLastOnly || position === layers.plan.length - 2);
  if (!wanted || !ctx.state.qmp || !ctx.state.qemu) {
    await freeze();
    return () => {};
  }
  const tmp = vmStateTemp(layers.store.dir, key);
  const save = await pauseFreezeSave(ctx, tmp, `the layer after provisioner ${index + 1}`, freeze);
  return save.saved ? stateToPublish(ctx, tmp, key, index, save, false) : () => {};
}

/**
 * cache.boot_snapshot: the guest has booted and is ready for provisioning (SSH up, cloud-init done as
 * the build waits for it): its disk is frozen into a layer under the warm base's key and its VM saved
 * beside it, so the next build on this base and these source settings restores it instead of booting.
 * The first provisioner's layer then backs onto it. Does nothing when the store has it already.
 */
export async function saveWarmBase(
  ctx: BuildContext,
  createOverlay: (overlay: string) => Promise<void>,
  freeze: (overlay: string) => Promise<void>,
): Promise<void> {
  const layers = need(ctx.state, 'layers');
  const warm = layers.warmBase;
  // rootBacking is the base in the store (layer-cache sets it for a build that may save a warm base).
  if (!warm?.key || warm.restored || !layers.rootBacking || layers.store.meta(warm.key)) return;
  const key = warm.key;
  const disk = need(ctx.state, 'disk');
  const tmp = vmStateTemp(layers.store.dir, key);
  const overlay = path.join(ctx.state.workDir, 'disk-0.qcow2');
  // Made before the pause: the guest is stopped only for the switch to it and the RAM.
  await createOverlay(overlay);
  const save = await pauseFreezeSave(ctx, tmp, 'the warm base', () => freeze(overlay));
  ctx.state.disk = { ...disk, path: overlay };
  const backing = layers.rootBacking;
  queueLayerSave(ctx, {
    key,
    frozen: disk.path,
    backing,
    index: -1,
    what: 'the warm base',
    meta: {
      parent: null,
      build: ctx.build.name,
      template: ctx.template.file,
      provisioner: 0,
      description: 'warm base (booted, ready for provisioning)',
      warmBase: true,
      rootKey: layers.rootKey,
    },
  });
  layers.rootBacking = { name: `${key}.qcow2`, format: 'qcow2' };
  layers.rootParent = key;
  if (save.saved) (await stateToPublish(ctx, tmp, key, -1, save, true))();
  ctx.log(
    `warm base: saved the booted guest (layer ${short(key)}${save.saved ? `, the guest paused ${formatDuration(save.pausedMs)}` : ''}); later builds on this base restore it instead of booting`,
  );
}

/** Why a state cannot be loaded, or what loading it gave. */
type LoadOutcome = { ok: true; size: number; ms: number; vmgenid?: string } | { ok: false; why: string };

/**
 * Starts this build's QEMU from the state saved with layer `key` (its disk must already be an overlay
 * on that layer): digest and layer checked, command-line shape and QEMU version compared, loaded, run.
 * A state that can never load here again (damaged, or saved with another copy of its layer) is removed.
 */
async function loadSavedVm(ctx: BuildContext, key: string): Promise<LoadOutcome> {
  const st = ctx.state;
  const layers = need(st, 'layers');
  const dir = layers.store.dir;
  const check = await verifyVmState(dir, key);
  if (check.ok && check.meta.layerSha256 !== layers.store.meta(key)?.sha256) {
    removeVmState(dir, key);
    return { ok: false, why: 'it was saved with another copy of the layer; removed it' };
  }
  if (!check.ok) {
    removeVmState(dir, key);
    return { ok: false, why: `${check.problem}; removed it` };
  }
  const started = performance.now();
  // A new forward port: the saved VM's may be taken by now, and slirp keeps no forwards in the state.
  const port = ctx.build.source.communicator.type === 'ssh' ? await freeSshPort(ctx) : undefined;
  const spec = { ...vmSpecFor(ctx, port, true), vmgenid: true, incoming: true };
  const argv = buildQemuArgs(spec);
  const shapeMismatch = loadMismatch(check.meta, {
    qemuVersion: check.meta.qemuVersion,
    shape: vmStateShape(argv, st.workDir),
  });
  if (shapeMismatch) return { ok: false, why: shapeMismatch };
  // QEMU reads it at start, as for a boot; the restored guest read its seed long ago.
  if (st.seed?.kind === 'http') writeSeedSmbios(seedSmbiosFile(st.workDir), st.seed.url);
  const qemu = ctx.driver.startVm(argv, { cwd: st.workDir });
  ctx.log(`qemu: ${shellQuote(qemu.argv)}`, 'debug');
  const exited = qemu.exited.then((e) => {
    throw new Error(`QEMU exited (code ${e.code ?? e.signal}): ${e.stderr.trim() || 'no message'}`);
  });
  exited.catch(() => undefined);
  let qmp: Awaited<ReturnType<BuildContext['driver']['connectQmp']>> | undefined;
  let vmgenid: string | undefined;
  try {
    qmp = await abortable(Promise.race([ctx.driver.connectQmp(spec.qmpSocket, 15_000), exited]), ctx.signal);
    st.preallocTaken?.();
    const version = await qemuVersionOf(qmp);
    const mismatch = loadMismatch(check.meta, { qemuVersion: version, shape: check.meta.shape });
    if (mismatch) throw new Error(mismatch);
    await abortable(Promise.race([loadVmState(qmp, vmStateFile(dir, key), ctx.signal), exited]), ctx.signal);
    vmgenid = await vmGenerationId(qmp);
    await qmp.execute('cont');
  } catch (e) {
    qmp?.close();
    await qemu.kill(500);
    ctx.signal.throwIfAborted();
    return { ok: false, why: (e as Error).message };
  }
  st.qemu = qemu;
  st.qmp = qmp;
  st.serialLog = spec.serial?.log;
  st.sshHostPort = port;
  st.cpuModel = cpuModelOf(argv);
  st.installing = false;
  // The guest in the state trusts the keys of the build that saved it, and shows that build's host key.
  if (check.meta.buildKey) st.buildKey = check.meta.buildKey;
  if (check.meta.hostKey) st.hostKey = check.meta.hostKey;
  return { ok: true, size: check.meta.size, ms: performance.now() - started, vmgenid };
}

/**
 * Starts this build's VM from the state saved with layer `layers.restoreFrom`, if there is one and it
 * loads. Returns false (after one line saying why) when the build must boot instead; the caller then
 * starts QEMU as usual.
 */
export async function restoreVm(ctx: BuildContext): Promise<boolean> {
  const layers = ctx.state.layers;
  const key = layers?.restoreFrom;
  if (!layers || !key) return false;
  const provisioner = layers.plan[layers.cachedCount - 1]!.index + 1;
  const loaded = await loadSavedVm(ctx, key);
  if (!loaded.ok) {
    ctx.log(
      `layer cache: booting layer ${short(key)} instead of restoring the VM saved with it: ${loaded.why}`,
      'warn',
    );
    // The layer-cache step counted on the restore keeping /tmp: a booted guest has it emptied.
    const again = resumePoint(layers.plan, layers.cachedCount);
    if (again < layers.cachedCount) {
      ctx.log(
        `provisioner ${layers.plan
          .slice(again, layers.cachedCount)
          .map((l) => l.index + 1)
          .join(', ')} runs again: it uploads into a directory the guest empties at boot`,
      );
      layers.cachedCount = again;
    }
    return false;
  }
  ctx.state.restoredVm = { key, ms: loaded.ms };
  ctx.state.timings['restore VM state'] = loaded.ms;
  ctx.events.emit({
    type: 'vm-restored',
    build: ctx.build.name,
    key,
    provisioner,
    size: loaded.size,
    ms: loaded.ms,
    vmgenid: loaded.vmgenid,
  });
  ctx.log(
    `restored the VM saved after provisioner ${provisioner} (layer ${short(key)}, ${(loaded.size / 2 ** 20).toFixed(1)} MiB) in ${formatDuration(loaded.ms)}: no boot${ctx.state.sshHostPort ? `, ssh on 127.0.0.1:${ctx.state.sshHostPort}` : ''}`,
  );
  return true;
}

/**
 * cache.boot_snapshot, for a build that starts fresh: computes the warm base's key from the VM this
 * build would boot, and if the store holds that warm base with its VM, puts the build's disk on it and
 * loads the VM: no firmware, kernel or cloud-init. Returns false when the guest must boot (nothing
 * saved yet, or the state cannot load: one line says why), with the disk as create-disk made it.
 */
export async function restoreWarmBase(ctx: BuildContext): Promise<boolean> {
  const st = ctx.state;
  const layers = st.layers;
  const warm = layers?.warmBase;
  if (!layers || !warm) return false;
  const ci = ctx.build.source.cloud_init;
  // The shape of the VM a boot would start (ports and work paths are normalised out of it).
  const bootArgv = buildQemuArgs(vmSpecFor(ctx, ctx.build.source.communicator.type === 'ssh' ? 1 : undefined, true));
  warm.key = warmBaseKey(layers.rootKey, {
    cloudInitWait: ci !== false && ci.wait,
    qemuVersion: await ctx.driver.qemuVersion(archOf(ctx.build.source)),
    shape: vmStateShape(bootArgv, st.workDir),
  });
  const key = warm.key;
  if (!layers.store.meta(key) || !readVmStateMeta(layers.store.dir, key)) return false;
  const check = await layers.store.verify(key);
  if (!check.ok) {
    ctx.log(`warm base: booting instead of restoring layer ${short(key)}: ${check.problem}`, 'warn');
    return false;
  }
  const disk = need(st, 'disk');
  const booted = `${disk.path}.boot`;
  renameSync(disk.path, booted);
  await ctx.driver.createOverlay(layers.store.layerFile(key), 'qcow2', disk.path, undefined, ctx.signal);
  const loaded = await loadSavedVm(ctx, key);
  if (!loaded.ok) {
    // Back to the disk create-disk made on the base: this build boots it.
    rmSync(disk.path, { force: true });
    renameSync(booted, disk.path);
    ctx.log(`warm base: booting instead of restoring the VM saved with layer ${short(key)}: ${loaded.why}`, 'warn');
    return false;
  }
  rmSync(booted, { force: true });
  layers.store.touch(key);
  layers.releaseWarmBase = layers.store.claim([key]);
  warm.restored = true;
  layers.rootBacking = { name: `${key}.qcow2`, format: 'qcow2' };
  layers.rootParent = key;
  st.restoredVm = { key, ms: loaded.ms, warmBase: true };
  st.timings['restore VM state'] = loaded.ms;
  ctx.events.emit({
    type: 'vm-restored',
    build: ctx.build.name,
    key,
    provisioner: 0,
    size: loaded.size,
    ms: loaded.ms,
    vmgenid: loaded.vmgenid,
    warmBase: true,
  });
  ctx.log(
    `warm base: restored the booted guest (layer ${short(key)}, ${(loaded.size / 2 ** 20).toFixed(1)} MiB) in ${formatDuration(loaded.ms)}: no boot${st.sshHostPort ? `, ssh on 127.0.0.1:${st.sshHostPort}` : ''}`,
  );
  return true;
}

/** A free host port for the SSH forward: the first free pinned one (KILN_SSH_HOST_PORTS), else one the kernel hands out. */
async function freeSshPort(ctx: BuildContext): Promise<number> {
  const pinned = ctx.driver.pinnedSshPorts();
  if (!pinned) return ctx.driver.freePort();
  for (const p of pinned.ports) if (!(await ctx.driver.portInUse(p))) return p;
  throw new Error(`no free port for the SSH forward in ${pinned.setting}=${pinned.spec}`);
}

/**
 * What a restored guest runs first, before any provisioner: its clock set to the host's (its clock
 * stood still while the state was stored), and host randomness mixed into its entropy pool with a
 * reseed where the guest can ask for one (perl or python3: RNDRESEEDCRNG), so two restores of one
 * state do not share random numbers. A kernel with the vmgenid driver reseeds by itself (the device
 * has a new GUID); the Debian cloud kernel has none.
 *
 * And a new boot ID: the kernel draws /proc/sys/kernel/random/boot_id once per boot and refuses
 * writes to it, so two guests restored from one state would share it. A file in /run (a tmpfs: never
 * in the image; mode 0444) is bound over it, so every process started from here on reads `bootId`;
 * processes already running (journald) keep the one they read at boot. A guest restored again from a
 * state saved after this has the file bound already: it gets the new ID written into it.
 */
export function restoredGuestScript(epochSeconds: number, randomHex: string, bootId: string): string {
  const bootIdPath = '/proc/sys/kernel/random/boot_id';
  return [
    `date -u -s @${epochSeconds} >/dev/null`,
    `printf %s ${randomHex} > /dev/urandom`,
    // RNDRESEEDCRNG = _IO('R', 0x07)
    `if command -v perl >/dev/null 2>&1 && perl -e 'open(my $f, ">", "/dev/urandom") or exit 1; ioctl($f, 0x5207, 0) or exit 1'; then echo reseeded; ` +
      `elif command -v python3 >/dev/null 2>&1 && python3 -c 'import fcntl; fcntl.ioctl(open("/dev/urandom", "wb"), 0x5207)' 2>/dev/null; then echo reseeded; else echo mixed; fi`,
    // Shell builtins but one mount, and that only the first time: under TCG each process costs 0.1-0.2 s.
    `if [ -d /run ] && [ -r ${bootIdPath} ]; then`,
    `  bound=; while read -r _ m _; do [ "$m" = ${bootIdPath} ] && bound=1; done < /proc/mounts`,
    `  (umask 333; printf '%s\\n' ${bootId} > /run/kiln-boot-id)`,
    `  if [ -n "$bound" ] || mount -o bind /run/kiln-boot-id ${bootIdPath}; then echo new-boot-id; fi`,
    `fi`,
  ].join('\n');
}
