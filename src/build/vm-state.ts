/**
 * cache.vm_state: layers that hold a running VM. When a layer is frozen the guest is paused first, so
 * the frozen disk and the saved RAM are the same instant; the state is written while paused (QEMU
 * migration to a file, src/qemu/vm-state.ts), the guest goes on, and the state is digested and
 * published beside its layer in the background. A rebuild that resumes after that layer starts QEMU
 * with `-incoming defer`, loads the state and goes on with the next provisioner: no firmware, kernel or
 * cloud-init. Anything that makes a state unusable (another QEMU or VM shape, a damaged file, a failed
 * load) falls back to booting the layer, with one line saying why.
 */
import { rmSync } from 'node:fs';
import type { BuildContext } from './state.js';
import { buildQemuArgs, cpuModelOf, shellQuote } from '../qemu/argv.js';
import {
  loadMismatch,
  loadVmState,
  qemuVersionOf,
  saveVmState,
  vmGenerationId,
  vmStateShape,
} from '../qemu/vm-state.js';
import { publishVmState, removeVmState, verifyVmState, vmStateFile, vmStateTemp } from '../cache/vm-states.js';
import { seedSmbiosFile, vmSpecFor, writeSeedSmbios } from './vm.js';
import { resumePoint } from '../cache/layer-keys.js';
import { abortable } from '../util/abort.js';
import { formatDuration } from '../template/units.js';

const short = (key: string) => key.slice(0, 12);

/**
 * Freezes the disk (`freeze`, the live snapshot) with the guest paused and, when the build saves VM
 * states, saves the VM beside layer `key`. A failed state save is a warning (the layer is still
 * saved); a failed freeze is the caller's error, as before. Returns what queues the state's
 * publication, to be called after the layer's own save was queued (a state is published after its layer).
 */
export async function freezeLayer(
  ctx: BuildContext,
  key: string,
  index: number,
  freeze: () => Promise<void>,
): Promise<() => void> {
  const nothing = () => {};
  const layers = ctx.state.layers;
  const qmp = ctx.state.qmp;
  if (!layers?.vmState || !qmp || !ctx.state.qemu) {
    await freeze();
    return nothing;
  }
  const dir = layers.store.dir;
  const tmp = vmStateTemp(dir, key);
  const started = performance.now();
  const frozenAt = Date.now();
  await qmp.execute('stop');
  let saved = false;
  try {
    await freeze();
    try {
      await saveVmState(qmp, tmp, ctx.signal);
      saved = true;
    } catch (e) {
      rmSync(tmp, { force: true });
      if (!ctx.signal.aborted)
        ctx.log(
          `layer cache: not saving the VM with the layer after provisioner ${index + 1}: ${(e as Error).message}`,
          'warn',
        );
    }
  } finally {
    if (!ctx.state.qemu.hasExited) await qmp.execute('cont');
  }
  const pausedMs = performance.now() - started;
  if (!saved) return nothing;
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
    shape: vmStateShape(ctx.state.qemu.argv, ctx.state.workDir),
    saveMs: pausedMs,
    // A key from communicator.private_key_file stays the user's file; a generated one exists nowhere else.
    buildKey: comm.type === 'ssh' && !comm.private_key_file ? ctx.state.buildKey : undefined,
    hostKey: ctx.state.hostKey,
  };
  // Behind the layer's own save: a state is published only once its layer is.
  return () => {
    layers.publishing = layers.publishing.then(async () => {
      const t = performance.now();
      try {
        const layer = layers.store.meta(key);
        if (!layer) throw new Error('its layer was not saved');
        // RAM pairs with the exact disk it was frozen with: a layer another build saved under this key
        // holds the same files in other blocks, which this guest's page cache would not match.
        if (Date.parse(layer.created) < frozenAt - 1000)
          throw new Error('the layer in the store was saved by another build');
        const published = await publishVmState(dir, tmp, { ...meta, layerSha256: layer.sha256 });
        ctx.events.emit({
          type: 'vm-state-saved',
          build: ctx.build.name,
          index,
          key,
          size: published.size,
          pausedMs,
          ms: performance.now() - t,
          vmgenid,
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
 * Starts this build's VM from the state saved with layer `layers.restoreFrom`, if there is one and it
 * loads. Returns false (after one line saying why) when the build must boot instead; the caller then
 * starts QEMU as usual.
 */
export async function restoreVm(ctx: BuildContext): Promise<boolean> {
  const layers = ctx.state.layers;
  const key = layers?.restoreFrom;
  if (!layers || !key) return false;
  const st = ctx.state;
  const provisioner = layers.plan[layers.cachedCount - 1]!.index + 1;
  const refuse = (why: string) => {
    ctx.log(`layer cache: booting layer ${short(key)} instead of restoring the VM saved with it: ${why}`, 'warn');
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
  };
  const dir = layers.store.dir;
  const check = await verifyVmState(dir, key);
  if (check.ok && check.meta.layerSha256 !== layers.store.meta(key)?.sha256) {
    removeVmState(dir, key);
    return refuse('it was saved with another copy of the layer; removed it');
  }
  if (!check.ok) {
    removeVmState(dir, key);
    return refuse(`${check.problem}; removed it`);
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
  if (shapeMismatch) return refuse(shapeMismatch);
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
    return refuse((e as Error).message);
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
  const ms = performance.now() - started;
  st.restoredVm = { key, ms };
  st.timings['restore VM state'] = ms;
  ctx.events.emit({ type: 'vm-restored', build: ctx.build.name, key, provisioner, size: check.meta.size, ms, vmgenid });
  ctx.log(
    `restored the VM saved after provisioner ${provisioner} (layer ${short(key)}, ${(check.meta.size / 2 ** 20).toFixed(1)} MiB) in ${formatDuration(ms)}: no boot${port ? `, ssh on 127.0.0.1:${port}` : ''}`,
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
 */
export function restoredGuestScript(epochSeconds: number, randomHex: string): string {
  return [
    `date -u -s @${epochSeconds} >/dev/null`,
    `printf %s ${randomHex} > /dev/urandom`,
    // RNDRESEEDCRNG = _IO('R', 0x07)
    `if command -v perl >/dev/null 2>&1 && perl -e 'open(my $f, ">", "/dev/urandom") or exit 1; ioctl($f, 0x5207, 0) or exit 1'; then echo reseeded; ` +
      `elif command -v python3 >/dev/null 2>&1 && python3 -c 'import fcntl; fcntl.ioctl(open("/dev/urandom", "wb"), 0x5207)' 2>/dev/null; then echo reseeded; else echo mixed; fi`,
  ].join('\n');
}
