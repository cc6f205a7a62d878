/**
 * The seam between a build and the hypervisor and disk tools (Packer's qemu `Driver`): the steps start
 * and stop QEMU, speak QMP, and create, convert, check and snapshot images only through a Driver held
 * by the build context, so each step can be unit-tested against a fake one (test/helpers/fake-driver.ts)
 * while the end-to-end tests run the real one, made by createDriver(). A Driver is two roles: the
 * Hypervisor here (QEMU, QMP, the SSH forward's ports) and the ImageTool (image-tool.ts: qemu-img);
 * code below the build takes only the role it uses, passed down (never a default made on the spot).
 *
 * Nothing here reads the environment when it is imported. The binaries, a forced accelerator, where
 * the accelerator probe's answers are kept and pinned SSH ports are options; driverOptionsFromEnv()
 * turns the CLI's KILN_* variables into them, at build time.
 */
import { execa } from 'execa';
import type { Accelerator } from './argv.js';
import { chooseAccelerator, defaultAcceleratorMemoDir } from './accel.js';
import { archProfile, type GuestArch } from './arch.js';
import { imageToolOf, type ImageTool } from './image-tool.js';
import { buildDiskDevice } from './live-snapshot.js';
import { freePort, pinnedSshPorts, portInUse } from './ports.js';
import { defaultQemuBinary, requireExecutable, startQemu, type QemuProcess } from './process.js';
import { defaultQemuImgBinary, QemuImg } from './qemu-img.js';
import { QmpClient } from './qmp.js';

export type { QemuProcess, QemuExit } from './process.js';
export type { QmpClient } from './qmp.js';
export type { ImageInfo, ConvertOptions, CheckReport } from './qemu-img.js';
export type { CheckedBaseImage } from './image-check.js';
export type { ImageTool } from './image-tool.js';

export interface DriverOptions {
  /** The QEMU system emulator to run (default qemu-system-x86_64, looked up on PATH). */
  qemuBinary?: string;
  /** The emulators of other guest architectures (default: arch.ts's, e.g. qemu-system-aarch64, looked up on PATH). */
  qemuBinaries?: Partial<Record<Exclude<GuestArch, 'x86_64'>, string>>;
  /** The qemu-img to run (default qemu-img, looked up on PATH). */
  qemuImgBinary?: string;
  /** An accelerator that stands in for a template's `auto` (checked like an explicit one); '' means none. */
  accelerator?: string;
  /** Where the accelerator probe's answers are remembered until the host reboots (default: a kiln.<uid> directory in the temporary directory). */
  acceleratorCacheDir?: string;
  /** Host ports the SSH forward may use, "2222" or "2222-2230", tried in order (default: a free port the kernel picks). */
  sshHostPorts?: string;
  /** What to call each setting in messages: the environment variable or option it came from (default: "options.<name>"). */
  settingNames?: Partial<
    Record<
      'qemuBinary' | 'qemuImgBinary' | 'accelerator' | 'sshHostPorts' | `qemuBinaries.${Exclude<GuestArch, 'x86_64'>}`,
      string
    >
  >;
}

/** Host ports pinned for the SSH forward, and the setting that pinned them (for messages). */
export interface PinnedPorts {
  ports: number[];
  spec: string;
  setting: string;
}

/** QEMU itself: checking it is there, the accelerator, the SSH forward's port, starting a VM, QMP. */
export interface Hypervisor {
  /** Fails with the fix (package, setting) when the QEMU binary for the guest's architecture (default x86_64) is missing. */
  requireQemu(arch?: GuestArch): void;
  /**
   * Resolves `auto` (or a forced accelerator) to one that really runs a guest of `arch` (default x86_64)
   * here; probes are remembered per host boot. Another architecture than the host's gets TCG.
   */
  chooseAccelerator(
    wanted: Accelerator | 'auto',
    probeImageDir: string,
    warn: (message: string) => void,
    signal?: AbortSignal,
    arch?: GuestArch,
  ): Promise<Accelerator>;
  /** Ports pinned for the SSH forward, or undefined (freePort() then); throws on a malformed setting. */
  pinnedSshPorts(): PinnedPorts | undefined;
  /** The setting that pins them, for messages that suggest it. */
  readonly sshHostPortsSetting: string;
  /** A port the kernel just handed out on loopback. */
  freePort(): Promise<number>;
  /** Whether something listens on `port` on loopback already. */
  portInUse(port: number): Promise<boolean>;
  /** Starts the QEMU of the guest's architecture (default x86_64) with `argv` (from buildQemuArgs); it dies with kiln. */
  startVm(argv: string[], opts: { cwd?: string; arch?: GuestArch }): QemuProcess;
  /** The first line of `<qemu> --version` for the guest's architecture (default x86_64), memoised: part of a warm base's key. */
  qemuVersion(arch?: GuestArch): Promise<string>;
  /** Connects to a starting QEMU's QMP socket (retried until it exists, or `timeoutMs`). */
  connectQmp(socketPath: string, timeoutMs: number): Promise<QmpClient>;
  /**
   * Writes the empty qcow2 `overlay` on top of `active`, the image a running QEMU writes (qemu-img -u: it
   * is not opened), for snapshotActiveDisk. A process start of its own: callers do it while the guest
   * still works (beside its sync), not in the instant the guest is paused for.
   */
  createSnapshotOverlay(active: string, overlay: string, virtualSize: number, signal?: AbortSignal): Promise<void>;
  /** Freezes the running VM's disk: QEMU writes to `overlay` (made by createSnapshotOverlay) from now on (QMP blockdev-snapshot), no reboot. */
  snapshotActiveDisk(qmp: QmpClient, overlay: string, nodeName: string): Promise<void>;
}

