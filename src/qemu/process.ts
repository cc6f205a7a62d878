/**
 * The QEMU process lifecycle in one place: start (so that it dies with kiln even on SIGKILL), watch
 * its exit, and stop it (graceful first, then SIGKILL).
 */
import { execa, type ResultPromise } from 'execa';
import { accessSync, constants, existsSync, statSync } from 'node:fs';
import path from 'node:path';
import { KilnError } from '../util/errors.js';
import { diesWithKiln } from '../util/dies-with-kiln.js';

/** The QEMU kiln runs unless told otherwise (DriverOptions.qemuBinary; the CLI's KILN_QEMU). */
export const defaultQemuBinary = 'qemu-system-x86_64';

/** The executable `file` names (a path, or a name looked up on PATH), or undefined. */
export function findExecutable(file: string): string | undefined {
  const candidates = file.includes('/')
    ? [file]
    : (process.env.PATH ?? '')
        .split(path.delimiter)
        .filter(Boolean)
        .map((d) => path.join(d, file));
  return candidates.find((c) => {
    try {
      accessSync(c, constants.X_OK);
      return statSync(c).isFile();
    } catch {
      return false;
    }
  });
}

/** A tool kiln runs, for naming it when it is missing. */
export interface ToolSetting {
  /** What kiln runs: a path, or a name looked up on PATH. */
  binary: string;
  /** The tool's own name ("qemu-img"). */
  name: string;
  /** The setting that names another binary: an environment variable of the CLI (KILN_QEMU_IMG) or a library option. */
  setting: string;
  /** The binary was given through that setting (not kiln's default). */
  setBySetting: boolean;
  aptPackage: string;
}

/**
 * Fails with what to do when a tool kiln runs is missing: spawning it would only say ENOENT, and under
 * setpriv not even that (setpriv exits 127 and QEMU seems to "exit at start").
 */
export function requireExecutable(tool: ToolSetting): void {
  if (findExecutable(tool.binary)) return;
  const problem = tool.setBySetting
    ? `${tool.name} not found: ${tool.binary} (set by ${tool.setting}) does not exist or is not executable`
    : `${tool.name} not found: ${tool.binary} is not on PATH`;
  throw new KilnError(`${problem}`, {
    fix: `apt-get install ${tool.aptPackage} (make setup does it), or set ${tool.setting} to the path of ${tool.name}`,
  });
}

export interface QemuExit {
  code: number | null;
  signal: string | null;
  stderr: string;
}

/** A running QEMU, as the build sees it: its exit, its last words on stderr, and how to stop it. */
export interface QemuProcess {
  readonly pid: number | undefined;
  /** The whole command line (binary first), for messages. */
  readonly argv: string[];
  /** Settles (never rejects) when QEMU has exited. */
  readonly exited: Promise<QemuExit>;
  readonly hasExited: boolean;
  /** The end of what QEMU printed on stderr. */
  readonly stderr: string;
  /** Waits up to `ms` for QEMU to exit by itself; true if it did. */
  waitForExit(ms: number): Promise<boolean>;
  /** SIGTERM, then SIGKILL if QEMU is still there after `graceMs`. Idempotent. */
  kill(graceMs?: number): Promise<void>;
}

class QemuChild implements QemuProcess {
  readonly exited: Promise<QemuExit>;
  private exitInfo?: QemuExit;
  private stderrTail = '';

  constructor(
    private readonly child: ResultPromise,
    readonly argv: string[],
  ) {
    child.stderr?.setEncoding('utf8');
    child.stderr?.on('data', (s: string) => {
      this.stderrTail = (this.stderrTail + s).slice(-8192);
    });
    this.exited = child
      .then(
        (r) => r,
        (r) => r,
      )
      .then((r: { exitCode?: number; signal?: string }) => {
        this.exitInfo = { code: r.exitCode ?? null, signal: r.signal ?? null, stderr: this.stderrTail.trim() };
        return this.exitInfo;
      });
  }

  get pid(): number | undefined {
    return this.child.pid;
  }
  get hasExited(): boolean {
    return this.exitInfo !== undefined;
  }
  get stderr(): string {
    return this.stderrTail.trim();
  }

  /** Waits up to `ms` for QEMU to exit by itself; true if it did. */
  async waitForExit(ms: number): Promise<boolean> {
    if (this.exitInfo) return true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<false>((resolve) => {
      timer = setTimeout(() => resolve(false), ms);
    });
    const done = await Promise.race([this.exited.then(() => true as const), timeout]);
    clearTimeout(timer);
    return done;
  }

  /** SIGTERM, then SIGKILL if QEMU is still there after `graceMs`. Idempotent. */
  async kill(graceMs = 2000): Promise<void> {
    if (this.exitInfo) return;
    this.child.kill('SIGTERM');
    if (!(await this.waitForExit(graceMs))) {
      this.child.kill('SIGKILL');
      await this.exited;
    }
  }
}

/** Starts `binary args` so that it dies with kiln (see diesWithKiln). */
export function startQemu(binary: string, args: string[], opts: { cwd?: string } = {}): QemuProcess {
  const [file, argv] = diesWithKiln(binary, args);
  const child = execa(file, argv, {
    cwd: opts.cwd,
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'pipe',
    reject: false,
    cleanup: true,
    buffer: false,
    detached: false,
  });
  return new QemuChild(child, [binary, ...args]);
}

/** QemuProcess.start(args): the default QEMU binary, for test helpers that boot a guest without a build. */
export const QemuProcess = {
  start: (args: string[], opts: { cwd?: string } = {}, binary = defaultQemuBinary): QemuProcess =>
    startQemu(binary, args, opts),
};
