/** Step: this build's SSH identity: an ephemeral client key, and the host key the guest will be given. */
import { readFileSync } from 'node:fs';
import type { Step } from '../step.js';
import { generateKeyPair, publicKeyOf } from '../../communicator/keys.js';

/** Every generated build key carries this comment, so images never keep one (see clean-guest.ts). */
export const buildKeyCommentPrefix = 'kiln-build-';

export const sshKeysStep: Step = {
  name: 'generate SSH keys',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    if (comm.private_key_file) {
      const privateKey = readFileSync(comm.private_key_file, 'utf8');
      ctx.state.buildKey = { privateKey, publicKey: publicKeyOf(privateKey), fingerprint: '' };
    } else {
      const layers = ctx.state.layers;
      const saved =
        layers && layers.cachedCount > 0 && ctx.build.source.cloud_init === false
          ? layers.store.sshKey(layers.plan[layers.cachedCount - 1]!.key!)
          : undefined;
      if (saved) {
        // No cloud-init to give the resumed guest a new key: log in with the one its layer trusts.
        ctx.state.buildKey = { privateKey: saved, publicKey: publicKeyOf(saved), fingerprint: '' };
        ctx.log(
          'using the build key saved with the cached layer (the guest has no cloud-init to take a new one)',
          'debug',
        );
      } else {
        ctx.state.buildKey = generateKeyPair(`${buildKeyCommentPrefix}${ctx.build.name}`);
      }
    }
    ctx.events.addSecret(ctx.state.buildKey.privateKey);
    if (ctx.build.source.cloud_init !== false) {
      ctx.state.hostKey = generateKeyPair(`kiln-host-${ctx.build.name}`);
      ctx.events.addSecret(ctx.state.hostKey.privateKey);
    }
    if (comm.password) ctx.events.addSecret(comm.password);
  },
};
