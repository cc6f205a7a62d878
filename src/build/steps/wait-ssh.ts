/** Step: wait for SSH (short attempts, sub-second retries), verify the host key, wait for cloud-init. */
import { closeSync, fstatSync, openSync, readFileSync, readSync, statSync } from 'node:fs';
import type { Step } from '../step.js';
import type { BuildContext } from '../state.js';
import type { SshSession } from '../../communicator/ssh.js';
import { need } from '../state.js';
import { waitForSsh, SshWaitError, type LoginSetup, type SshTarget } from '../../communicator/ssh.js';
import { fingerprintOf, type KeyPair } from '../../communicator/keys.js';
import { durationSetting, formatDuration } from '../../template/units.js';
import { shellQuote } from '../../qemu/argv.js';
import { startVm } from '../vm.js';
import { asRoot } from '../../communicator/as-root.js';
import { plainConsole, serialTail } from '../../util/serial-log.js';
import { cpuTooSmallCause } from '../../qemu/cpu-needs.js';
import { secureBootRefusalCause } from '../../qemu/secure-boot.js';
import { KilnError } from '../../util/errors.js';
import { guestScript } from '../../util/guest-scripts.js';
import { cloudInitFinalWaitShell } from '../guest-finishing.js';

function fileSize(file: string): number {
  try {
    return statSync(file).size;
  } catch {
    return 0;
  }
}

/**
 * The line cloud-init's final_message module prints when it is done ("Cloud-init v. 22.4.2 finished at
 * ..."), or the one kiln's seed prints where it skipped the config and final stages (cloudinit/seed.ts).
 */
const cloudInitFinishedLine =
  /Cloud-init v\. \S+ finished at [^\n]*|kiln: cloud-init's config and final stages skipped [^\n]*/;

/**
 * Follows the serial log for cloud-init's closing line, from `offset` (where this VM's output starts:
 * the log is appended to across an installer and the installed system), reading only what was added
 * since the last look, since it is asked after every refused login.
 */
export class CloudInitConsoleWatch {
  private pending = '';
  private finishedLine?: string;

  constructor(
    private readonly file: string | undefined,
    private offset = 0,
  ) {}

  /** Cloud-init's closing line once the console has shown it. */
  finished(): string | undefined {
    if (this.finishedLine || !this.file) return this.finishedLine;
    let added: Buffer;
    try {
      const fd = openSync(this.file, 'r');
      try {
        added = Buffer.alloc(Math.max(0, fstatSync(fd).size - this.offset));
        this.offset += readSync(fd, added, 0, added.length, this.offset);
      } finally {
        closeSync(fd);
      }
    } catch {
      return undefined;
    }
    const text = this.pending + plainConsole(added.toString('utf8'));
    this.finishedLine = cloudInitFinishedLine.exec(text)?.[0].trim();
    // An unfinished last line is searched again once the rest of it has arrived.
    this.pending = text.slice(text.lastIndexOf('\n') + 1);
    return this.finishedLine;
  }
}

/** What kiln offers at login, for messages: `kiln's build key (ed25519 SHA256:...)`, the key file, the password. */
export function offeredCredentials(
  key: KeyPair | undefined,
  privateKeyFile: string | undefined,
  password: boolean,
): string {
  const offered: string[] = [];
  if (key) {
    const type = key.publicKey.split(/\s+/)[0]!.replace(/^ssh-/, '');
    offered.push(
      `${privateKeyFile ? `communicator.private_key_file ${privateKeyFile}` : "kiln's build key"} (${type} ${fingerprintOf(key.publicKey)})`,
    );
  }
  if (password) offered.push('the password (communicator.password)');
  return offered.join(' or ') || 'no credentials';
}

/** The template's side of an SSH wait, for naming what went wrong in its terms. */
export interface SshWaitSetting {
  username: string;
  /** communicator.port: where the SSH server listens in the guest. */
  guestPort: number;
  /** communicator.timeout as a template writes it ("5m"). */
  timeout: string;
  /** offeredCredentials() of this build. */
  offered: string;
  /** kiln gives the guest cloud-init user_data that creates the user and authorizes the key. */
  cloudInit: boolean;
  privateKeyFile?: string;
  password: boolean;
  /** Cloud-init's closing console line, if the console showed it. */
  cloudInitFinished?: string;
}

