// The guest proxy of --record/--offline builds, step by step over a fake SSH session: the install
// script goes in on stdin as root (sudo -n for another user) with kiln's proxy and its HTTP server's
// guest address; an ordinary build that boots a cached layer takes such settings out; a failure is
// named with its fix. The VM's network is restrict=on while recording too, with forwards to the proxy
// and the HTTP server only. After the provisioners, a name resolution failure on the serial console
// (cloud-init's packages:, a unit) fails the build naming it.
import { writeFileSync } from 'node:fs';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { guestProxyStep } from '../../../../src/build/steps/guest-proxy.js';
import { proxyBypassCheckStep } from '../../../../src/build/steps/proxy-bypass-check.js';
import { airgapNet } from '../../../../src/build/vm.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';
import type { AirgapGuestNetwork } from '../../../../src/build/state.js';
import { planOf } from '../../../helpers/plan.js';

afterAll(removeStepDirs);

const recording: AirgapGuestNetwork = {
  proxyHostPort: 40123,
  guestProxy: { ip: '10.0.2.100', port: 3128 },
  offline: false,
  httpIp: '10.0.2.101',
};
const http = { server: undefined as never, port: 40200, ip: '10.0.2.101', url: 'http://10.0.2.101:40200' };

describe('set the guest proxy', () => {
  it('is off without the cache or SSH; with the cache it is listed and does nothing unless a cached layer booted', async () => {
    expect(guestProxyStep.enabled!(stepContext().ctx)).toBe(false); // --no-cache (the harness's default)
    // Whether a cached layer boots is known only after the build-start event listed the steps: the
    // answer must not change once known (the announced list is the list that runs), so run() decides.
    const fresh = stepContext({ options: { noCache: false }, state: planOf('fresh') });
    expect(guestProxyStep.enabled!(fresh.ctx)).toBe(true);
    const ssh = new FakeSsh();
    fresh.ctx.state.ssh = ssh.session;
    expect((await runStep(guestProxyStep, fresh.ctx)).error).toBeUndefined();
    expect(ssh.commands).toEqual([]);
    const early = stepContext({ options: { noCache: false } });
    expect(guestProxyStep.enabled!(early.ctx)).toBe(true);
    expect(guestProxyStep.enabled!(stepContext({ options: { airgap: recording } }).ctx)).toBe(true);
    expect(guestProxyStep.enabled!(stepContext({ options: { noCache: false }, state: planOf('resume') }).ctx)).toBe(
      true,
    );
    expect(
      guestProxyStep.enabled!(
        stepContext({ options: { airgap: recording }, source: { communicator: { type: 'none' } } }).ctx,
      ),
    ).toBe(false);
  });

  it("recording: the install script on stdin, as root, with the proxy and kiln's HTTP server in no_proxy", async () => {
    const h = stepContext({ options: { airgap: recording }, state: { http } });
    const ssh = new FakeSsh();
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(guestProxyStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands).toHaveLength(1);
    expect(ssh.commands[0]!.command).toBe('sh -s');
    const script = ssh.commands[0]!.stdin!;
    expect(script).toContain('http_proxy=http://10.0.2.100:3128');
    expect(script).toContain('no_proxy=localhost,127.0.0.1,10.0.2.101');
    expect(script).toContain('Acquire::http::Proxy "http://10.0.2.100:3128";');
  });

  it('through sudo -n for another user; what the script could not set is a warning; a failure names its output and the fix', async () => {
    const h = stepContext({
      options: { airgap: recording },
      state: { http },
      source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } },
    });
    const ssh = new FakeSsh(() => ({
      exitCode: 0,
      stderr: 'kiln: no visudo in the guest: sudo keeps the proxy only through /etc/environment (pam_env)\n',
    }));
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(guestProxyStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands[0]!.command).toBe('sudo -n sh -s');
    expect(h.said('warn')).toEqual([
      'guest proxy: kiln: no visudo in the guest: sudo keeps the proxy only through /etc/environment (pam_env)',
    ]);

    const h2 = stepContext({
      options: { airgap: recording },
      state: { http },
      source: { communicator: { username: 'debian', password: 'pw', trust_on_first_use: true } },
    });
    h2.ctx.state.ssh = new FakeSsh(() => ({ exitCode: 1, stderr: 'sudo: a password is required\n' })).session;
    const { error } = await runStep(guestProxyStep, h2.ctx);
    expect(error).toContain(
      "making kiln's package proxy (http://10.0.2.100:3128) the guest's system proxy failed (exit 1): sudo: a password is required",
    );
    expect(error).toContain('fix: the build user needs root');
  });

  it('an ordinary build on a cached layer takes out settings a --record/--offline build left in it', async () => {
    const h = stepContext({
      options: { noCache: false },
      state: { ...planOf('resume'), http: { ...http, ip: '10.0.2.2' } },
    });
    const ssh = new FakeSsh();
    h.ctx.state.ssh = ssh.session;
    expect((await runStep(guestProxyStep, h.ctx)).error).toBeUndefined();
    const script = ssh.commands[0]!.stdin!;
    expect(script).not.toContain('http_proxy=');
    expect(script).toContain('rm -rf "$S"');
  });

  it('an ordinary build on a layer an ordinary build saved starts no root shell; a layer whose record does not say so, or says a proxy is in it, gets the clean-up', async () => {
    const onLayer = (guestProxy: boolean | undefined) => {
      const h = stepContext({ options: { noCache: false }, state: { ...planOf('resume'), http } });
      h.ctx.state.layers = {
        cachedCount: 1,
        plan: [{ key: 'a'.repeat(64) }],
        store: { meta: (key: string) => (key === 'a'.repeat(64) ? { guestProxy } : undefined) },
      } as never;
      const ssh = new FakeSsh();
      h.ctx.state.ssh = ssh.session;
      return { h, ssh };
    };
    const clean = onLayer(false);
    expect((await runStep(guestProxyStep, clean.h.ctx)).error).toBeUndefined();
    expect(clean.ssh.commands).toEqual([]);
    expect(clean.h.said('debug')).toContain('guest proxy: none (the cached layer was saved by a build without one)');
    for (const record of [undefined, true]) {
      const other = onLayer(record);
      expect((await runStep(guestProxyStep, other.h.ctx)).error).toBeUndefined();
      expect(other.ssh.commands.map((c) => c.command)).toEqual(['sh -s']);
    }
  });
});

