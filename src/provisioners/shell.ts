/**
 * The shell provisioner: each script (inline lines become one script run with `sh -e`) is uploaded
 * over the build's one SSH connection, run through execute_command, its output streamed as lines, and
 * removed afterwards.
 */
import { readFileSync } from 'node:fs';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import type { BuildContext } from '../build/state.js';
import type { Provisioner } from '../template/schema.js';
import { interpolateString, interpolateTree } from '../template/interpolate.js';
import { lineSplitter, shellEnv, sshSession } from './context.js';
import { ConnectionLostError } from '../communicator/ssh.js';

type Shell = Extract<Provisioner, { type: 'shell' }>;

export class ProvisionerError extends Error {}

const outputLinesInError = 10;

export async function runShell(ctx: BuildContext, p: Shell, label: string): Promise<void> {
  const values = { build: ctx.buildValues() };
  const scripts: { name: string; body: string }[] = [];
  if (p.inline) scripts.push({ name: 'inline', body: `#!/bin/sh -e\n${p.inline.map((l) => String(interpolateString(l, values))).join('\n')}\n` });
  for (const file of p.script ? [p.script] : p.scripts ?? []) scripts.push({ name: path.basename(file), body: readFileSync(file, 'utf8') });
  const env = shellEnv({ KILN_BUILD_NAME: ctx.build.name, ...interpolateTree(p.env, values) });

  for (const script of scripts) {
    const ssh = await sshSession(ctx);
    const remote = path.posix.join(p.remote_folder, `kiln-${randomBytes(6).toString('hex')}.sh`);
    await ssh.uploadContent(script.body, remote, 0o700);
    const command = p.execute_command.replaceAll('{{path}}', remote).replaceAll('{{vars}}', env);
    // The last lines go into the error message, so a failure explains itself without scrolling back.
    const recent: string[] = [];
    const emitter = (stream: 'stdout' | 'stderr') => lineSplitter((line) => {
      recent.push(line);
      if (recent.length > outputLinesInError) recent.shift();
      ctx.events.emit({ type: 'output', build: ctx.build.name, stream, source: label, line });
    });
    const out = emitter('stdout');
    const err = emitter('stderr');
    const r = await ssh.exec(command, { stdout: out.write, stderr: err.write });
    out.flush();
    err.flush();
    if (r.disconnected) {
      if (p.expect_disconnect) { ctx.log(`${label}: guest disconnected, as expected`, 'debug'); continue; }
      throw new ConnectionLostError(`${label}: the SSH connection was lost while "${script.name}" ran (did the guest reboot? set expect_disconnect: true if that is intended)`);
    }
    if (p.expect_disconnect && ssh.connected) {
      // `reboot` often returns before the guest goes down: let the connection drop now, so the next
      // provisioner does not start on a dying system. A guest that stays up keeps the connection.
      if (await Promise.race([ssh.closed.then(() => true), sleep(10_000).then(() => false)])) {
        ctx.log(`${label}: guest disconnected, as expected`, 'debug');
        continue;
      }
    }
    if (r.exitCode === null || !p.valid_exit_codes.includes(r.exitCode)) {
      const output = recent.length ? `; its last output:\n${recent.map((l) => `  ${l}`).join('\n')}` : ' (it printed nothing)';
      throw new ProvisionerError(`${label}: script "${script.name}" exited with ${r.exitCode ?? `signal ${r.signal}`} (valid: ${p.valid_exit_codes.join(', ')})${output}`);
    }
    await ssh.exec(`rm -f ${remote}`).catch(() => undefined);
  }
}