/**
 * The cause of a failed SSH wait and a fix that fits it, from the furthest stage any attempt reached:
 * a refused login is a wrong user or key however many attempts found the guest still booting, and
 * only attempts that never saw an SSH banner point at the guest or its SSH server.
 */
export function sshWaitFailure(e: SshWaitError, s: SshWaitSetting): string {
  const a = e.attempts;
  const waited = `timed out waiting for the guest's SSH server (port ${s.guestPort} in the guest, communicator.timeout ${s.timeout}): `;
  const others = (outcome: 'handshake-failed' | 'login-refused') => {
    const rest = (
      [
        ['no-banner', 'without an SSH banner'],
        ['handshake-failed', 'failed in the SSH handshake'],
        ['login-refused', 'refused login'],
      ] as const
    )
      .filter(([o]) => o !== outcome && a.counts[o] > 0)
      .map(([o, what]) => `${a.counts[o]} ${what}`);
    return `on ${a.counts[outcome]} of ${a.total} attempts (the others: ${rest.join(', ')})`;
  };
  switch (a.furthest) {
    case 'login-refused': {
      const all = a.counts['login-refused'] === a.total;
      const refused = all
        ? `the guest's SSH server answered ${a.total === 1 ? 'the only attempt' : `all ${a.total} attempts`} but refused login as "${s.username}" with ${s.offered}`
        : `the guest's SSH server refused login as "${s.username}" with ${s.offered} ${others('login-refused')}`;
      const last = `last error: ${a.lastErrors['login-refused']!.message}`;
      const fix = `\n  fix: ${loginFix(s)}`;
      if (e.gaveUp === 'login-refused') {
        return `${refused}; ${loginSetupState(e.loginSetup, s)}, so kiln stopped after ${a.graceMs / 1000} s of refusals instead of waiting out communicator.timeout ${s.timeout} (${last})${fix}`;
      }
      const slow =
        e.loginSetup === 'cloud-init-running' || e.loginSetup === 'installing'
          ? ', or raise communicator.timeout if the guest is only slow'
          : '';
      return `${waited}${refused}; ${loginSetupState(e.loginSetup, s)} (${last})${fix}${slow}`;
    }
    case 'handshake-failed': {
      const answered =
        a.counts['handshake-failed'] === a.total
          ? `answered all ${a.total} attempts`
          : `answered ${others('handshake-failed')}`;
      return (
        `${waited}the guest's SSH server ${answered} but the SSH handshake failed (last error: ${a.lastErrors['handshake-failed']!.message})` +
        `\n  fix: check the guest's SSH server configuration (key exchange, ciphers, host key types, connection limits) and its messages in the console below, or raise communicator.timeout`
      );
    }
    default:
      return `${waited}${e.message}\n  fix: check that the guest boots and runs an SSH server on port ${s.guestPort} (its console is below), or raise communicator.timeout`;
  }
}

function loginSetupState(setup: LoginSetup | undefined, s: SshWaitSetting): string {
  switch (setup) {
    case 'no-cloud-init':
      return 'the build gives the guest no cloud-init (cloud_init: false) that could still create the user or authorize the key';
    case 'cloud-init-finished':
      return `cloud-init had finished in the guest (its console: "${s.cloudInitFinished ?? 'Cloud-init ... finished'}") and will not create the user or authorize the key any more`;
    case 'cloud-init-running':
      return 'cloud-init had not finished (the console shows no "Cloud-init v. ... finished at" line)';
    case 'installing':
      return 'the guest was still running from the installer ISO';
    default:
      return 'nothing tells whether the guest could still create the user';
  }
}