/** What a build holds: the hypervisor and the image tool. */
export interface Driver extends Hypervisor, ImageTool {}

const settingName = (opts: DriverOptions, key: keyof NonNullable<DriverOptions['settingNames']>) =>
  opts.settingNames?.[key] ?? `options.${key}`;

/** The real driver: QEMU and qemu-img run as child processes (execa) that die with kiln. */
export function createDriver(opts: DriverOptions = {}): Driver {
  const qemuBinary = opts.qemuBinary ?? defaultQemuBinary;
  // x86_64's is qemuBinary (KILN_QEMU); another architecture's its own setting, else arch.ts's emulator.
  const binaryFor = (arch: GuestArch = 'x86_64') =>
    arch === 'x86_64' ? qemuBinary : (opts.qemuBinaries?.[arch] ?? archProfile(arch).qemuBinary);
  const binarySetting = (arch: GuestArch = 'x86_64') =>
    arch === 'x86_64' ? settingName(opts, 'qemuBinary') : settingName(opts, `qemuBinaries.${arch}`);
  const qemuImg = new QemuImg(opts.qemuImgBinary ?? defaultQemuImgBinary, {
    setting: settingName(opts, 'qemuImgBinary'),
    setBySetting: opts.qemuImgBinary !== undefined,
  });
  const accelSettings = {
    qemuBinary,
    memoDir: opts.acceleratorCacheDir ?? defaultAcceleratorMemoDir(undefined),
    forced: opts.accelerator,
    forcedSetting: settingName(opts, 'accelerator'),
  };
  const versions = new Map<string, Promise<string>>();
  return {
    requireQemu: (arch = 'x86_64') =>
      requireExecutable({
        binary: binaryFor(arch),
        name: archProfile(arch).qemuBinary,
        aptPackage: archProfile(arch).qemuPackage,
        setting: binarySetting(arch),
        setBySetting: arch === 'x86_64' ? opts.qemuBinary !== undefined : opts.qemuBinaries?.[arch] !== undefined,
      }),
    chooseAccelerator: (wanted, probeImageDir, warn, signal, arch = 'x86_64') =>
      chooseAccelerator(
        wanted,
        probeImageDir,
        warn,
        { ...accelSettings, qemuBinary: binaryFor(arch), guestArch: arch },
        signal,
      ),
    pinnedSshPorts: () => {
      if (!opts.sshHostPorts) return undefined;
      const setting = settingName(opts, 'sshHostPorts');
      return { ports: pinnedSshPorts(opts.sshHostPorts, setting), spec: opts.sshHostPorts, setting };
    },
    sshHostPortsSetting: settingName(opts, 'sshHostPorts'),
    freePort,
    portInUse,
    startVm: (argv, o) => startQemu(binaryFor(o.arch), argv, { cwd: o.cwd }),
    qemuVersion(arch = 'x86_64') {
      const binary = binaryFor(arch);
      let v = versions.get(binary);
      if (!v) {
        v = execa(binary, ['--version']).then((r) => r.stdout.split('\n')[0]!.trim());
        versions.set(binary, v);
      }
      return v;
    },
    connectQmp: (socketPath, timeoutMs) => QmpClient.connect(socketPath, timeoutMs),
    createSnapshotOverlay: (active, overlay, virtualSize, signal) =>
      qemuImg.createOverlayUnsafe(active, overlay, virtualSize, signal),
    async snapshotActiveDisk(qmp, overlay, nodeName) {
      // The overlay keeps the build disk's discard/zero handling, or fstrim later would not shrink it.
      await qmp.execute('blockdev-add', {
        driver: 'qcow2',
        'node-name': nodeName,
        file: { driver: 'file', filename: overlay },
        backing: null,
        discard: 'unmap',
        'detect-zeroes': 'unmap',
        cache: { 'no-flush': true },
      });
      await qmp.execute('blockdev-snapshot', { node: buildDiskDevice, overlay: nodeName });
    },
    ...imageToolOf(qemuImg),
  };
}

/**
 * The CLI's environment as driver options: KILN_QEMU (KILN_QEMU_AARCH64 for arm64 guests), KILN_QEMU_IMG, KILN_ACCELERATOR, KILN_ACCEL_CACHE
 * (else XDG_RUNTIME_DIR/kiln), KILN_SSH_HOST_PORTS, with messages naming those variables. Called when a
 * build starts, never at import.
 */
export function driverOptionsFromEnv(env: NodeJS.ProcessEnv = process.env): DriverOptions {
  return {
    qemuBinary: env.KILN_QEMU,
    qemuBinaries: { aarch64: env.KILN_QEMU_AARCH64 },
    qemuImgBinary: env.KILN_QEMU_IMG,
    accelerator: env.KILN_ACCELERATOR,
    acceleratorCacheDir: env.KILN_ACCEL_CACHE || defaultAcceleratorMemoDir(env.XDG_RUNTIME_DIR),
    sshHostPorts: env.KILN_SSH_HOST_PORTS,
    settingNames: {
      qemuBinary: 'KILN_QEMU',
      'qemuBinaries.aarch64': 'KILN_QEMU_AARCH64',
      qemuImgBinary: 'KILN_QEMU_IMG',
      accelerator: 'KILN_ACCELERATOR',
      sshHostPorts: 'KILN_SSH_HOST_PORTS',
    },
  };
}
