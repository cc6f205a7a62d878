/**
 * The shell provisioner: each script (inline lines become one script, run by `#!<inline_shebang>`, `sh -e` by default) is uploaded
 * over the build's one SSH connection, run through execute_command, its output streamed as lines, and
 * removed afterwards.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { ProvisionerContext } from './context.js';
import type { Provisioner } from '../template/schema.js';
import { interpolateString, interpolateTree } from '../template/interpolate.js';
import { removeGuestLeftovers, shellEnv, sshSession } from './context.js';
import { lastOutput, streamedOutput } from './streamed-output.js';
import { ConnectionLostError } from '../communicator/ssh.js';
import { shellWord } from '../communicator/remote-command.js';
import { guestProxyEnv, guestProxyFor } from './guest-proxy.js';
import { ProxyBypassWatch } from './proxy-bypass.js';
import { KilnError } from '../util/errors.js';

type Shell = Extract<Provisioner, { type: 'shell' }>;

export class ProvisionerError extends KilnError {}

/**
 * The command line that runs the uploaded script: execute_command with {{path}} and {{vars}} replaced
 * by shell words (the path, quoted where it needs it; quoted `KEY='value'` pairs, as Packer writes them),
 * so no path or value is read as code.
 */
export function executeCommand(
  template: string,
  remotePath: string,
  env: Record<string, string | number | boolean>,
): string {
  return template.replaceAll('{{path}}', shellWord(remotePath)).replaceAll('{{vars}}', shellEnv(env));
}

/** Runs the provisioner's scripts; `signal` (the build's interrupt or the provisioner's timeout) kills the running one in the guest. */
export async function runShell(ctx: ProvisionerContext, p: Shell, label: string, signal: AbortSignal): Promise<void> {
  const values = { build: ctx.buildValues() };
  const scripts: { name: string; body: string }[] = [];
  // inline_shebang as in Packer: templates that `source` files or use arrays name /bin/bash here.
  if (p.inline)
    scripts.push({
      name: 'inline',
      body: `#!${p.inline_shebang ?? '/bin/sh -e'}\n${p.inline.map((l) => String(interpolateString(l, values))).join('\n')}\n`,
    });
  for (const file of p.script ? [p.script] : (p.scripts ?? []))
    scripts.push({ name: path.basename(file), body: readFileSync(file, 'utf8') });
  // --record / --offline: downloads (apt, dnf, wget, curl, pip) go through kiln's package proxy, and
  // kiln's own HTTP server (${build.http_url}) does not. The guest's system settings say the same
  // (guest-proxy.ts), for what runs under sudo; these cover a guest where they could not be written.
  const proxy = guestProxyFor(ctx.options.airgap, String(values.build.http_ip ?? ''));
  const env = { KILN_BUILD_NAME: ctx.build.name, ...guestProxyEnv(proxy), ...interpolateTree(p.env, values) };
  const bypass = new ProxyBypassWatch(proxy?.url);

  for (const script of scripts) {
    const ssh = await sshSession(ctx, signal);
    const remote = path.posix.join(p.remote_folder, `kiln-${randomBytes(6).toString('hex')}.sh`);
    const command = executeCommand(p.execute_command, remote, env);
    // The last lines go into the error message, so a failure explains itself without scrolling back.
    const output = streamedOutput(ctx, label, (line) => bypass.observe(line));
    let succeeded = false;
    try {
      await ssh.uploadContent(script.body, remote, 0o700, signal);
      const r = await ssh
        .exec(command, { stdout: output.stdout, stderr: output.stderr, signal })
        .finally(() => output.flush());
      if (r.disconnected) {
        if (p.expect_disconnect) {
          ctx.log(`${label}: guest disconnected, as expected`, 'debug');
          continue;
        }
        throw new ConnectionLostError(
          `${label}: the SSH connection was lost while "${script.name}" ran (did the guest reboot? set expect_disconnect: true if that is intended)`,
        );
      }
      if (p.expect_disconnect && ssh.connected) {
        // `reboot` often returns before the guest goes down: let the connection drop now, so the next
        // provisioner does not start on a dying system. A guest that stays up keeps the connection.
        if (await Promise.race([ssh.closed.then(() => true), sleep(10_000, false, { signal })])) {
          ctx.log(`${label}: guest disconnected, as expected`, 'debug');
          continue;
        }
      }
      if (r.exitCode === null || !p.valid_exit_codes.includes(r.exitCode)) {
        throw new ProvisionerError(
          `${label}: script "${script.name}" exited with ${r.exitCode ?? `signal ${r.signal}`} (valid: ${p.valid_exit_codes.join(', ')})${lastOutput(output.recent())}${bypass.hint()}`,
        );
      }
      const around = bypass.failure();
      if (around) throw new ProvisionerError(`${label}: script "${script.name}" succeeded, but ${around}`);
      succeeded = true;
    } finally {
      // The script stays out of the image whether it succeeded, failed or timed out (a retry uploads
      // its own); an interrupted build's disk is discarded anyway. After a success its removal goes with
      // kiln's next command in the guest (before any layer is frozen); after a failure, now.
      (ctx.state.guestLeftovers ??= []).push(remote);
      if (!succeeded) await removeGuestLeftovers(ctx);
    }
  }
}
