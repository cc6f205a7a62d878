/** Step: pick the accelerator and a free SSH port, start QEMU, connect to QMP. */
import { copyFileSync, existsSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import { need } from '../state.js';
import { buildQemuArgs, shellQuote, type VmSpec } from '../../qemu/argv.js';
import { chooseAccelerator } from '../../qemu/accel.js';
import { QemuProcess } from '../../qemu/process.js';
import { QmpClient } from '../../qemu/qmp.js';
import { parseSize } from '../../template/units.js';

export const OVMF_CODE = '/usr/share/OVMF/OVMF_CODE_4M.fd';
export const OVMF_VARS = '/usr/share/OVMF/OVMF_VARS_4M.fd';

/** A port the kernel just handed out on loopback; QEMU binds it a moment later (retried on a clash). */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port;
      s.close(() => resolve(port));
    });
  });
}

export function memoryMiB(memory: number | string): number {
  return typeof memory === 'number' ? memory : Math.round(parseSize(memory) / 2 ** 20);
}

export function vmSpecFor(ctx: BuildContext, sshHostPort: number | undefined, withInstallMedia: boolean): VmSpec {
  const src = ctx.build.source;
  const st = ctx.state;
  const disk = need(st, 'disk');
  const comm = src.communicator;
  const disks: VmSpec['disks'] = [{ path: disk.path, format: 'qcow2', interface: src.disk_interface, discard: true }];
  if (st.seed?.kind === 'cdrom') disks.push({ path: st.seed.iso, format: 'raw', interface: 'virtio', readonly: true });
  const installer = withInstallMedia && st.base?.kind === 'iso';
  const cdroms = installer ? [st.base!.path] : [];
  if (withInstallMedia && st.cdFilesIso) cdroms.push(st.cdFilesIso);
  return {
    name: ctx.build.name,
    accelerator: need(st, 'accelerator'),
    cpus: src.cpus,
    memoryMiB: memoryMiB(src.memory),
    machine: src.machine,
    firmware: src.firmware === 'uefi'
      ? { type: 'uefi', code: OVMF_CODE, vars: path.join(st.workDir, 'efivars.fd') }
      : { type: 'bios' },
    disks,
    cdroms,
    floppy: withInstallMedia ? st.floppyImage : undefined,
    bootCdromOnce: installer,
    net: {
      device: src.net_device,
      hostForwards: comm.type === 'ssh' && sshHostPort ? [{ hostPort: sshHostPort, guestPort: comm.port }] : [],
    },
    smbiosSerial: st.seed?.kind === 'http' ? `ds=nocloud-net;s=${st.seed.url}` : undefined,
    qmpSocket: path.join(st.workDir, 'qmp.sock'),
    serial: { socket: path.join(st.workDir, 'serial.sock'), log: path.join(st.workDir, 'serial.log') },
    headless: src.headless,
    extraArgs: src.qemu_args,
  };
}

/**
 * Starts QEMU (and QMP) for this build; used at launch and again to boot the installed disk after an
 * installer powered off. A port taken between our check and QEMU's bind is retried with another.
 */
export async function startVm(ctx: BuildContext, withInstallMedia: boolean): Promise<void> {
  const src = ctx.build.source;
  const st = ctx.state;
  for (let attempt = 1; ; attempt++) {
    const port = src.communicator.type === 'ssh' ? await freePort() : undefined;
    const spec = vmSpecFor(ctx, port, withInstallMedia);
    const argv = buildQemuArgs(spec);
    ctx.log(`qemu: ${shellQuote(['qemu-system-x86_64', ...argv])}`, 'debug');
    const qemu = QemuProcess.start(argv, { cwd: st.workDir });
    st.qemu = qemu;
    st.serialLog = spec.serial?.log;
    try {
      st.qmp = await Promise.race([
        QmpClient.connect(spec.qmpSocket, 15_000),
        qemu.exited.then((e) => { throw new Error(`QEMU exited at start (code ${e.code ?? e.signal}): ${e.stderr || 'no message'}\n  command: ${shellQuote(qemu.argv)}`); }),
      ]);
    } catch (e) {
      await qemu.kill(500);
      const msg = (e as Error).message;
      if (attempt < 3 && /host forwarding rule|Address already in use/i.test(msg)) { ctx.log(`port ${port} was taken; retrying`, 'debug'); continue; }
      throw e;
    }
    st.sshHostPort = port;
    st.installing = withInstallMedia && st.base?.kind === 'iso';
    ctx.log(`QEMU started (${st.accelerator}, ${src.cpus} vCPU, ${spec.memoryMiB} MiB${st.installing ? ', booting the installer ISO' : ''}${port ? `, ssh on 127.0.0.1:${port}` : ''})`);
    return;
  }
}

export const launchQemuStep: Step = {
  name: 'launch QEMU',
  async run(ctx) {
    const src = ctx.build.source;
    const st = ctx.state;
    st.accelerator = await chooseAccelerator(src.accelerator, ctx.options.cacheDir, (m) => ctx.log(m, 'warn'));
    if (src.firmware === 'uefi') {
      if (!existsSync(OVMF_CODE)) throw new Error(`firmware: uefi needs ${OVMF_CODE}\n  fix: apt-get install ovmf (make setup does it)`);
      copyFileSync(OVMF_VARS, path.join(st.workDir, 'efivars.fd'));
    }
    await startVm(ctx, true);
    // Whichever QEMU is current when the build ends is the one stopped (a relaunch replaces it).
    return async () => {
      st.qmp?.close();
      await st.qemu?.kill(3000);
    };
  },
};
