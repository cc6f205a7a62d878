/**
 * A fake Driver for the step tests (Packer's qemu builder tests its steps the same way, against a
 * DriverMock), both of its roles in one object as a build holds them (the Hypervisor's VMs and QMP,
 * the ImageTool's images): it records every call, answers from a script, and fails where told.
 * Nothing runs: no QEMU, no qemu-img. Its VMs exit when told (exit()), on `quit`/`system_powerdown` if the script
 * says so, or when killed; QMP commands are recorded and answered.
 */
import type { Accelerator } from '../../src/qemu/argv.js';
import type {
  CheckedBaseImage,
  CheckReport,
  ConvertOptions,
  Driver,
  ImageInfo,
  PinnedPorts,
  QemuExit,
  QemuProcess,
  QmpClient,
} from '../../src/qemu/driver.js';

export interface FakeCall {
  method: keyof Driver | string;
  args: unknown[];
}

export class FakeVm implements QemuProcess {
  private resolveExit!: (e: QemuExit) => void;
  readonly exited: Promise<QemuExit>;
  hasExited = false;
  stderr = '';
  killed: number[] = [];

  constructor(
    readonly argv: string[],
    readonly pid: number,
    private readonly waitCapMs: number,
  ) {
    this.exited = new Promise((resolve) => {
      this.resolveExit = resolve;
    });
  }

  /** The guest stops (code 0: powered off). */
  exit(code: number | null = 0, signal: string | null = null, stderr = this.stderr): void {
    if (this.hasExited) return;
    this.hasExited = true;
    this.stderr = stderr;
    this.resolveExit({ code, signal, stderr });
  }

  /** Waits for exit() at most `waitCapMs` (the fake never waits out a real timeout). */
  async waitForExit(ms: number): Promise<boolean> {
    if (this.hasExited) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), Math.min(ms, this.waitCapMs));
    });
    const done = await Promise.race([this.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }

  async kill(graceMs = 2000): Promise<void> {
    this.killed.push(graceMs);
    this.exit(null, 'SIGTERM');
  }
}

export class FakeQmp implements QmpClient {
  commands: { command: string; args?: Record<string, unknown> }[] = [];
  closed = false;

  constructor(
    private readonly driver: FakeDriver,
    readonly vm: FakeVm,
  ) {}

  async execute<T = unknown>(command: string, args?: Record<string, unknown>): Promise<T> {
    if (this.closed) throw new Error(`QMP ${command}: connection closed (QEMU exited)`);
    this.commands.push({ command, args });
    const failure = this.driver.qmpFailures.get(command);
    if (failure) throw failure;
    if (command === 'system_powerdown' && this.driver.powerOffOnAcpi) this.vm.exit(0);
    if (command === 'quit') this.vm.exit(0);
    return (this.driver.qmpReplies.get(command) ?? {}) as T;
  }

  close(): void {
    this.closed = true;
  }
}

/** What the fake's VM does when started: stay up (default), or exit at once with this exit. */
export type VmScript = (argv: string[], index: number) => { exitAtStart?: QemuExit } | void;

export class FakeDriver implements Driver {
  calls: FakeCall[] = [];
  /** Scripted failures by method name: thrown once each (shift), or on every call when `sticky`. */
  failures = new Map<string, Error[]>();
  stickyFailures = new Map<string, Error>();
  /** imageInfo answers by file; a file without one gets `defaultInfo`. */
  images = new Map<string, Partial<ImageInfo>>();
  defaultInfo: ImageInfo = { format: 'qcow2', virtualSize: 1 << 30, actualSize: 1 << 20, dirty: false };
  accelerator: Accelerator = 'tcg';
  pinned?: PinnedPorts;
  sshHostPortsSetting = 'KILN_SSH_HOST_PORTS';
  busyPorts = new Set<number>();
  nextPort = 40_000;
  vms: FakeVm[] = [];
  qmps: FakeQmp[] = [];
  vmScript: VmScript = () => undefined;
  qmpFailures = new Map<string, Error>();
  qmpReplies = new Map<string, unknown>();
  /** A system_powerdown powers the fake guest off (else it ignores ACPI). */
  powerOffOnAcpi = true;
  /** How long a fake VM's waitForExit waits at most, whatever it is asked. */
  waitCapMs = 20;
  version = '8.2.2';
  /** convert writes nothing unless given a writer (e.g. a few bytes so the step can digest the file). */
  onConvert?: (dst: string, dstFormat: string) => void;

  /** The calls to one method, their arguments. */
  callsTo(method: string): unknown[][] {
    return this.calls.filter((c) => c.method === method).map((c) => c.args);
  }
  methods(): string[] {
    return this.calls.map((c) => String(c.method));
  }

  /** Makes the next call (or every call, sticky) to `method` fail with `error`. */
  fail(method: keyof Driver, error: Error, sticky = false): this {
    if (sticky) this.stickyFailures.set(method, error);
    else this.failures.set(method, [...(this.failures.get(method) ?? []), error]);
    return this;
  }

  private record(method: keyof Driver, args: unknown[]): void {
    this.calls.push({ method, args });
    const sticky = this.stickyFailures.get(method);
    if (sticky) throw sticky;
    const once = this.failures.get(method)?.shift();
    if (once) throw once;
  }

  requireQemu(): void {
    this.record('requireQemu', []);
  }

  async qemuVersion(): Promise<string> {
    this.record('qemuVersion', []);
    return 'QEMU emulator version 0.0.0 (fake driver)';
  }

