/** Step: wait for SSH (short attempts, sub-second retries), verify the host key, wait for cloud-init. */
import { readFileSync } from 'node:fs';
import type { Step } from '../step.js';
import { need } from '../state.js';
import { HostKeyMismatchError, waitForSsh, type SshTarget } from '../../communicator/ssh.js';
import { parseDuration, formatDuration } from '../../template/units.js';
import { shellQuote } from '../../qemu/argv.js';
import { startVm } from './launch-qemu.js';

export function serialTail(file: string | undefined, lines = 30): string {
  if (!file) return '(no serial log)';
  try {
    // Strip terminal escapes so the tail reads cleanly in an error message.
    const text = readFileSync(file, 'utf8').replace(/\x1b\[[0-9;?]*[A-Za-z]/g, '').replace(/\r/g, '');
    return text.split('\n').filter((l) => l.trim()).slice(-lines).join('\n') || '(serial console printed nothing)';
  } catch { return '(no serial log)'; }
}

/** Commands run as the SSH user get sudo when that user is not root. */
export function asRoot(username: string, command: string): string {
  return username === 'root' ? command : `sudo -n sh -c '${command.replaceAll("'", `'\\''`)}'`;
}

export const waitSshStep: Step = {
  name: 'wait for SSH',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const st = ctx.state;
    const expectedHostKey = st.hostKey?.fingerprint ?? comm.host_key_fingerprint;
    if (!expectedHostKey) {
      if (!comm.trust_on_first_use) throw new Error('no way to verify the guest\'s host key\n  fix: enable cloud_init (kiln injects one), set communicator.host_key_fingerprint, or set communicator.trust_on_first_use: true');
      ctx.log('trusting the first SSH host key the guest shows (trust_on_first_use)', 'warn');
    }
    const target: SshTarget = {
      host: '127.0.0.1', port: need(st, 'sshHostPort'), username: comm.username,
      privateKey: st.buildKey?.privateKey, password: comm.password,
      hostKeyFingerprint: expectedHostKey, trustOnFirstUse: comm.trust_on_first_use,
    };
    const started = performance.now();
    const timeoutMs = parseDuration(comm.timeout);
    const deadline = Date.now() + (st.installing ? parseDuration(ctx.build.source.install_timeout) : 0) + timeoutMs;
    for (;;) {
      const current = need(st, 'qemu');
      try {
        st.ssh = await waitForSsh({ ...target, port: need(st, 'sshHostPort') }, {
          timeoutMs: Math.max(1000, deadline - Date.now()),
          bannerTimeoutMs: 1000,
          retryDelayMs: 200,
          abort: () => (ctx.signal.aborted ? 'interrupted'
            : current.hasExited ? `QEMU exited before SSH came up${current.stderr ? `: ${current.stderr}` : ''}` : undefined),
          onAttempt: (n, e) => ctx.log(`ssh attempt ${n}: ${e.message}`, 'debug'),
        });
        break;
      } catch (e) {
        ctx.signal.throwIfAborted();
        // An installer that powers off when done: boot the installed disk, without the ISO, and go on.
        if (st.installing && current.hasExited && (await current.exited).code === 0) {
          ctx.log(`installer finished after ${formatDuration(performance.now() - started)}; booting the installed disk`);
          st.qmp?.close();
          await startVm(ctx, false);
          continue;
        }
        const timedOut = !current.hasExited && !(e instanceof HostKeyMismatchError);
        const waited = !timedOut ? '' : `timed out waiting for the guest's SSH server (port ${comm.port} in the guest, communicator.timeout ${comm.timeout}): `;
        const fix = !timedOut ? '' : `\n  fix: check that the guest boots and runs an SSH server on port ${comm.port} (its console is below), or raise communicator.timeout`;
        throw new Error(`${waited}${(e as Error).message}${fix}\n--- last lines of the serial console (${st.serialLog}) ---\n${serialTail(st.serialLog)}\n--- QEMU command ---\n${shellQuote(current.argv)}`);
      }
    }
    target.port = need(st, 'sshHostPort');
    st.installing = false;
    st.sshTarget = target;
    st.timings['boot to SSH'] = performance.now() - started;
    ctx.log(`SSH up after ${formatDuration(performance.now() - started)} (host key ${st.ssh.hostKey})`);
    const ssh = st.ssh;
    const ci = ctx.build.source.cloud_init;
    // An interrupt closes the connection, so what runs over it ends: cloud-init can take minutes under TCG.
    const closeOnAbort = () => ssh.close();
    ctx.signal.addEventListener('abort', closeOnAbort, { once: true });
    try {
      ctx.signal.throwIfAborted();
      if (ci !== false && ci.wait) {
        let out = '';
        const r = await ssh.exec(asRoot(comm.username, 'command -v cloud-init >/dev/null || exit 0; cloud-init status --wait >/dev/null; cloud-init status --long'), { stdout: (s) => { out += s; }, stderr: (s) => { out += s; } });
        ctx.signal.throwIfAborted();
        if (r.exitCode === 2) ctx.log(`cloud-init finished with recoverable errors:\n${out.trim()}`, 'warn');
        else if (r.exitCode !== 0) throw new Error(`cloud-init failed in the guest (exit ${r.exitCode}):\n${out.trim()}`);
        ctx.log(`cloud-init done after ${formatDuration(performance.now() - started)}`, 'debug');
      }
    } catch (e) {
      if (ctx.signal.aborted) ssh.close();
      throw e;
    } finally {
      ctx.signal.removeEventListener('abort', closeOnAbort);
    }
    return () => { ssh.close(); };
  },
};
