/**
 * Starting the build's VM: its spec from the template and the state so far (disk, seed, install media,
 * forwards), a host port for the SSH forward, QEMU through the build's driver, and its QMP connection.
 * Used by the launch step and again by the SSH wait to boot the installed disk after an installer
 * powered off.
 */
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import type { BuildContext } from './state.js';
import { need, onCachedLayer } from './state.js';
import { buildQemuArgs, cpuModelOf, shellQuote, type VmSpec } from '../qemu/argv.js';
import { smbiosType1 } from '../qemu/smbios.js';
import { interpolateString } from '../template/interpolate.js';
import { abortable } from '../util/abort.js';
import { resolveFirmware, type FirmwareRequest, type ResolvedFirmware } from '../qemu/firmware.js';
import { removeTpmState, startTpm, tpmPaths, type RunningTpm } from '../qemu/tpm.js';
import { usesUefi } from '../template/schema.js';
import { archOf } from '../qemu/arch.js';
import { preallocDecision, promisePrealloc } from '../qemu/memory.js';

/** The build's firmware, resolved once from QEMU's descriptors (src/qemu/firmware.ts). */
const firmwares = new WeakMap<BuildContext, ResolvedFirmware>();

/** UEFI firmware for this build (undefined for bios): the descriptor that fits firmware: and machine:. */
export function firmwareFor(ctx: BuildContext): ResolvedFirmware | undefined {
  const f = ctx.build.source.firmware;
  if (!usesUefi(f)) return undefined;
  let r = firmwares.get(ctx);
  if (!r) {
    const req: FirmwareRequest = f === 'uefi' || f === 'uefi-secure' ? { kind: f } : { kind: 'descriptor', file: f };
    r = resolveFirmware(req, { arch: archOf(ctx.build.source), machine: ctx.build.source.machine });
    firmwares.set(ctx, r);
  }
  return r;
}

/** The per-build copy of the firmware's variable store (the VM writes boot entries, keys, etc. to it). */
export const efiVarsFile = (workDir: string) => path.join(workDir, 'efivars.fd');

/** The build's swtpm, while one runs (a relaunch starts another: swtpm ends with the QEMU it served). */
const tpms = new WeakMap<BuildContext, RunningTpm>();

async function ensureTpm(ctx: BuildContext): Promise<string | undefined> {
  if (!ctx.build.source.tpm) return undefined;
  const running = tpms.get(ctx);
  if (running && !running.hasExited) return running.socket;
  const tpm = await startTpm(ctx.state.workDir, 'swtpm', ctx.signal);
  tpms.set(ctx, tpm);
  ctx.log(`swtpm started (TPM 2.0, pid ${tpm.pid}, state in ${tpmPaths(ctx.state.workDir).stateDir})`, 'debug');
  return tpm.socket;
}

/** Stops the build's swtpm and removes its state: with the VM, when the build ends. */
export async function stopTpm(ctx: BuildContext): Promise<void> {
  if (!ctx.build.source.tpm) return;
  await tpms.get(ctx)?.stop();
  tpms.delete(ctx);
  removeTpmState(ctx.state.workDir);
}

