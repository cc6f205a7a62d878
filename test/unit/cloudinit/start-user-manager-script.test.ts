// The bootcmd that starts the build user's systemd user manager once cloud-init's init stage has made
// the user (src/guest-scripts/start-user-manager.sh), run with sh on a tree laid out as a guest's, with
// systemctl and systemd-run replaced by wrappers that log their arguments (systemd-run's runs the
// command it was given at once, as the unit would after the init stage): the unit is ordered after the
// init stage under both its names and starts user@<uid>; nothing happens off systemd, for a user that
// does not exist, or when systemd-run fails (the first login starts the manager then, as before).
import { spawnSync } from 'node:child_process';
import { mkdirSync } from 'node:fs';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { startUserManagerScript } from '../../../src/cloudinit/seed.js';
import { systemdWrappers } from '../../helpers/systemd-wrappers.js';
import { tempDirMaker } from '../../helpers/temp-dirs.js';

const tempDir = tempDirMaker();

function fakeGuest(user: string, opts: { systemd?: boolean; systemdRunFails?: boolean } = {}) {
  const top = tempDir('kiln user-manager-');
  const root = path.join(top, 'root');
  mkdirSync(root);
  if (opts.systemd !== false) mkdirSync(path.join(root, 'run/systemd/system'), { recursive: true });
  const systemd = systemdWrappers(top, opts);
  const r = spawnSync('sh', ['-c', startUserManagerScript(user, root)], {
    env: systemd.env,
    encoding: 'utf8',
  });
  return { r, calls: systemd.calls() };
}

describe('the bootcmd that starts the build user manager', () => {
  it("runs a transient unit after the init stage that starts the user's manager without waiting for it", () => {
    const uid = spawnSync('id', ['-u', 'root'], { encoding: 'utf8' }).stdout.trim();
    const g = fakeGuest('root');
    expect(g.r.status, g.r.stderr).toBe(0);
    expect(g.r.stderr).toBe('');
    expect(g.calls[0]).toMatch(
      /^systemd-run --no-block --quiet --unit=kiln-user-manager -p After=cloud-init\.service -p After=cloud-init-network\.service sh -c .* sh root$/,
    );
    expect(g.calls[1]).toBe(`systemctl start --no-block user@${uid}.service`);
    expect(g.calls).toHaveLength(2);
  });

  it('starts nothing for a user that does not exist, off systemd, or when systemd-run fails', () => {
    const missing = fakeGuest('kiln-no-such-user-x');
    expect(missing.r.status).toBe(0);
    expect(missing.calls).toHaveLength(1); // systemd-run only
    const noSystemd = fakeGuest('root', { systemd: false });
    expect(noSystemd.r.status).toBe(0);
    expect(noSystemd.calls).toEqual([]);
    const failed = fakeGuest('root', { systemdRunFails: true });
    expect(failed.r.status).toBe(0);
    expect(failed.calls).toHaveLength(1);
  });

  it('passes a user name with quotes as one argument', () => {
    const script = startUserManagerScript("o'brien");
    expect(script).toMatch(/^R=''\nU='o'\\''brien'\n/);
  });
});
