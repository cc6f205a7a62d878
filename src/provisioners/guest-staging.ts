/**
 * A directory in the guest for the files a provisioner uploads (playbooks, manifests, modules): made
 * fresh (private to the SSH user) unless the template names one, and removed afterwards unless asked
 * to keep it.
 */
import { randomBytes } from 'node:crypto';
import type { ProvisionerContext } from './context.js';
import type { SshSession } from '../communicator/ssh.js';
import { shellQuote } from '../communicator/remote-command.js';
import { sshSession } from './context.js';

export async function withGuestStaging<T>(
  ctx: ProvisionerContext,
  prefix: string,
  opts: { directory?: string; clean: boolean },
  signal: AbortSignal,
  work: (ssh: SshSession, dir: string) => Promise<T>,
): Promise<T> {
  const ssh = await sshSession(ctx, signal);
  const dir = opts.directory ?? `/tmp/${prefix}-${randomBytes(6).toString('hex')}`;
  await ssh.run(opts.directory ? `mkdir -p ${shellQuote(dir)}` : `mkdir -m 0700 ${shellQuote(dir)}`, signal);
  try {
    return await work(ssh, dir);
  } finally {
    // Puppet and Ansible with become may leave root-owned files behind: fall back to sudo.
    // An interrupted build's disk is discarded anyway.
    if (opts.clean && !ctx.signal.aborted && ssh.connected) {
      await ssh
        .exec(`rm -rf ${shellQuote(dir)} 2>/dev/null || sudo -n rm -rf ${shellQuote(dir)}`, { timeoutMs: 30_000 })
        .catch(() => undefined);
    }
  }
}