function loginFix(s: SshWaitSetting): string {
  if (s.cloudInit) {
    const key = s.privateKeyFile ? 'the key of communicator.private_key_file' : 'the build key';
    return `check communicator.username, and cloud_init user_data: kiln's part creates "${s.username}" with ${key} and passwordless sudo, which user_data changing users or SSH settings can undo (cloud-init's messages are in the console below)`;
  }
  const user = `check communicator.username ("${s.username}" must be a user of the image)`;
  if (s.privateKeyFile)
    return `${user} and that the image trusts the key of communicator.private_key_file (its public key in that user's ~/.ssh/authorized_keys)${s.password ? ', or communicator.password' : ''}`;
  if (s.password) return `${user} and communicator.password`;
  return `${user} and that the install authorizes kiln's build key (\${build.ssh_public_key}) for that user`;
}

/**
 * After the login: with cloud_init.wait (the default) wait for cloud-init's last stage, as
 * `cloud-init status --wait`, and fail on its errors. With wait: false the provisioners start now:
 * the login as the build user with the build key shows cloud-init's init stage created the user
 * (with its sudo rule, written before its keys) and authorized the key; its later stages (config,
 * final) may still run beside the provisioners, and the clean-up waits for them before it wipes
 * cloud-init's state.
 */
export async function waitForCloudInit(ctx: BuildContext, ssh: SshSession, started: number): Promise<void> {
  const ci = ctx.build.source.cloud_init;
  const comm = ctx.build.source.communicator;
  if (ci === false || comm.type !== 'ssh') return;
  if (!ci.wait) {
    ctx.log("not waiting for cloud-init's later stages (cloud_init.wait: false): provisioning starts now", 'debug');
    return;
  }
  let out = '';
  // With the later stages skipped, a shell waits for the init stage's end (cloud-init-init-stage-wait.sh);
  // otherwise one command, one Python start (2-3 s under TCG); --wait prints a dot a second until done.
  const wait = ctx.state.cloudInitLaterStagesSkipped
    ? cloudInitFinalWaitShell() + guestScript('cloud-init-init-stage-wait')
    : 'cloud-init status --wait --long';
  const r = await ssh.exec(asRoot(comm.username, `command -v cloud-init >/dev/null || exit 0\n${wait}`), {
    stdout: (s) => {
      out += s;
    },
    stderr: (s) => {
      out += s;
    },
  });
  ctx.signal.throwIfAborted();
  out = out.replace(/^\.+\n?/, '');
  if (r.exitCode === 2) ctx.log(`cloud-init finished with recoverable errors:\n${out.trim()}`, 'warn');
  else if (r.exitCode !== 0) throw new Error(`cloud-init failed in the guest (exit ${r.exitCode}):\n${out.trim()}`);
  ctx.log(`cloud-init done after ${formatDuration(performance.now() - started)}`, 'debug');
}

