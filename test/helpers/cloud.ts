/** A cloud-init seed for booting Debian guests in tests: a user with a fresh key, and a known host key. */
import { renderSeed, type Seed } from '../../src/cloudinit/seed.js';
import { generateKeyPair, type KeyPair } from '../../src/communicator/keys.js';

export interface TestSeed {
  seed: Seed;
  userKey: KeyPair;
  hostKey: KeyPair;
  username: string;
}

/**
 * A seed from kiln's own renderer; `laterStages: 'always'` keeps cloud-init's config and final stages, as
 * a user's own seed would (kiln's skips them when they have nothing to do).
 */
export function testSeed(
  username = 'tester',
  userData: Record<string, unknown> = {},
  laterStages: 'auto' | 'always' = 'auto',
): TestSeed {
  const userKey = generateKeyPair('test-user');
  const hostKey = generateKeyPair('test-host');
  const seed = renderSeed({
    hostname: 'kiln-test',
    username,
    authorizedKey: userKey.publicKey,
    hostKey,
    userData,
    metaData: {},
    laterStages,
  });
  return { seed, userKey, hostKey, username };
}
