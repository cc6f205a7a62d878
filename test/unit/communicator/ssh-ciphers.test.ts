import { describe, expect, it } from 'vitest';
import { preferredCiphers } from '../../../src/communicator/ssh.js';

const ssh2Defaults = [
  'aes128-gcm@openssh.com',
  'aes256-gcm@openssh.com',
  'aes128-ctr',
  'aes192-ctr',
  'chacha20-poly1305@openssh.com',
  'aes256-ctr',
];

describe('preferredCiphers', () => {
  it('offers ChaCha20-Poly1305 first when ssh2 has its native binding, keeping every other cipher in order', () => {
    expect(preferredCiphers(ssh2Defaults, true)).toEqual([
      'chacha20-poly1305@openssh.com',
      'aes128-gcm@openssh.com',
      'aes256-gcm@openssh.com',
      'aes128-ctr',
      'aes192-ctr',
      'aes256-ctr',
    ]);
  });

  it("keeps ssh2's order without the binding, and never adds a cipher ssh2 cannot use", () => {
    expect(preferredCiphers(ssh2Defaults, false)).toEqual(ssh2Defaults);
    const noChacha = ssh2Defaults.filter((c) => !c.startsWith('chacha'));
    expect(preferredCiphers(noChacha, true)).toEqual(noChacha);
  });
});