export const waitSshStep: Step = {
  name: 'wait for SSH',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const st = ctx.state;
    const expectedHostKey = st.hostKey?.fingerprint ?? comm.host_key_fingerprint;
    if (!expectedHostKey) {
      if (!comm.trust_on_first_use)
        throw new KilnError("no way to verify the guest's host key", {
          fix: 'enable cloud_init (kiln injects one), set communicator.host_key_fingerprint, or set communicator.trust_on_first_use: true',
        });
      ctx.log('trusting the first SSH host key the guest shows (trust_on_first_use)', 'warn');
    }
    const target: SshTarget = {
      host: '127.0.0.1',
      port: need(st, 'sshHostPort'),
      username: comm.username,
      privateKey: st.buildKey?.privateKey,
      password: comm.password,
      hostKeyFingerprint: expectedHostKey,
      trustOnFirstUse: comm.trust_on_first_use,
    };
    const started = performance.now();
    const timeoutMs = comm.timeout;
    const deadline = Date.now() + (st.installing ? ctx.build.source.install_timeout : 0) + timeoutMs;
    const ci = ctx.build.source.cloud_init;
    let cloudInitConsole = new CloudInitConsoleWatch(st.serialLog);
    // Refused logins are final only when nothing in the guest can still create the user or authorize the key.
    const loginSetup = (): LoginSetup =>
      st.installing
        ? 'installing'
        : ci === false
          ? 'no-cloud-init'
          : cloudInitConsole.finished()
            ? 'cloud-init-finished'
            : 'cloud-init-running';
    // A guest whose CPU model lacks what it needs stops at boot with a console message: fail then, naming it;
    // so does a firmware that refuses the boot loader under Secure Boot (it goes on to network boot, for minutes).
    let cpuCheckAt = 0;
    const cpuTooSmall = () => {
      if (!st.serialLog || Date.now() < cpuCheckAt) return undefined;
      cpuCheckAt = Date.now() + 2000;
      try {
        const text = plainConsole(readFileSync(st.serialLog, 'latin1'));
        return (
          cpuTooSmallCause(text, st.cpuModel) ?? secureBootRefusalCause(text, Boolean(ctx.build.source.secure_boot))
        );
      } catch {
        return undefined;
      }
    };
    for (;;) {
      const current = need(st, 'qemu');
      try {
        st.ssh = await waitForSsh(
          { ...target, port: need(st, 'sshHostPort') },
          {
            timeoutMs: Math.max(1000, deadline - Date.now()),
            bannerTimeoutMs: 1000,
            retryDelayMs: 200,
            abort: () =>
              ctx.signal.aborted
                ? 'interrupted'
                : current.hasExited
                  ? `QEMU exited before SSH came up${current.stderr ? `: ${current.stderr}` : ''}`
                  : cpuTooSmall(),
            onAttempt: (n, e, outcome) => ctx.log(`ssh attempt ${n} (${outcome}): ${e.message}`, 'debug'),
            loginSetup,
          },
        );
        break;
      } catch (e) {
        ctx.signal.throwIfAborted();
        // An installer that powers off when done: boot the installed disk, without the ISO, and go on.
        if (st.installing && current.hasExited && (await current.exited).code === 0) {
          ctx.log(
            `installer finished after ${formatDuration(performance.now() - started)}; booting the installed disk`,
          );
          st.qmp?.close();
          const installerOutput = st.serialLog ? fileSize(st.serialLog) : 0;
          await startVm(ctx, false);
          cloudInitConsole = new CloudInitConsoleWatch(st.serialLog, installerOutput);
          continue;
        }
        // A host key mismatch and QEMU's exit explain themselves; a wait that gave up is named by how far its attempts got.
        const cause =
          e instanceof SshWaitError && !current.hasExited
            ? sshWaitFailure(e, {
                username: comm.username,
                guestPort: comm.port,
                timeout: durationSetting(comm.timeout),
                offered: offeredCredentials(st.buildKey, comm.private_key_file, comm.password !== undefined),
                cloudInit: ci !== false,
                privateKeyFile: comm.private_key_file,
                password: comm.password !== undefined,
                cloudInitFinished: cloudInitConsole.finished(),
              })
            : (e as Error).message;
        throw new Error(
          `${cause}\n--- last lines of the serial console (${st.serialLog}) ---\n${serialTail(st.serialLog)}\n--- QEMU command ---\n${shellQuote(current.argv)}`,
        );
      }
    }
    target.port = need(st, 'sshHostPort');
    st.installing = false;
    st.sshTarget = target;
    st.timings['boot to SSH'] = performance.now() - started;
    ctx.log(
      `SSH up after ${formatDuration(performance.now() - started)} (host key ${st.ssh.hostKey}${st.ssh.cipher ? `, cipher ${st.ssh.cipher}` : ''})`,
    );
    const ssh = st.ssh;
    // An interrupt closes the connection, so what runs over it ends: cloud-init can take minutes under TCG.
    const closeOnAbort = () => ssh.close();
    ctx.signal.addEventListener('abort', closeOnAbort, { once: true });
    try {
      ctx.signal.throwIfAborted();
      await waitForCloudInit(ctx, ssh, started);
    } catch (e) {
      if (ctx.signal.aborted) ssh.close();
      throw e;
    } finally {
      ctx.signal.removeEventListener('abort', closeOnAbort);
    }
    return () => {
      ssh.close();
    };
  },
};
