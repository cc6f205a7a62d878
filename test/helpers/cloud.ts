/** A cloud-init seed for booting Debian guests in tests: a user with a fresh key, and a known host key. */
import { renderSeed, type Seed } from '../../src/cloudinit/seed.js';
import { generateKeyPair, type KeyPair } from '../../src/communicator/keys.js';

export interface TestSeed {
  seed: Seed;
  userKey: KeyPair;
  hostKey: KeyPair;
  username: string;
}

export function testSeed(username = 'tester', userData: Record<string, unknown> = {}): TestSeed {
  const userKey = generateKeyPair('test-user');
  const hostKey = generateKeyPair('test-host');
  const seed = renderSeed({
    hostname: 'kiln-test',
    username,
    authorizedKey: userKey.publicKey,
    hostKey,
    userData,
    metaData: {},
  });
  return { seed, userKey, hostKey, username };
}
