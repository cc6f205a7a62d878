/**
 * Step: take kiln's access back out of the guest before it is trimmed and captured: every build key
 * kiln ever generated leaves authorized_keys (a cached layer may carry an earlier build's), and on
 * cloud-init guests the host keys kiln injected and cloud-init's state (which holds the injected
 * private key in its copies of the user-data) are deleted, so every machine made from the image gets
 * its own host keys and first-boot run.
 *
 * Deleting a file frees its blocks but leaves its bytes, and a trim cannot free a qcow2 cluster that
 * other data still uses: the files that can hold a secret are overwritten with zeros in place first,
 * and those zeros are on the disk (fdatasync of each, by shred) before any of them is deleted.
 *
 * Under TCG every process the guest starts costs 0.1-0.2 s, which is what the clean-up's time was
 * (measured on the Debian fixture at load ~4: 44 dd processes 8.4 s, the greps on authorized_keys
 * 1.2 s, find 0.7 s, sync 0.5 s, rm 0.8 s: 11.6 s). So the script starts a fixed handful: one find
 * that hands every file to one `shred -n0 -z` (one pass of zeros and an fdatasync per file: a few
 * dozen small files, not every dirty page in the guest), one rm; authorized_keys is edited with shell
 * builtins. Not zeroed: cloud-init's semaphores (timestamps only), empty files, and the image's own
 * seed under /var/lib/cloud/seed, which is kept as `cloud-init clean` keeps it. There is no global
 * sync: the trim that follows in the same root shell (guest-finishing.ts's trimShell) starts with one, which
 * also makes the deletions durable.
 *
 * The script goes in on stdin, so no key material or pattern lands in sudo's log of the command line.
 * Without a shutdown_command that input stays open after the trim: the shut-down step sends the same
 * root shell its `poweroff`, and the last provisioner's script is removed in it too (provision.ts).
 */
import { PassThrough } from 'node:stream';
import type { Step } from '../step.js';
import { sshSession, takeGuestLeftovers } from '../../provisioners/context.js';
import { buildKeyCommentPrefix } from '../../communicator/build-key.js';
import { removeGuestProxyScript } from '../../provisioners/guest-proxy.js';
import { guestScript, guestScriptVars } from '../../util/guest-scripts.js';
import {
  cloudInitFinishWaitSeconds,
  guestCleanUpRuns,
  overlayBytes,
  trimResult,
  trimShell,
} from '../guest-finishing.js';

/**
 * The clean-up script: src/guest-scripts/clean-guest-keys.sh, the build proxy's removal, and on
 * cloud-init guests clean-guest-cloud-init.sh. `root` prefixes every guest path (tests run the script
 * on a tree of their own); the guest's is '' (the script runs as root on /).
 */
export function cleanGuestScript(cloudInit: boolean, root = ''): string {
  // The build proxy of a --record/--offline build (or of the cached layer this build resumed from):
  // nothing to do, and no process started, when there is none.
  const lines = [
    'set -u',
    guestScriptVars({ R: root, KEY_PREFIX: buildKeyCommentPrefix, WAIT_SECONDS: cloudInitFinishWaitSeconds }).trimEnd(),
    guestScript('clean-guest-keys').trimEnd(),
    removeGuestProxyScript(root).trimEnd(),
  ];
  if (cloudInit)
    lines.push(guestScript('cloud-init-final-wait').trimEnd(), guestScript('clean-guest-cloud-init').trimEnd());
  return lines.join('\n') + '\n';
}

/**
 * The clean-up script followed by the trim in the same root shell: the trim runs only when the clean-up
 * ended well, and the shell's status is then the clean-up's (its last command's, as when it ran alone).
 */
export function cleanUpThenTrim(cleanUp: string): string {
  return `${cleanUp}rc=$?; [ "$rc" = 0 ] || exit "$rc"\n${trimShell}\n`;
}

/** The trim's marker line, whole: the clean-up and the trim are done once the shell printed it. */
function trimMarkerPrinted(stdout: string): boolean {
  const t = trimResult(stdout);
  return t !== undefined && stdout.indexOf('\n', t.output.length) !== -1;
}

export const cleanGuestStep: Step = {
  name: 'remove build access',
  enabled: guestCleanUpRuns,
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    // The trim follows in the same root shell: one command in the guest instead of two.
    const beforeBytes = await overlayBytes(ctx);
    const ssh = await sshSession(ctx);
    const shell = comm.username === 'root' ? 'sh -s' : 'sudo -n sh -s';
    // The last provisioner's leftovers (its script) go first, in this shell (provision.ts leaves them).
    const leftovers = takeGuestLeftovers(ctx.state);
    const script = `${leftovers ? `${leftovers}\n` : ''}${cleanUpThenTrim(cleanGuestScript(ctx.build.source.cloud_init !== false))}`;
    // Without a shutdown_command the shell stays open after the trim and powers the guest off when the
    // shut-down step says so: one session and one sudo fewer in the guest (0.1-0.2 s each under TCG).
    const input = ctx.build.source.shutdown_command === undefined ? new PassThrough() : undefined;
    let out = '';
    let err = '';
    let after = '';
    let cleanedUp: (() => void) | undefined;
    const trimmedMarker = new Promise<void>((resolve) => {
      cleanedUp = resolve;
    });
    const exec = ssh.exec(shell, {
      ...(input ? { input } : { stdin: script }),
      stdout: (s) => {
        if (cleanedUp === undefined) after += s;
        else {
          out += s;
          if (input && trimMarkerPrinted(out)) {
            cleanedUp();
            cleanedUp = undefined;
          }
        }
      },
      stderr: (s) => {
        if (cleanedUp === undefined) after += s;
        else err += s;
      },
      signal: ctx.signal,
    });
    input?.write(script);
    const r = await Promise.race([exec, trimmedMarker.then(() => undefined)]);
    if (r === undefined) {
      // Left open for the shut-down step: its end is awaited there (or the build's end closes SSH).
      const ended = exec.catch(() => undefined);
      ctx.state.rootShell = { finish: (command) => input!.end(`${command}\n`), ended, output: () => after };
      ctx.state.trimmedWithCleanUp = { beforeBytes, ...trimResult(out)! };
      return () => {
        // A build that stopped before its shut-down: the shell ends with its input.
        if (ctx.state.rootShell) input!.end();
        ctx.state.rootShell = undefined;
      };
    }
    if (r.exitCode !== 0)
      throw new Error(
        `removing kiln's keys from the guest failed (exit ${r.exitCode}): ${err.trim().split('\n').slice(-5).join('\n')}`,
      );
    const trimmed = trimResult(out);
    // Without its marker (a clean-up part that ended the shell early) the trim step runs it alone.
    if (trimmed) ctx.state.trimmedWithCleanUp = { beforeBytes, ...trimmed };
  },
};
