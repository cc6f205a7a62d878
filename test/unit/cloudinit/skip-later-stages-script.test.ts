// The bootcmd that skips cloud-init's config and final stages (src/guest-scripts/cloud-init-skip-later-stages.sh),
// run with sh on a tree laid out as a guest's, with systemctl and systemd-run replaced by wrappers that
// log their arguments (systemd-run's runs the command it was given at once, as the unit would once the
// init stage has ended): the stages' jobs are stopped, then boot-finished, the console line and
// result.json are written in that order; nothing happens off systemd or on cloud-init's single-process
// design; a systemd-run that fails starts the stages again, so something still ends them.
import { spawnSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { skipLaterStagesScript } from '../../../src/cloudinit/seed.js';
import { guestScript, guestScriptVars } from '../../../src/util/guest-scripts.js';
import { systemdWrappers } from '../../helpers/systemd-wrappers.js';

const dirs: string[] = [];
afterAll(() => {
  for (const d of dirs) rmSync(d, { recursive: true, force: true });
});

/** A guest-like tree in a directory whose name has a space, and the wrappers on PATH. */
function fakeGuest(opts: { systemd?: boolean; mainService?: boolean; systemdRunFails?: boolean } = {}) {
  const top = mkdtempSync(path.join(os.tmpdir(), 'kiln skip-stages-'));
  dirs.push(top);
  const root = path.join(top, 'root');
  for (const d of ['proc', 'dev', 'run/cloud-init', 'var/lib/cloud/instance', 'lib/systemd/system'])
    mkdirSync(path.join(root, d), { recursive: true });
  if (opts.systemd !== false) mkdirSync(path.join(root, 'run/systemd/system'), { recursive: true });
  if (opts.mainService) writeFileSync(path.join(root, 'lib/systemd/system/cloud-init-main.service'), '');
  writeFileSync(path.join(root, 'proc/uptime'), '21.37 30.02\n');
  const systemd = systemdWrappers(top, opts);
  const r = spawnSync('sh', ['-c', skipLaterStagesScript(root)], {
    env: systemd.env,
    encoding: 'utf8',
  });
  const read = (p: string) => (existsSync(path.join(root, p)) ? readFileSync(path.join(root, p), 'utf8') : undefined);
  return {
    r,
    calls: systemd.calls(),
    read,
  };
}

describe('the bootcmd that skips the config and final stages', () => {
  it("stops the stages' start jobs, then a unit after the init stage writes what cloud-init's last stage would", () => {
    const g = fakeGuest();
    expect(g.r.status, g.r.stderr).toBe(0);
    expect(g.r.stderr).toBe('');
    expect(g.calls[0]).toBe('systemctl stop --no-block cloud-config.service cloud-final.service');
    expect(g.calls[1]).toMatch(
      /^systemd-run --no-block --quiet --unit=kiln-cloud-init-done -p After=cloud-init\.service sh -c r=\$1~.* sh .*\/root$/,
    );
    expect(g.calls).toHaveLength(2);
    expect(g.read('var/lib/cloud/instance/boot-finished')).toBe(
      "21.37 - kiln skipped cloud-init's config and final stages (nothing to do for the build)\n",
    );
    expect(g.read('dev/console')).toBe(
      "kiln: cloud-init's config and final stages skipped (nothing to do for the build)\n",
    );
    // What `cloud-init status` reads as done (JSON, as cloud-init's own).
    expect(JSON.parse(g.read('run/cloud-init/result.json')!)).toEqual({ v1: { datasource: null, errors: [] } });
  });

  it('does nothing without systemd or on cloud-init-main.service', () => {
    for (const g of [fakeGuest({ systemd: false }), fakeGuest({ mainService: true })]) {
      expect(g.r.status).toBe(0);
      expect(g.calls).toEqual([]);
      expect(g.read('run/cloud-init/result.json')).toBeUndefined();
    }
  });

  it('starts the stages again when the unit that would end them cannot be made', () => {
    const g = fakeGuest({ systemdRunFails: true });
    expect(g.r.status).toBe(0);
    expect(g.calls.map((c) => c.split(' ').slice(0, 2).join(' '))).toEqual([
      'systemctl stop',
      'systemd-run --no-block',
      'systemctl start',
    ]);
    expect(g.calls[2]).toBe('systemctl start --no-block cloud-config.service cloud-final.service');
    expect(g.read('run/cloud-init/result.json')).toBeUndefined();
  });
});

describe("cloud_init.wait's shell where the later stages were skipped (cloud-init-init-stage-wait.sh)", () => {
  /** Runs the wait on a tree holding `files`, with a `cloud-init` on PATH that says what it was asked. */
  const waitOn = (files: Record<string, string>) => {
    const top = mkdtempSync(path.join(os.tmpdir(), 'kiln init-wait-'));
    dirs.push(top);
    const root = path.join(top, 'root');
    for (const [p, content] of Object.entries(files)) {
      mkdirSync(path.dirname(path.join(root, p)), { recursive: true });
      writeFileSync(path.join(root, p), content);
    }
    mkdirSync(path.join(top, 'bin'));
    writeFileSync(path.join(top, 'bin', 'cloud-init'), '#!/bin/sh\necho "cloud-init $*: status: error"\n');
    chmodSync(path.join(top, 'bin', 'cloud-init'), 0o755);
    const script =
      guestScriptVars({ R: root, WAIT_SECONDS: 1 }) +
      guestScript('cloud-init-final-wait') +
      guestScript('cloud-init-init-stage-wait');
    return spawnSync('sh', ['-c', script], {
      env: { ...process.env, PATH: `${path.join(top, 'bin')}:${process.env.PATH}` },
      encoding: 'utf8',
    });
  };
  // As cloud-init 22.4 writes it (json.dumps, indent=1).
  const status = (errors: string) =>
    `{\n "v1": {\n  "datasource": "DataSourceNoCloudNet",\n  "init": {\n   "errors": ${errors},\n   "finished": 12.5,\n   "start": 10.1\n  },\n  "init-local": {\n   "errors": [],\n   "finished": 8.2,\n   "start": 6.0\n  },\n  "stage": null\n }\n}\n`;

  it('done once result.json is there and no stage lists an error, without asking cloud-init', () => {
    const r = waitOn({ 'run/cloud-init/status.json': status('[]'), 'run/cloud-init/result.json': '{}' });
    expect([r.status, r.stdout]).toEqual([0, 'status: done\n']);
  });
  it("a stage's errors: cloud-init's own account of them, and exit 1", () => {
    const r = waitOn({
      'run/cloud-init/status.json': status('[\n    "boom"\n   ]'),
      'run/cloud-init/result.json': '{}',
    });
    expect([r.status, r.stdout]).toEqual([1, 'cloud-init status --long: status: error\n']);
  });
  it('an init stage that never ends is named after WAIT_SECONDS', () => {
    const r = waitOn({ 'run/cloud-init/status.json': status('[]') });
    expect(r.status).toBe(1);
    expect(r.stdout).toMatch(
      /^cloud-init's init stage had not ended after 1 s \(no .*\/run\/cloud-init\/result\.json\)\n$/,
    );
  });
});