export function vmSpecFor(ctx: BuildContext, sshHostPort: number | undefined, withInstallMedia: boolean): VmSpec {
  const src = ctx.build.source;
  const st = ctx.state;
  const disk = need(st, 'disk');
  const comm = src.communicator;
  const disks: VmSpec['disks'] = [{ path: disk.path, format: 'qcow2', interface: src.disk_interface, discard: true }];
  if (st.seed?.kind === 'cdrom') disks.push({ path: st.seed.iso, format: 'raw', interface: 'virtio', readonly: true });
  // A disk from a cached layer is installed already: the ISO stays out.
  const installer = withInstallMedia && st.base?.kind === 'iso' && !onCachedLayer(st);
  const cdroms = installer ? [st.base!.path] : [];
  const fw = firmwareFor(ctx);
  if (withInstallMedia && st.cdFilesIso) cdroms.push(st.cdFilesIso);
  return {
    name: ctx.build.name,
    arch: archOf(src),
    accelerator: need(st, 'accelerator'),
    cpus: src.cpus,
    memoryMiB: src.memory,
    preallocMemory: memoryPreallocFor(ctx),
    machine: fw?.machine ?? src.machine,
    cpuModel: src.cpu_model,
    firmware: fw ? { type: 'uefi', code: fw.code, vars: efiVarsFile(st.workDir), smm: fw.smm } : { type: 'bios' },
    tpmSocket: src.tpm ? tpmPaths(st.workDir).socket : undefined,
    disks,
    cdroms,
    floppy: withInstallMedia ? st.floppyImage : undefined,
    bootCdromOnce: installer,
    net: {
      device: src.net_device,
      hostForwards: comm.type === 'ssh' && sshHostPort ? [{ hostPort: sshHostPort, guestPort: comm.port }] : [],
      ...airgapNet(ctx),
    },
    smbiosType1File: st.seed?.kind === 'http' ? seedSmbiosFile(st.workDir) : undefined,
    qmpSocket: path.join(st.workDir, 'qmp.sock'),
    serial: { socket: path.join(st.workDir, 'serial.sock'), log: path.join(st.workDir, 'serial.log') },
    headless: src.headless,
    // cache.vm_state / boot_snapshot: the device a restored VM is started with too (states load only into the same devices).
    vmgenid: ctx.state.layers?.vmState === true || ctx.state.layers?.warmBase !== undefined || undefined,
    // ${build.http_ip}/${build.http_port} (Packer's {{ .HTTPIP }}:{{ .HTTPPort }}, e.g. a NoCloud-Net seed URL) are known now.
    extraArgs: src.qemu_args.map((group) =>
      group.map((arg) => String(interpolateString(arg, { build: ctx.buildValues() }, () => {}, 'build'))),
    ),
    extraArgsReplace: src.qemu_args_replace,
  };
}

/**
 * source.memory_prealloc, decided at the build's first QEMU start and kept, so a QEMU started again
 * (the installed disk after its installer, a restore that fell back to a boot) has the same memory.
 */
function memoryPreallocFor(ctx: BuildContext): boolean {
  if (ctx.state.memoryPrealloc === undefined) {
    const decision = preallocDecision(ctx.build.source.memory_prealloc, ctx.build.source.memory);
    if (decision.why) ctx.log(decision.why);
    ctx.state.memoryPrealloc = decision.prealloc;
    if (decision.prealloc) ctx.state.preallocTaken = promisePrealloc(ctx.build.source.memory);
  }
  return ctx.state.memoryPrealloc;
}

/**
 * --record / --offline: the guest's network is the offline one either way (QEMU restrict=on: no DNS, no
 * route out), with forwards to kiln's package proxy and kiln's HTTP server and nothing else. Recording
 * on the network the offline build will have means a fetch that would not replay (one that ignores the
 * proxy) fails while recording, not on the far side of the air gap.
 */
export function airgapNet(ctx: BuildContext): Pick<NonNullable<VmSpec['net']>, 'restrict' | 'guestForwards'> {
  const a = ctx.options.airgap;
  if (!a) return {};
  const guestForwards = [{ guestIp: a.guestProxy.ip, guestPort: a.guestProxy.port, hostPort: a.proxyHostPort }];
  const http = ctx.state.http;
  if (http) guestForwards.push({ guestIp: http.ip, guestPort: http.port, hostPort: http.port });
  return { restrict: true, guestForwards };
}

export const seedSmbiosFile = (workDir: string) => path.join(workDir, 'smbios-type1.bin');

/**
 * Writes the SMBIOS type 1 table whose serial tells cloud-init where its NoCloud-Net seed is: 0600, in
 * the 0700 work dir, like the serial log (where cloud-init prints the URL once it has the seed).
 */
export function writeSeedSmbios(file: string, seedUrl: string): void {
  // QEMU's own type 1 table names QEMU as the manufacturer; guests (systemd-detect-virt) look there.
  writeFileSync(
    file,
    smbiosType1({ manufacturer: 'QEMU', product: 'kiln build VM', serial: `ds=nocloud-net;s=${seedUrl}` }),
    { mode: 0o600 },
  );
}

