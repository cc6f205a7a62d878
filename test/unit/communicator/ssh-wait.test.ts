// Waiting for SSH names the real cause of a failure: each attempt is classified by how far it got (no
// banner, handshake, login refused), refused logins end the wait early once nothing in the guest can
// change them, and the message and fix follow the furthest stage reached. The waits run against ssh2
// servers in this process; the messages are built from synthetic attempt outcomes.
import { appendFileSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import net, { type AddressInfo } from 'node:net';
import os from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import ssh2 from 'ssh2';
import {
  classifyAttempt,
  SshAttempts,
  SshWaitError,
  waitForSsh,
  type AttemptOutcome,
  type LoginSetup,
} from '../../../src/communicator/ssh.js';
import { generateKeyPair } from '../../../src/communicator/keys.js';
import {
  CloudInitConsoleWatch,
  offeredCredentials,
  sshWaitFailure,
  type SshWaitSetting,
} from '../../../src/build/steps/wait-ssh.js';
import { shutdownCommandFailure } from '../../../src/build/steps/shutdown.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'ssh-wait-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

const withLevel = (message: string, level: string) => Object.assign(new Error(message), { level });
const refused = () => withLevel('All configured authentication methods failed', 'client-authentication');

describe('classifyAttempt', () => {
  it('tells no banner, a failed handshake and a refused login apart', () => {
    expect(classifyAttempt(false, new Error('no SSH banner within 1000 ms'))).toBe('no-banner');
    expect(classifyAttempt(false, new Error('connection closed before the SSH banner'))).toBe('no-banner');
    expect(classifyAttempt(true, refused())).toBe('login-refused');
    expect(classifyAttempt(true, withLevel('Timed out while waiting for handshake', 'client-timeout'))).toBe(
      'handshake-failed',
    );
    expect(classifyAttempt(true, withLevel('Handshake failed: no matching key exchange algorithm', 'handshake'))).toBe(
      'handshake-failed',
    );
    expect(classifyAttempt(true, withLevel('read ECONNRESET', 'client-socket'))).toBe('handshake-failed');
  });
});

describe('SshAttempts: when refused logins are final', () => {
  it('without cloud-init: after the grace, counted from the first refusal', () => {
    const a = new SshAttempts(30_000);
    expect(a.record('no-banner', new Error('no SSH banner within 1000 ms'), undefined, 0)).toBe(false);
    expect(a.record('login-refused', refused(), 'no-cloud-init', 5_000)).toBe(false);
    expect(a.record('login-refused', refused(), 'no-cloud-init', 34_999)).toBe(false);
    expect(a.record('login-refused', refused(), 'no-cloud-init', 35_000)).toBe(true);
  });

  it('never while cloud-init runs or the installer ISO is booted; from the first refusal after cloud-init finished', () => {
    const a = new SshAttempts(30_000);
    for (let t = 0; t <= 600_000; t += 1000)
      expect(a.record('login-refused', refused(), t % 2 ? 'cloud-init-running' : 'installing', t)).toBe(false);
    expect(a.record('login-refused', refused(), 'cloud-init-finished', 601_000)).toBe(false);
    expect(a.record('login-refused', refused(), 'cloud-init-finished', 630_999)).toBe(false);
    expect(a.record('login-refused', refused(), 'cloud-init-finished', 631_000)).toBe(true);
  });

  it('any other outcome starts the grace over (sshd restarting, say)', () => {
    const a = new SshAttempts(30_000);
    a.record('login-refused', refused(), 'no-cloud-init', 0);
    a.record('handshake-failed', withLevel('read ECONNRESET', 'client-socket'), undefined, 20_000);
    expect(a.record('login-refused', refused(), 'no-cloud-init', 40_000)).toBe(false);
    expect(a.record('login-refused', refused(), 'no-cloud-init', 70_000)).toBe(true);
  });

  it('counts every outcome, reports the furthest stage reached and sums them up', () => {
    const a = new SshAttempts(30_000);
    expect(a.summary()).toBe('no attempt made');
    for (let i = 0; i < 3; i++) a.record('no-banner', new Error('no SSH banner within 1000 ms'), undefined, i);
    expect(a.furthest).toBe('no-banner');
    expect(a.summary()).toBe('3 attempts: all without an SSH banner; last error: no SSH banner within 1000 ms');
    a.record('login-refused', refused(), 'cloud-init-running', 10);
    a.record('handshake-failed', withLevel('read ECONNRESET', 'client-socket'), undefined, 11);
    expect(a.furthest).toBe('login-refused');
    expect(a.total).toBe(5);
    expect(a.summary()).toBe(
      '5 attempts: 3 without an SSH banner, 1 failed in the SSH handshake, 1 refused login; last error: read ECONNRESET',
    );
  });
});

/** A wait that failed after these outcomes (in order), as waitForSsh would throw it. */
function failedWait(
  outcomes: [AttemptOutcome, number][],
  gaveUp: 'timeout' | 'login-refused',
  setup: LoginSetup | undefined,
): SshWaitError {
  const a = new SshAttempts(30_000);
  const errors: Record<AttemptOutcome, () => Error> = {
    'no-banner': () => new Error('no SSH banner within 1000 ms'),
    'handshake-failed': () => withLevel('Handshake failed: no matching key exchange algorithm', 'handshake'),
    'login-refused': refused,
  };
  for (const [outcome, n] of outcomes) for (let i = 0; i < n; i++) a.record(outcome, errors[outcome](), setup, 0);
  return new SshWaitError(`SSH to bob@127.0.0.1:40022 did not succeed within 300 s (${a.summary()})`, a, gaveUp, setup);
}

const key = generateKeyPair('kiln-build-test');
const setting = (s: Partial<SshWaitSetting> = {}): SshWaitSetting => ({
  username: 'bob',
  guestPort: 22,
  timeout: '5m',
  offered: offeredCredentials(key, undefined, false),
  cloudInit: true,
  password: false,
  ...s,
});

describe('sshWaitFailure: the cause and fix follow how far the attempts got', () => {
  it('names what kiln offered: its build key, the key file, the password', () => {
    expect(offeredCredentials(key, undefined, false)).toBe(`kiln's build key (ed25519 ${key.fingerprint})`);
    expect(offeredCredentials(key, '/keys/id_ed25519', true)).toBe(
      `communicator.private_key_file /keys/id_ed25519 (ed25519 ${key.fingerprint}) or the password (communicator.password)`,
    );
  });

  it('no banner on any attempt: the guest or its SSH server (as before)', () => {
    const m = sshWaitFailure(
      failedWait([['no-banner', 95]], 'timeout', 'cloud-init-running'),
      setting({ guestPort: 2222 }),
    );
    expect(m).toBe(
      "timed out waiting for the guest's SSH server (port 2222 in the guest, communicator.timeout 5m): SSH to bob@127.0.0.1:40022 did not succeed within 300 s (95 attempts: all without an SSH banner; last error: no SSH banner within 1000 ms)\n" +
        '  fix: check that the guest boots and runs an SSH server on port 2222 (its console is below), or raise communicator.timeout',
    );
  });

  it('refused on every attempt, no cloud-init: the user and the key file, not the boot', () => {
    const file = '/keys/insecure_ed25519';
    const m = sshWaitFailure(
      failedWait([['login-refused', 37]], 'login-refused', 'no-cloud-init'),
      setting({ cloudInit: false, privateKeyFile: file, offered: offeredCredentials(key, file, false) }),
    );
    expect(m).toBe(
      `the guest's SSH server answered all 37 attempts but refused login as "bob" with communicator.private_key_file ${file} (ed25519 ${key.fingerprint}); ` +
        'the build gives the guest no cloud-init (cloud_init: false) that could still create the user or authorize the key, so kiln stopped after 30 s of refusals instead of waiting out communicator.timeout 5m (last error: All configured authentication methods failed)\n' +
        `  fix: check communicator.username ("bob" must be a user of the image) and that the image trusts the key of communicator.private_key_file (its public key in that user's ~/.ssh/authorized_keys)`,
    );
    expect(m).not.toMatch(/check that the guest boots/);
  });

  it('refused after cloud-init finished, while the guest was still booting before: counts, the finished line, user_data', () => {
    const finished =
      'Cloud-init v. 22.4.2 finished at Mon, 01 Jan 2024 00:00:00 +0000. Datasource DataSourceNoCloudNet.  Up 41.20 seconds';
    const m = sshWaitFailure(
      failedWait(
        [
          ['no-banner', 12],
          ['login-refused', 25],
        ],
        'login-refused',
        'cloud-init-finished',
      ),
      setting({ cloudInitFinished: finished }),
    );
    expect(m).toMatch(
      new RegExp(
        `^the guest's SSH server refused login as "bob" with kiln's build key \\(ed25519 ${key.fingerprint.replace(/[+/]/g, '\\$&')}\\) on 25 of 37 attempts \\(the others: 12 without an SSH banner\\); `,
      ),
    );
    expect(m).toContain(
      `cloud-init had finished in the guest (its console: "${finished}") and will not create the user or authorize the key any more, so kiln stopped after 30 s of refusals`,
    );
    expect(m).toMatch(
      /\n {2}fix: check communicator.username, and cloud_init user_data: kiln's part creates "bob" with the build key and passwordless sudo/,
    );
  });

  it('refused until the timeout while cloud-init had not finished: says so, and that raising the timeout may help', () => {
    const m = sshWaitFailure(failedWait([['login-refused', 300]], 'timeout', 'cloud-init-running'), setting());
    expect(m).toMatch(
      /^timed out waiting for the guest's SSH server \(port 22 in the guest, communicator.timeout 5m\): the guest's SSH server answered all 300 attempts but refused login as "bob"/,
    );
    expect(m).toContain('cloud-init had not finished (the console shows no "Cloud-init v. ... finished at" line)');
    expect(m).toMatch(/, or raise communicator.timeout if the guest is only slow$/);
  });

  it('a password login refused without cloud-init points at the password', () => {
    const m = sshWaitFailure(
      failedWait([['login-refused', 4]], 'login-refused', 'no-cloud-init'),
      setting({ cloudInit: false, password: true, offered: offeredCredentials(key, undefined, true) }),
    );
    expect(m).toMatch(/with kiln's build key \(.*\) or the password \(communicator.password\);/);
    expect(m).toMatch(
      /fix: check communicator.username \("bob" must be a user of the image\) and communicator.password$/,
    );
  });

  it('banners but failed handshakes: the SSH server configuration', () => {
    const m = sshWaitFailure(
      failedWait(
        [
          ['no-banner', 5],
          ['handshake-failed', 40],
        ],
        'timeout',
        undefined,
      ),
      setting(),
    );
    expect(m).toBe(
      "timed out waiting for the guest's SSH server (port 22 in the guest, communicator.timeout 5m): the guest's SSH server answered on 40 of 45 attempts (the others: 5 without an SSH banner) but the SSH handshake failed (last error: Handshake failed: no matching key exchange algorithm)\n" +
        "  fix: check the guest's SSH server configuration (key exchange, ciphers, host key types, connection limits) and its messages in the console below, or raise communicator.timeout",
    );
  });
});

describe('CloudInitConsoleWatch', () => {
  it("finds cloud-init's closing line as the console grows, split across reads, after the offset only", () => {
    const log = path.join(dir, 'serial.log');
    const installer = 'Cloud-init v. 1.0 finished at an earlier boot\n';
    writeFileSync(log, installer);
    const watch = new CloudInitConsoleWatch(log, Buffer.byteLength(installer));
    expect(watch.finished()).toBeUndefined();
    appendFileSync(log, '\x1b[0;32m  OK  \x1b[0m] Started ssh.service\r\nCloud-init v. 22.4.2 fin');
    expect(watch.finished()).toBeUndefined();
    appendFileSync(log, 'ished at Mon, 01 Jan 2024 00:00:00 +0000. Up 41.20 seconds\r\nlogin: ');
    expect(watch.finished()).toBe('Cloud-init v. 22.4.2 finished at Mon, 01 Jan 2024 00:00:00 +0000. Up 41.20 seconds');
    expect(new CloudInitConsoleWatch(path.join(dir, 'missing.log')).finished()).toBeUndefined();
  });
  it("takes the line kiln's seed prints where it skipped the config and final stages as the closing line", () => {
    const log = path.join(dir, 'serial-skipped.log');
    writeFileSync(
      log,
      "[  OK  ] Started ssh.service\r\nkiln: cloud-init's config and final stages skipped (nothing to do for the build)\r\n",
    );
    expect(new CloudInitConsoleWatch(log).finished()).toBe(
      "kiln: cloud-init's config and final stages skipped (nothing to do for the build)",
    );
  });
});

describe('shutdownCommandFailure', () => {
  it('names the command, its exit code and output; a sudo password prompt gets the sudo fix', () => {
    expect(shutdownCommandFailure("sh -c 'echo nope >&2; exit 3'", true, 3, 'nope\n', 'root')).toBe(
      `shutdown_command "sh -c 'echo nope >&2; exit 3'" exited with 3 and the guest kept running; QEMU was killed and the disk is not captured; its last output:\n  nope\n` +
        '  fix: correct shutdown_command: run as "root", it must power the guest off (as root, or through "sudo -n" with passwordless sudo)',
    );
    const sudo = shutdownCommandFailure("sudo -n sh -c 'poweroff'", false, 1, 'sudo: a password is required\n', 'bob');
    expect(sudo).toMatch(/^the shutdown command "sudo -n sh -c 'poweroff'" \(kiln's default for "bob"\) exited with 1/);
    expect(sudo).toMatch(/fix: run it through "sudo -n", and give "bob" passwordless sudo/);
  });
});

describe('waitForSsh against a real SSH server', () => {
  const hostKey = generateKeyPair('test-host-key').privateKey;
  let refusing: ssh2.Server;
  let refusingPort = 0;
  let hangingUp: net.Server;
  let hangingUpPort = 0;
  // A server's close() waits for its open connections: a client still half-way through its last retry
  // would hold afterAll for ever (CI saw the 60 s hook timeout). Each connection is ended there instead.
  const open = new Set<{ end: () => unknown }>();

  beforeAll(async () => {
    refusing = new ssh2.Server({ hostKeys: [hostKey] }, (client) => {
      open.add(client);
      client.on('close', () => open.delete(client));
      client.on('authentication', (auth) => auth.reject());
      client.on('error', () => undefined);
    });
    await new Promise<void>((resolve) => refusing.listen(0, '127.0.0.1', resolve));
    refusingPort = (refusing.address() as AddressInfo).port;
    // Sends an SSH banner, then hangs up: a server that dies in the handshake. It reads what the client
    // sends, so it sees the client's end of the connection too and can close.
    hangingUp = net.createServer((c) => {
      const socket = { end: () => c.destroy() };
      open.add(socket);
      c.on('close', () => open.delete(socket));
      c.end('SSH-2.0-OpenSSH_9.2\r\n').resume();
    });
    await new Promise<void>((resolve) => hangingUp.listen(0, '127.0.0.1', resolve));
    hangingUpPort = (hangingUp.address() as AddressInfo).port;
  });
  afterAll(async () => {
    for (const c of open) c.end();
    await new Promise<void>((resolve) => refusing.close(() => resolve()));
    await new Promise<void>((resolve) => hangingUp.close(() => resolve()));
  });

  const target = (port: number) => ({
    host: '127.0.0.1',
    port,
    username: 'bob',
    privateKey: generateKeyPair('test').privateKey,
    trustOnFirstUse: true,
  });

  async function waitFailure(port: number, opts: Partial<Parameters<typeof waitForSsh>[1]>): Promise<SshWaitError> {
    const e = await waitForSsh(target(port), { timeoutMs: 60_000, retryDelayMs: 50, ...opts }).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(e).toBeInstanceOf(SshWaitError);
    return e as SshWaitError;
  }

  it('refused logins that nothing can change end the wait after the grace, not at the timeout', async () => {
    const outcomes: AttemptOutcome[] = [];
    const e = await waitFailure(refusingPort, {
      loginSetup: () => 'no-cloud-init',
      refusedLoginGraceMs: 300,
      onAttempt: (_n, _e, o) => outcomes.push(o),
    });
    expect(e.gaveUp).toBe('login-refused');
    expect(e.loginSetup).toBe('no-cloud-init');
    expect(e.attempts.counts['login-refused']).toBeGreaterThanOrEqual(2);
    expect(e.attempts.counts['login-refused']).toBe(e.attempts.total);
    expect(new Set(outcomes)).toEqual(new Set(['login-refused']));
    expect(e.message).toMatch(
      /^SSH to bob@127\.0\.0\.1:\d+ was refused on every attempt for 0\.3 s, with nothing left in the guest to change that \(\d+ attempts: all refused login; last error: All configured authentication methods failed\)$/,
    );
  });

  it('refused logins while cloud-init runs (or with no loginSetup) go on until the timeout', async () => {
    for (const loginSetup of [() => 'cloud-init-running' as const, undefined]) {
      const e = await waitFailure(refusingPort, { timeoutMs: 2500, loginSetup, refusedLoginGraceMs: 100 });
      expect(e.gaveUp).toBe('timeout');
      expect(e.attempts.furthest, e.message).toBe('login-refused');
    }
  });

  it('a server that hangs up after its banner is a failed handshake; a closed port gives no banner', async () => {
    const handshake = await waitFailure(hangingUpPort, { timeoutMs: 2000 });
    expect(handshake.attempts.furthest).toBe('handshake-failed');
    const closed = await new Promise<number>((resolve) => {
      const s = net.createServer().listen(0, '127.0.0.1', () => {
        const p = (s.address() as AddressInfo).port;
        s.close(() => resolve(p));
      });
    });
    const none = await waitFailure(closed, { timeoutMs: 1000 });
    expect(none.attempts.furthest).toBe('no-banner');
    expect(none.message).toMatch(/did not succeed within 1 s \(\d+ attempts: all without an SSH banner; last error: /);
  });
});
