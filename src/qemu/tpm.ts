/**
 * A TPM 2.0 for the build VM: one `swtpm socket --tpm2` per QEMU start, its state and control socket in
 * the build's work dir. It cannot outlive the build: `--terminate` ends it when QEMU drops the control
 * connection, and it is started like QEMU (diesWithKiln: SIGKILL when kiln dies, however kiln dies).
 */
import { execa } from 'execa';
import { existsSync, mkdirSync, rmSync } from 'node:fs';
import path from 'node:path';
import { requireExecutable } from './process.js';
import { diesWithKiln } from '../util/dies-with-kiln.js';
import { KilnError } from '../util/errors.js';

export interface TpmPaths {
  stateDir: string;
  socket: string;
  log: string;
}

/** Where a build's TPM lives: a short socket path (unix sockets must stay under 108 bytes). */
export function tpmPaths(workDir: string): TpmPaths {
  const stateDir = path.join(workDir, 'tpm');
  return { stateDir, socket: path.join(stateDir, 'swtpm.sock'), log: path.join(stateDir, 'swtpm.log') };
}

/** swtpm's command line (pure: unit-tested). */
export function swtpmArgs(p: TpmPaths): string[] {
  return [
    'socket',
    '--tpm2',
    '--tpmstate',
    `dir=${p.stateDir},mode=0600`,
    '--ctrl',
    `type=unixio,path=${p.socket},mode=0600`,
    '--log',
    `file=${p.log},level=1`,
    '--terminate',
  ];
}

/** QEMU's switches for the TPM at that socket. tpm-crb is the TPM 2.0 interface; the kernel has it built in (CONFIG_TCG_CRB). */
export function tpmQemuArgs(socket: string): string[][] {
  return [
    ['-chardev', `socket,id=chrtpm,path=${socket}`],
    ['-tpmdev', 'emulator,id=tpm0,chardev=chrtpm'],
    ['-device', 'tpm-crb,tpmdev=tpm0'],
  ];
}

export interface RunningTpm {
  readonly pid: number | undefined;
  readonly socket: string;
  /** swtpm has exited (with --terminate, when the QEMU it served did). */
  readonly hasExited: boolean;
  /** Stops swtpm (if QEMU's exit has not already ended it). The state stays until removeTpmState. */
  stop(): Promise<void>;
}

/** Starts swtpm and waits for its socket (QEMU fails at once if the socket is not there yet). */
export async function startTpm(workDir: string, binary = 'swtpm', signal?: AbortSignal): Promise<RunningTpm> {
  requireExecutable({ binary, name: 'swtpm', setting: 'PATH', setBySetting: false, aptPackage: 'swtpm swtpm-tools' });
  const p = tpmPaths(workDir);
  mkdirSync(p.stateDir, { recursive: true, mode: 0o700 });
  rmSync(p.socket, { force: true });
  const [file, argv] = diesWithKiln(binary, swtpmArgs(p));
  const child = execa(file, argv, {
    stdin: 'ignore',
    stdout: 'ignore',
    stderr: 'pipe',
    reject: false,
    cleanup: true,
    buffer: false,
  });
  let stderr = '';
  child.stderr?.setEncoding('utf8');
  child.stderr?.on('data', (s: string) => {
    stderr = (stderr + s).slice(-4096);
  });
  let exited = false;
  const done = child.then(
    () => {
      exited = true;
    },
    () => {
      exited = true;
    },
  );
  // The socket appears once swtpm listens: poll the fact, not a delay.
  for (let waited = 0; !existsSync(p.socket); waited += 20) {
    if (exited || waited > 10_000 || signal?.aborted) {
      child.kill('SIGKILL');
      await done;
      if (signal?.aborted) signal.throwIfAborted();
      throw new KilnError(
        `swtpm did not start${exited ? ' (it exited)' : ' within 10 s'}: ${stderr.trim() || `see ${p.log}`}\n  command: ${binary} ${swtpmArgs(p).join(' ')}`,
        { fix: `check that swtpm works here (apt-get install swtpm swtpm-tools), or remove tpm: true` },
      );
    }
    await new Promise((r) => setTimeout(r, 20));
  }
  return {
    pid: child.pid,
    socket: p.socket,
    get hasExited() {
      return exited;
    },
    async stop() {
      if (exited) return;
      child.kill('SIGTERM');
      const t = setTimeout(() => child.kill('SIGKILL'), 2000);
      await done;
      clearTimeout(t);
    },
  };
}

/** Removes the TPM's state (kiln wrote all of it): with the VM, at the end of the build. */
export function removeTpmState(workDir: string): void {
  rmSync(tpmPaths(workDir).stateDir, { recursive: true, force: true });
}
