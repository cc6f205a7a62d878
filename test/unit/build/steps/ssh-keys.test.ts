// The SSH identity step: a build key named for kiln (so images never keep it), a host key when kiln
// gives the guest cloud-init, every private part registered as a secret (masked in events).
import { afterAll, describe, expect, it } from 'vitest';
import { sshKeysStep } from '../../../../src/build/steps/ssh-keys.js';
import { buildKeyCommentPrefix } from '../../../../src/communicator/build-key.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('generate SSH keys', () => {
  it("a build key whose comment marks it as kiln's, no host key without cloud-init; secrets are masked", async () => {
    const h = stepContext();
    expect((await runStep(sshKeysStep, h.ctx)).error).toBeUndefined();
    const key = h.ctx.state.buildKey!;
    expect(key.publicKey).toMatch(new RegExp(` ${buildKeyCommentPrefix}unit$`));
    expect(h.ctx.state.hostKey).toBeUndefined();
    h.ctx.log(`leak? ${key.privateKey} unit-secret`);
    expect(h.said().at(-1)).not.toContain(key.privateKey.split('\n')[1]);
    expect(h.said().at(-1)).not.toContain('unit-secret');
  });

  it('with cloud-init, a host key for the guest too', async () => {
    const h = stepContext({ source: { cloud_init: {} } });
    await runStep(sshKeysStep, h.ctx);
    expect(h.ctx.state.hostKey!.publicKey).toMatch(/ kiln-host-unit$/);
  });

  it('a private_key_file that does not exist fails with its path', async () => {
    const h = stepContext();
    const comm = h.ctx.build.source.communicator;
    if (comm.type === 'ssh') comm.private_key_file = '/nonexistent/key';
    expect((await runStep(sshKeysStep, h.ctx)).error).toMatch(/\/nonexistent\/key/);
  });
});
