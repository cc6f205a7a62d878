/**
 * Boots a disk image under QEMU (TCG, like CI) through kiln's own argv builder and process layer,
 * for end-to-end tests that check fixtures and artifacts by logging in.
 */
import { execFileSync } from 'node:child_process';
import {
  copyFileSync,
  existsSync,
  mkdtempSync,
  readFileSync,
  renameSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { buildQemuArgs, type VmSpec } from '../../src/qemu/argv.js';
import { QemuProcess } from '../../src/qemu/process.js';
import { QmpClient } from '../../src/qemu/qmp.js';
import { createOverlay } from '../../src/qemu/qemu-img.js';
import { waitForSsh, type SshSession } from '../../src/communicator/ssh.js';
import { freePort } from '../../src/qemu/ports.js';

export const repoRoot = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const imagesDir = process.env.KILN_FIXTURES_DIR ?? path.join(repoRoot, 'fixtures/images');
export const insecureKey = readFileSync(path.join(repoRoot, 'fixtures/keys/insecure_ed25519'), 'utf8');
export const insecurePublicKey = readFileSync(path.join(repoRoot, 'fixtures/keys/insecure_ed25519.pub'), 'utf8').trim();

export interface BootOptions {
  disk: string;
  format?: 'qcow2' | 'raw' | 'vmdk';
  firmware?: 'bios' | 'uefi';
  memoryMiB?: number;
  cpus?: number;
  extraDisks?: VmSpec['disks'];
  cdroms?: string[];
  workDir?: string;
}

export class Guest {
  private constructor(
    readonly qemu: QemuProcess,
    readonly qmp: QmpClient,
    readonly sshPort: number,
    readonly workDir: string,
    readonly serialLog: string,
  ) {}

  static async boot(o: BootOptions): Promise<Guest> {
    const workDir = o.workDir ?? mkdtempSync(path.join(os.tmpdir(), 'kiln-test-'));
    const sshPort = await freePort();
    let firmware: VmSpec['firmware'] = { type: 'bios' };
    if (o.firmware === 'uefi') {
      copyFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd', path.join(workDir, 'vars.fd'));
      firmware = { type: 'uefi', code: '/usr/share/OVMF/OVMF_CODE_4M.fd', vars: path.join(workDir, 'vars.fd') };
    }
    const serialLog = path.join(workDir, 'serial.log');
    const spec: VmSpec = {
      name: 'test',
      accelerator: 'tcg',
      cpus: o.cpus ?? 2,
      memoryMiB: o.memoryMiB ?? 512,
      machine: 'pc',
      firmware,
      disks: [{ path: o.disk, format: o.format ?? 'qcow2', interface: 'virtio' }, ...(o.extraDisks ?? [])],
      cdroms: o.cdroms,
      net: { device: 'virtio-net-pci', hostForwards: [{ hostPort: sshPort, guestPort: 22 }] },
      qmpSocket: path.join(workDir, 'qmp.sock'),
      serial: { socket: path.join(workDir, 'serial.sock'), log: serialLog },
      headless: true,
    };
    const qemu = QemuProcess.start(buildQemuArgs(spec));
    const qmp = await QmpClient.connect(spec.qmpSocket, 60_000);
    return new Guest(qemu, qmp, sshPort, workDir, serialLog);
  }

  async ssh(
    username: string,
    privateKey: string,
    timeoutMs = 120_000,
    hostKeyFingerprint?: string,
  ): Promise<SshSession> {
    try {
      return await waitForSsh(
        {
          host: '127.0.0.1',
          port: this.sshPort,
          username,
          privateKey,
          hostKeyFingerprint,
          trustOnFirstUse: !hostKeyFingerprint,
        },
        { timeoutMs, abort: () => (this.qemu.hasExited ? `QEMU exited: ${this.qemu.stderr}` : undefined) },
      );
    } catch (e) {
      throw new Error(`${(e as Error).message}\nserial console:\n${this.serial().split('\n').slice(-30).join('\n')}`);
    }
  }

  serial(): string {
    try {
      return readFileSync(this.serialLog, 'utf8');
    } catch {
      return '';
    }
  }

  /** Powers off through the given session and waits for QEMU to exit by itself. */
  async poweroff(session: SshSession, command = 'poweroff', timeoutMs = 60_000): Promise<boolean> {
    await session.exec(command, { timeoutMs: 10_000 }).catch(() => undefined);
    session.close();
    return this.qemu.waitForExit(timeoutMs);
  }

  async destroy(): Promise<void> {
    this.qmp.close();
    await this.qemu.kill(1000);
    rmSync(this.workDir, { recursive: true, force: true });
  }
}

/** A throwaway qcow2 overlay, so a test never writes to a cached fixture. */
export async function overlayOf(base: string, dir: string, name = 'overlay.qcow2', format = 'qcow2'): Promise<string> {
  const file = path.join(dir, name);
  await createOverlay(base, format, file);
  return file;
}

/**
 * The tiny fixture's kernel and initrd, for QEMU's direct kernel boot (`-kernel`/`-initrd`). Under TCG,
 * GRUB reading the 14 MB kernel through the BIOS takes about 3.5 s of the tiny guest's ~8 s to SSH, and
 * the suite boots it over a hundred times. Builds whose subject is not the boot path boot this way;
 * the firmware-and-GRUB path stays covered where it is the subject (fixture-tiny, build-tiny's
 * example build and artifact boots, every Debian and installer test). Extracted once from the fixture's
 * root tarball into a directory named for that tarball's size and time, so a rebuilt fixture is
 * picked up; a rename makes concurrent test files agree on one copy.
 */
export function tinyDirectBoot(): { kernel: string; initrd: string; append: string } {
  const tarball = path.join(imagesDir, 'tiny-rootfs.tar.gz');
  const st = statSync(tarball);
  const dir = path.join(imagesDir, `.tiny-boot-${st.size}-${Math.floor(st.mtimeMs)}`);
  if (!existsSync(path.join(dir, 'boot', 'initrd.img'))) {
    const tmp = mkdtempSync(`${dir}.tmp-`);
    execFileSync('tar', ['-xzf', tarball, '-C', tmp, './boot/vmlinuz', './boot/initrd.img']);
    try {
      renameSync(tmp, dir);
    } catch {
      rmSync(tmp, { recursive: true, force: true });
    } // another file won
  }
  return {
    kernel: path.join(dir, 'boot', 'vmlinuz'),
    initrd: path.join(dir, 'boot', 'initrd.img'),
    // What the fixture's grub.cfg passes, with the root by label (the disk interface may vary), and
    // no_timer_check (as Fedora's cloud images have): under TCG on a loaded host the kernel's IO-APIC
    // timer check can miss its ticks and panic at boot ("IO-APIC + timer doesn't work").
    append: 'root=LABEL=root console=tty0 console=ttyS0,115200 rw no_timer_check',
  };
}

/**
 * The YAML `source:` block of a build from the tiny fixture (root, insecure test key), at `indent`.
 * It boots the kernel directly (see tinyDirectBoot) unless `bootloader` is set.
 */
export function tinySourceYaml(indent = '    ', { bootloader = false }: { bootloader?: boolean } = {}): string {
  const direct = bootloader ? undefined : tinyDirectBoot();
  return [
    'source:',
    `  base_image: ${path.join(imagesDir, 'tiny.qcow2')}`,
    '  checksum: none',
    '  cpus: 1',
    '  memory: 256',
    '  cloud_init: false',
    `  communicator: { username: root, private_key_file: ${path.join(repoRoot, 'fixtures/keys/insecure_ed25519')}, trust_on_first_use: true, timeout: 3m }`,
    ...(direct
      ? [
          `  qemu_args: [['-kernel', '${direct.kernel}'], ['-initrd', '${direct.initrd}'], ['-append', '${direct.append}']]`,
        ]
      : []),
  ]
    .map((l) => indent + l)
    .join('\n');
}

/**
 * Writes `<dir>/<name>.yaml`: one tiny-guest build (output `<dir>/out/<name>`, qcow2) whose single
 * shell provisioner runs `inline` (YAML flow strings, quoted by the caller).
 */
export function writeTinyShellTemplate(dir: string, name: string, inline: string[]): { file: string; out: string } {
  const out = path.join(dir, 'out', name);
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `
builds:
  - name: ${name}
    output_directory: ${out}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: [${inline.join(', ')}]
    outputs:
      - format: qcow2
`,
  );
  return { file, out };
}

/**
 * The YAML `source:` block of a build that installs the tiny guest from the installer fixture ISO,
 * typing its boot command on `console`; the answers authorize the build key and `extraKeys`.
 */
export function installerSourceYaml(
  console: 'keyboard' | 'serial' = 'serial',
  extraKeys: string[] = [],
  indent = '    ',
): string {
  return [
    'source:',
    `  iso: ${path.join(imagesDir, 'installer.iso')}`,
    '  checksum: none',
    '  disk_size: 1G',
    '  memory: 1024',
    `  boot_console: ${console}`,
    '  boot_command:',
    `    - '<waitFor "boot: " 2m>install url=http://\${build.http_ip}:\${build.http_port}/answers.cfg console=ttyS0,115200<enter>'`,
    '  http_content:',
    '    /answers.cfg: |',
    '      hostname=${build.name}',
    '      ssh_authorized_key=${build.ssh_public_key}',
    ...extraKeys.map((k) => `      ssh_authorized_key=${k}`),
    '  install_timeout: 5m',
    '  communicator: { username: root, trust_on_first_use: true, timeout: 3m }',
  ]
    .map((l) => indent + l)
    .join('\n');
}