  async chooseAccelerator(
    wanted: Accelerator | 'auto',
    probeImageDir: string,
    warn: (message: string) => void,
    signal?: AbortSignal,
  ): Promise<Accelerator> {
    this.record('chooseAccelerator', [wanted, probeImageDir]);
    signal?.throwIfAborted();
    void warn;
    return wanted === 'auto' ? this.accelerator : wanted;
  }

  pinnedSshPorts(): PinnedPorts | undefined {
    this.record('pinnedSshPorts', []);
    return this.pinned ? { ...this.pinned, ports: [...this.pinned.ports] } : undefined;
  }

  async freePort(): Promise<number> {
    this.record('freePort', []);
    return this.nextPort++;
  }
  async portInUse(port: number): Promise<boolean> {
    this.record('portInUse', [port]);
    return this.busyPorts.has(port);
  }

  startVm(argv: string[], opts: { cwd?: string }): FakeVm {
    this.record('startVm', [argv, opts]);
    const vm = new FakeVm(['qemu-system-x86_64', ...argv], 10_000 + this.vms.length, this.waitCapMs);
    const script = this.vmScript(argv, this.vms.length);
    this.vms.push(vm);
    if (script?.exitAtStart) vm.exit(script.exitAtStart.code, script.exitAtStart.signal, script.exitAtStart.stderr);
    return vm;
  }

  async connectQmp(socketPath: string, timeoutMs: number): Promise<FakeQmp> {
    this.record('connectQmp', [socketPath, timeoutMs]);
    const vm = this.vms.at(-1)!;
    // A VM that exited at start never opens its socket: the caller's race with its exit decides.
    if (vm.hasExited) return new Promise(() => undefined);
    const qmp = new FakeQmp(this, vm);
    this.qmps.push(qmp);
    return qmp;
  }

  async createSnapshotOverlay(
    active: string,
    overlay: string,
    virtualSize: number,
    signal?: AbortSignal,
  ): Promise<void> {
    this.record('createSnapshotOverlay', [active, overlay, virtualSize]);
    signal?.throwIfAborted();
  }

  async snapshotActiveDisk(qmp: QmpClient, overlay: string, nodeName: string): Promise<void> {
    this.record('snapshotActiveDisk', [overlay, nodeName]);
    void qmp;
  }

  async imageInfo(file: string, format?: string, shared?: boolean, signal?: AbortSignal): Promise<ImageInfo> {
    this.record('imageInfo', [file, format, shared]);
    signal?.throwIfAborted();
    return { ...this.defaultInfo, ...(format ? { format } : {}), ...this.images.get(file) };
  }

  async createOverlay(base: string, baseFormat: string, overlay: string, sizeBytes?: number): Promise<void> {
    this.record('createOverlay', [base, baseFormat, overlay, sizeBytes]);
    this.images.set(overlay, {
      format: 'qcow2',
      virtualSize: sizeBytes ?? { ...this.defaultInfo, ...this.images.get(base) }.virtualSize,
      backingFile: base,
      backingFormat: baseFormat,
    });
  }

  async createBlank(file: string, sizeBytes: number): Promise<void> {
    this.record('createBlank', [file, sizeBytes]);
    this.images.set(file, { format: 'qcow2', virtualSize: sizeBytes });
  }

  async resize(file: string, format: string, sizeBytes: number): Promise<void> {
    this.record('resize', [file, format, sizeBytes]);
    this.images.set(file, { ...this.images.get(file), virtualSize: sizeBytes });
  }

  async convert(
    src: string,
    srcFormat: string,
    dst: string,
    dstFormat: string,
    opts: ConvertOptions = {},
  ): Promise<void> {
    this.record('convert', [src, srcFormat, dst, dstFormat, { compress: opts.compress, options: opts.options }]);
    opts.signal?.throwIfAborted();
    opts.onProgress?.(50);
    this.onConvert?.(dst, dstFormat);
    opts.onProgress?.(100);
  }

  /** check answers: ok unless a file is listed here with its output. */
  badImages = new Map<string, string>();
  async check(file: string, format: string): Promise<{ ok: boolean; output: string }> {
    this.record('check', [file, format]);
    const bad = this.badImages.get(file);
    return bad === undefined ? { ok: true, output: 'No errors were found on the image.' } : { ok: false, output: bad };
  }

  async checkReport(file: string, format: string): Promise<CheckReport> {
    this.record('checkReport', [file, format]);
    return { exitCode: 0, corruptions: 0, leaks: 0, messages: [] };
  }

  /** checkBaseImage's answer (format, warnings). */
  baseImage: CheckedBaseImage = { format: 'qcow2', warnings: [] };
  async checkBaseImage(
    file: string,
    opts: { bootSectorRequired: boolean; signal?: AbortSignal },
  ): Promise<CheckedBaseImage> {
    this.record('checkBaseImage', [file, { bootSectorRequired: opts.bootSectorRequired }]);
    return this.baseImage;
  }

  async rebase(file: string, backing: { name: string; format: string }): Promise<void> {
    this.record('rebase', [file, backing]);
  }

  async rebaseUnsafe(file: string, backing: { name: string; format: string } | null): Promise<void> {
    this.record('rebaseUnsafe', [file, backing]);
  }

  async qemuImgVersion(): Promise<string> {
    this.record('qemuImgVersion', []);
    return this.version;
  }

  /** A disk with no partition table (zeros): create-disk leaves such a disk to cloud-init. */
  async readStart(file: string, format: string, bytes: number): Promise<Buffer> {
    this.record('readStart', [file, format, bytes]);
    return Buffer.alloc(bytes);
  }

  async writeBytes(file: string, format: string, writes: readonly { offset: number; data: Buffer }[]): Promise<void> {
    this.record('writeBytes', [file, format, writes.map((w) => [w.offset, w.data.length])]);
  }
}
