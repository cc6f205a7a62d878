/**
 * Step: take kiln's access back out of the guest before it is captured: the build key leaves
 * authorized_keys, and on cloud-init guests the host keys kiln injected are deleted and cloud-init's
 * state cleaned, so every machine made from the image gets its own host keys and first-boot run.
 */
import type { Step } from '../step.js';
import { need } from '../state.js';
import { sshSession } from '../../provisioners/context.js';
import { asRoot } from './wait-ssh.js';

export const cleanGuestStep: Step = {
  name: 'remove build access',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const key = need(ctx.state, 'buildKey');
    const ssh = await sshSession(ctx);
    const commands: string[] = [];
    if (!comm.private_key_file) {
      // The key's base64 body is unique to this build; remove exactly the lines that carry it.
      const body = key.publicKey.split(/\s+/)[1]!;
      commands.push(`for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do [ -f "$f" ] && sed -i '\\#${body}#d' "$f"; done; true`);
    }
    if (ctx.build.source.cloud_init !== false) {
      commands.push('if command -v cloud-init >/dev/null; then cloud-init clean --logs >/dev/null 2>&1 || true; rm -f /etc/ssh/ssh_host_*; fi');
    }
    if (!commands.length) return;
    await ssh.run(asRoot(comm.username, commands.join('; ')));
  },
};
