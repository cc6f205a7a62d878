/**
 * One build-context factory (src/build/context.ts) for the build and the step tests' harness: the
 * harness once made its own and drifted (no ssh_public_key, no ssh_username among ${build.*}).
 */
import { afterAll, describe, expect, it } from 'vitest';
import { removeStepDirs, stepContext } from '../../helpers/step-context.js';

afterAll(removeStepDirs);

describe('build context', () => {
  it('gives a step in a test the ${build.*} values a build gives it, growing as the state does', () => {
    const h = stepContext();
    expect(h.ctx.buildValues()).toEqual({
      name: 'unit',
      output_dir: h.ctx.build.output_directory,
      ssh_username: 'root',
    });
    h.ctx.state.buildKey = { privateKey: 'private', publicKey: 'ssh-ed25519 AAAA kiln-build', fingerprint: 'SHA256:x' };
    h.ctx.state.sshHostPort = 2222;
    h.ctx.state.disk = { path: '/work/disk.qcow2', format: 'qcow2', virtualSize: 1 };
    expect(h.ctx.buildValues()).toMatchObject({
      ssh_public_key: 'ssh-ed25519 AAAA kiln-build',
      ssh_username: 'root',
      ssh_host: '127.0.0.1',
      ssh_port: 2222,
      disk: '/work/disk.qcow2',
    });
  });

  it('holds the driver it was given, and logs as events of its build', () => {
    const h = stepContext();
    expect(h.ctx.driver).toBe(h.driver);
    expect(h.ctx.options.driver).toBe(h.driver);
    h.ctx.log('hello', 'warn');
    expect(h.said('warn')).toEqual(['hello']);
  });

  it('leaves ssh_username out without a communicator', () => {
    const h = stepContext({ source: { communicator: { type: 'none' } } });
    expect(h.ctx.buildValues()).not.toHaveProperty('ssh_username');
  });
});
