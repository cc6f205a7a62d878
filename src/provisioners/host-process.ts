/**
 * A program run on the host for a provisioner or post-processor (shell-local, ansible-playbook), in a
 * process group of its own, killed whole when stopped (the build's interrupt, the provisioner's
 * timeout): a shell's `sleep`, or Ansible's forked workers and ssh clients, would otherwise live on and
 * hold its output open, which the call waits for.
 */
import { execa } from 'execa';

/** How long a stopped host program has between SIGTERM and SIGKILL. */
const termGraceMs = 3000;

export interface HostProgramOptions {
  env: Record<string, string>;
  cwd: string;
  signal: AbortSignal;
  stdout: (text: string) => void;
  stderr: (text: string) => void;
}

/** Runs `file args` to its end (never rejects: the result carries the exit code, signal or spawn error). */
export function runInOwnProcessGroup(file: string, args: string[], o: HostProgramOptions) {
  const child = execa(file, args, { env: o.env, cwd: o.cwd, reject: false, stdin: 'ignore', detached: true });
  const signalGroup = (sig: NodeJS.Signals) => {
    try {
      process.kill(-child.pid!, sig);
    } catch {
      /* the group is gone */
    }
  };
  const stop = () => {
    signalGroup('SIGTERM');
    setTimeout(() => signalGroup('SIGKILL'), termGraceMs).unref();
  };
  o.signal.addEventListener('abort', stop, { once: true });
  if (o.signal.aborted) stop();
  child.stdout?.on('data', (b: Buffer) => o.stdout(b.toString()));
  child.stderr?.on('data', (b: Buffer) => o.stderr(b.toString()));
  return child.finally(() => o.signal.removeEventListener('abort', stop));
}
