/** What a provisioner gets to work with: the build context, an SSH session on demand, output lines. */
import { need } from '../util/need.js';
import { waitForSsh, type SshSession, type SshTarget } from '../communicator/ssh.js';
import type { KeyPair } from '../communicator/keys.js';
import type { QemuProcess } from '../qemu/process.js';
import type { LoadedTemplate } from '../template/load.js';
import type { BuildConfig } from '../template/schema.js';
import type { Scalar } from '../template/interpolate.js';
import type { EventBus } from '../ui/events.js';
import { shellQuote, shellVariableName } from '../communicator/remote-command.js';

/** The part of a build's state provisioners read and write (the build's state object itself). */
export interface ProvisionerState {
  workDir: string;
  sshTarget?: SshTarget;
  ssh?: SshSession;
  buildKey?: KeyPair;
  hostKey?: KeyPair;
  qemu?: QemuProcess;
  serialLog?: string;
  /**
   * Files a provisioner put in the guest for itself (the shell provisioner's scripts), removed by the
   * next command kiln runs there: under TCG each command costs a process start or two (0.2-0.5 s, several
   * seconds on a busy host), so after a successful run the removal rides on the `sync` before a layer is
   * frozen (takeGuestLeftovers), or goes alone (removeGuestLeftovers) after a failure or when no layer
   * follows.
   */
  guestLeftovers?: string[];
}

/** The command removing the guest leftovers recorded so far (and forgetting them), or undefined. */
export function takeGuestLeftovers(st: ProvisionerState): string | undefined {
  const files = st.guestLeftovers ?? [];
  st.guestLeftovers = [];
  return files.length ? `rm -f ${files.map(shellQuote).join(' ')}` : undefined;
}

/** Removes the guest leftovers now, in a command of their own; a guest gone or an interrupt leaves them. */
export async function removeGuestLeftovers(ctx: ProvisionerContext): Promise<void> {
  const command = takeGuestLeftovers(ctx.state);
  const ssh = ctx.state.ssh;
  if (command && !ctx.signal.aborted && ssh?.connected)
    await ssh.exec(command, { timeoutMs: 10_000 }).catch(() => undefined);
}

/**
 * The build context as provisioners see it. The build layer's BuildContext has all of this and more
 * (it is passed as is); defined here so provisioners, a layer below the build, do not import it.
 */
export interface ProvisionerContext {
  template: LoadedTemplate;
  build: BuildConfig;
  options: { prompt?: (question: string) => Promise<string>; airgap?: { guestProxy: { ip: string; port: number } } };
  events: EventBus;
  state: ProvisionerState;
  signal: AbortSignal;
  /** `${build.*}` values known so far. */
  buildValues(): Record<string, Scalar>;
  log(message: string, level?: 'info' | 'warn' | 'debug'): void;
}

/**
 * The live session, reconnecting after a provisioner that expected a disconnect (a reboot); waiting
 * to reconnect ends when `signal` aborts.
 */
export async function sshSession(ctx: ProvisionerContext, signal: AbortSignal = ctx.signal): Promise<SshSession> {
  const st = ctx.state;
  if (st.ssh?.connected) return st.ssh;
  const comm = ctx.build.source.communicator;
  const qemu = need(st, 'qemu');
  ctx.log('reconnecting SSH', 'debug');
  try {
    st.ssh = await waitForSsh(need(st, 'sshTarget'), {
      timeoutMs: comm.type === 'ssh' ? comm.timeout : 60_000,
      bannerTimeoutMs: 1000,
      abort: () =>
        signal.aborted ? 'stopped' : qemu.hasExited ? 'QEMU exited while kiln waited to reconnect' : undefined,
    });
  } catch (e) {
    signal.throwIfAborted();
    throw e;
  }
  return st.ssh;
}

/** Splits a byte stream into whole lines for the "output" events; flush() emits a trailing partial. */
export function lineSplitter(emit: (line: string) => void): { write: (s: string) => void; flush: () => void } {
  let partial = '';
  return {
    write(s) {
      partial += s;
      const lines = partial.split(/\r?\n/);
      partial = lines.pop() ?? '';
      // A carriage return redraws a line on a terminal (progress counters): keep what it would show.
      for (const l of lines) emit(l.slice(l.lastIndexOf('\r') + 1));
    },
    flush() {
      if (partial) emit(partial.slice(partial.lastIndexOf('\r') + 1));
      partial = '';
    },
  };
}

/**
 * `KEY='value'` pairs for a POSIX shell. The template's validation rejects other keys already; one
 * that got here anyway would be shell code, so it is refused again.
 */
export function shellEnv(env: Record<string, string | number | boolean>): string {
  return Object.entries(env)
    .map(([k, v]) => {
      if (!shellVariableName.test(k))
        throw new Error(`env key ${JSON.stringify(k)} is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)`);
      return `${k}=${shellQuote(String(v))}`;
    })
    .join(' ');
}
