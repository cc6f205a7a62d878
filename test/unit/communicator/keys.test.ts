// kiln's per-build SSH keys: every pair it hands out parses back with the library that will use it.
import ssh2 from 'ssh2';
import { describe, expect, it } from 'vitest';
import { fingerprintOf, generateKeyPair, publicKeyOf } from '../../../src/communicator/keys.js';

describe('generateKeyPair', () => {
  // ssh2's own generator writes an unparsable private key about once in 170: among 2000 pairs, one
  // would turn up with near certainty (a build that got it failed to log in or to serve its host key).
  it('hands out only keys ssh2 parses back, whose public half and fingerprint match', () => {
    const unparsable: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const pair = generateKeyPair(`unit-${i}`);
      if (ssh2.utils.parseKey(pair.privateKey) instanceof Error) unparsable.push(i);
      else if (i % 100 === 0) {
        expect(publicKeyOf(pair.privateKey)).toBe(pair.publicKey.split(' ').slice(0, 2).join(' '));
        expect(pair.fingerprint).toBe(fingerprintOf(pair.publicKey));
      }
    }
    expect(unparsable).toEqual([]);
  });
});
