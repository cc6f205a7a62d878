/** What a provisioner gets to work with: the build context, an SSH session on demand, output lines. */
import type { BuildContext } from '../build/state.js';
import { need } from '../build/state.js';
import { waitForSsh, type SshSession } from '../communicator/ssh.js';
import { shellQuote, shellVariableName } from '../communicator/remote-command.js';
import { parseDuration } from '../template/units.js';

/**
 * The live session, reconnecting after a provisioner that expected a disconnect (a reboot); waiting
 * to reconnect ends when `signal` aborts.
 */
export async function sshSession(ctx: BuildContext, signal: AbortSignal = ctx.signal): Promise<SshSession> {
  const st = ctx.state;
  if (st.ssh?.connected) return st.ssh;
  const comm = ctx.build.source.communicator;
  const qemu = need(st, 'qemu');
  ctx.log('reconnecting SSH', 'debug');
  try {
    st.ssh = await waitForSsh(need(st, 'sshTarget'), {
      timeoutMs: comm.type === 'ssh' ? parseDuration(comm.timeout) : 60_000,
      bannerTimeoutMs: 1000,
      abort: () => (signal.aborted ? 'stopped' : qemu.hasExited ? 'QEMU exited while kiln waited to reconnect' : undefined),
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
    flush() { if (partial) emit(partial.slice(partial.lastIndexOf('\r') + 1)); partial = ''; },
  };
}

/**
 * `KEY='value'` pairs for a POSIX shell. The template's validation rejects other keys already; one
 * that got here anyway would be shell code, so it is refused again.
 */
export function shellEnv(env: Record<string, string | number | boolean>): string {
  return Object.entries(env).map(([k, v]) => {
    if (!shellVariableName.test(k)) throw new Error(`env key ${JSON.stringify(k)} is not a shell variable name ([A-Za-z_][A-Za-z0-9_]*)`);
    return `${k}=${shellQuote(String(v))}`;
  }).join(' ');
}
