/**
 * Step: take kiln's access back out of the guest before it is captured: the build key leaves
 * authorized_keys, and on cloud-init guests the host keys kiln injected are deleted and cloud-init's
 * state cleaned, so every machine made from the image gets its own host keys and first-boot run.
 */
import type { Step } from '../step.js';
import { need } from '../state.js';
import { sshSession } from '../../provisioners/context.js';
import { asRoot } from './wait-ssh.js';
import { buildKeyCommentPrefix } from './ssh-keys.js';

export const cleanGuestStep: Step = {
  name: 'remove build access',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const key = need(ctx.state, 'buildKey');
    const ssh = await sshSession(ctx);
    const commands: string[] = [];
    // The key's base64 body is unique to this build; keys of earlier builds that a cached layer
    // carries are found by the comment kiln gives every build key.
    const body = comm.private_key_file ? undefined : key.publicKey.split(/\s+/)[1]!;
    const sed = [...(body ? [`\\#${body}#d`] : []), `/ ${buildKeyCommentPrefix}[A-Za-z0-9_.-]*$/d`].map((e) => `-e '${e}'`).join(' ');
    commands.push(`for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do [ -f "$f" ] && sed -i ${sed} "$f"; done; true`);
    if (ctx.build.source.cloud_init !== false) {
      commands.push('if command -v cloud-init >/dev/null; then cloud-init clean --logs >/dev/null 2>&1 || true; rm -f /etc/ssh/ssh_host_*; fi');
    }
    if (!commands.length) return;
    await ssh.run(asRoot(comm.username, commands.join('; ')));
  },
};