describe("the VM's network in --record and --offline builds", () => {
  it('is restrict=on while recording too, with forwards to the proxy and the HTTP server only', () => {
    const h = stepContext({ options: { airgap: recording }, state: { http } });
    expect(airgapNet(h.ctx)).toEqual({
      restrict: true,
      guestForwards: [
        { guestIp: '10.0.2.100', guestPort: 3128, hostPort: 40123 },
        { guestIp: '10.0.2.101', guestPort: 40200, hostPort: 40200 },
      ],
    });
    expect(airgapNet(stepContext().ctx)).toEqual({});
  });
});

describe('check the guest fetched through the proxy', () => {
  it('fails naming a console line that shows a name that did not resolve; a clean console passes', async () => {
    const h = stepContext({ options: { airgap: recording } });
    const log = path.join(h.dir, 'serial.log');
    writeFileSync(
      log,
      "[  OK  ] Started ssh.service\r\nW: Failed to fetch http://deb.debian.org/debian/dists/bookworm/InRelease  Temporary failure resolving 'deb.debian.org'\r\n",
    );
    h.ctx.state.serialLog = log;
    const { error } = await runStep(proxyBypassCheckStep, h.ctx);
    expect(error).toContain("Temporary failure resolving 'deb.debian.org'");
    expect(error).toContain("went around kiln's package proxy");
    expect(error).toContain('fix: fetch over http:// through the proxy');
    writeFileSync(log, 'kiln-tiny: ready\n');
    expect((await runStep(proxyBypassCheckStep, h.ctx)).error).toBeUndefined();
    expect(proxyBypassCheckStep.enabled!(stepContext({ state: { serialLog: log } }).ctx)).toBe(false);
    // decided before launch, when there is no serial log yet
    expect(proxyBypassCheckStep.enabled!(stepContext({ options: { airgap: recording } }).ctx)).toBe(true);
  });
});

describe("kiln's HTTP server while recording", () => {
  it('is at the forwarded address, as offline (slirp cannot forward its own 10.0.2.2 under restrict=on)', async () => {
    const { httpServerStep } = await import('../../../../src/build/steps/http-server.js');
    const h = stepContext({ options: { airgap: recording } });
    const { cleanup } = await runStep(httpServerStep, h.ctx);
    expect(h.ctx.state.http!.url).toBe(`http://10.0.2.101:${h.ctx.state.http!.port}`);
    await cleanup!();
  });
});