/** QEMU's complaint when its SSH forward's host port is taken. */
const portClash = /host forwarding rule|Address already in use/i;

/**
 * Starts QEMU (and QMP) for this build; used at launch and again to boot the installed disk after an
 * installer powered off. The SSH forward's host port is one the kernel hands out (a port taken between
 * that and QEMU's bind is retried with another), or the first free one of the driver's pinned ports.
 */
export async function startVm(ctx: BuildContext, withInstallMedia: boolean): Promise<void> {
  const src = ctx.build.source;
  const st = ctx.state;
  const driver = ctx.driver;
  const wantsPort = src.communicator.type === 'ssh';
  const pinned = wantsPort ? driver.pinnedSshPorts() : undefined;
  const candidates = pinned?.ports;
  const taken: number[] = [];
  if (st.seed?.kind === 'http') writeSeedSmbios(seedSmbiosFile(st.workDir), st.seed.url);
  const noFreePort = () =>
    new Error(
      pinned
        ? `no free port for the SSH forward in ${pinned.setting}=${pinned.spec}: ${taken.join(', ')} on 127.0.0.1 ${taken.length === 1 ? 'is' : 'are'} in use\n  fix: stop what listens there, widen ${pinned.setting}, or unset it to let kiln pick a free port`
        : `QEMU could not bind the SSH forward: ports ${taken.join(', ')} on 127.0.0.1 were taken each time between kiln choosing them and QEMU starting\n  fix: something on this host is grabbing ports; retry, or pin a range with ${driver.sshHostPortsSetting}`,
    );
  for (let attempt = 1; ; attempt++) {
    let port: number | undefined;
    if (candidates) {
      port = candidates.shift();
      if (port === undefined) throw noFreePort();
      if (await driver.portInUse(port)) {
        taken.push(port);
        ctx.log(`port ${port} on 127.0.0.1 is in use; trying the next port of ${pinned!.setting}`, 'warn');
        continue;
      }
    } else if (wantsPort) {
      port = await driver.freePort();
    }
    ctx.signal.throwIfAborted();
    await ensureTpm(ctx);
    const spec = vmSpecFor(ctx, port, withInstallMedia);
    const qemu = driver.startVm(buildQemuArgs(spec), { cwd: st.workDir, arch: spec.arch });
    ctx.log(`qemu: ${shellQuote(qemu.argv)}`, 'debug');
    st.qemu = qemu;
    st.serialLog = spec.serial?.log;
    try {
      st.qmp = await abortable(
        Promise.race([
          driver.connectQmp(spec.qmpSocket, 15_000),
          qemu.exited.then((e) => {
            throw new Error(
              `QEMU exited at start (code ${e.code ?? e.signal}): ${e.stderr || 'no message'}\n  command: ${shellQuote(qemu.argv)}`,
            );
          }),
        ]),
        ctx.signal,
      );
      // QEMU answers QMP once its memory is allocated: the host's free memory shows it from now on.
      st.preallocTaken?.();
    } catch (e) {
      await qemu.kill(500);
      if (ctx.signal.aborted) throw e;
      if (port === undefined || !portClash.test((e as Error).message)) throw e;
      taken.push(port);
      if (candidates ? candidates.length === 0 : attempt >= 3) throw noFreePort();
      ctx.log(
        `port ${port} on 127.0.0.1 was taken as QEMU started; retrying with another`,
        candidates ? 'warn' : 'debug',
      );
      continue;
    }
    st.sshHostPort = port;
    st.cpuModel = cpuModelOf(qemu.argv);
    st.installing = withInstallMedia && st.base?.kind === 'iso' && !onCachedLayer(st);
    ctx.log(
      `QEMU started (${st.accelerator}, CPU model ${st.cpuModel}, ${src.cpus} vCPU, ${spec.memoryMiB} MiB${spec.preallocMemory ? ' allocated up front' : ''}${st.installing ? ', booting the installer ISO' : ''}${port ? `, ssh on 127.0.0.1:${port}` : ''})`,
    );
    return;
  }
}
