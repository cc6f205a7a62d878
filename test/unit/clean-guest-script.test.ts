// The guest clean-up script (src/build/steps/clean-guest.ts): valid sh, one sync between overwriting
// and deleting (not one per file), no shred passes with their own fsyncs, no `cloud-init clean` Python
// start, and the build key's lines are what leaves authorized_keys.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { cleanGuestScript } from '../../src/build/steps/clean-guest.js';

describe('cleanGuestScript', () => {
  for (const cloudInit of [true, false]) {
    it(`is valid sh and syncs at most once (cloud-init ${cloudInit})`, () => {
      const script = cleanGuestScript(cloudInit);
      expect(spawnSync('sh', ['-n'], { input: script }).status).toBe(0);
      expect(script.match(/\bsync\b/g)?.length ?? 0).toBe(cloudInit ? 1 : 0);
      expect(script).not.toMatch(/shred|cloud-init clean/);
      expect(script).toContain("grep -v ' kiln-build-[A-Za-z0-9_.-]*$'");
    });
  }

  it('overwrites the host keys and cloud-init state, syncs, and only then deletes them', () => {
    const script = cleanGuestScript(true);
    const zeroAt = script.indexOf('| zero');
    const syncAt = script.indexOf('sync');
    const rmAt = script.indexOf('rm -rf');
    expect(zeroAt).toBeGreaterThan(0);
    expect(syncAt).toBeGreaterThan(zeroAt);
    expect(rmAt).toBeGreaterThan(syncAt);
    expect(script).toContain('/etc/ssh');
    expect(script).toContain('/var/lib/cloud');
  });
});
