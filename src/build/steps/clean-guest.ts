/**
 * Step: take kiln's access back out of the guest before it is trimmed and captured: every build key
 * kiln ever generated leaves authorized_keys (a cached layer may carry an earlier build's), and on
 * cloud-init guests the host keys kiln injected and cloud-init's state (which holds the injected
 * private key in its copy of the user-data) are deleted, so every machine made from the image gets
 * its own host keys and first-boot run.
 *
 * Deleting a file frees its blocks but leaves its bytes, and a trim cannot free a qcow2 cluster that
 * other data still uses: such files are overwritten in place first. The script goes in on stdin, so no
 * key material or pattern lands in sudo's log of the command line.
 */
import type { Step } from '../step.js';
import { sshSession } from '../../provisioners/context.js';
import { buildKeyCommentPrefix } from './ssh-keys.js';

/** Overwrites a file's bytes where they lie (shred, or dd where busybox has no shred). */
const wipeFunction = `wipe() { [ -f "$1" ] || return 0; if command -v shred >/dev/null 2>&1; then shred -n1 -z "$1"; else dd if=/dev/zero of="$1" bs=4096 count=$(( ($(wc -c < "$1") + 4095) / 4096 )) conv=notrunc 2>/dev/null; fi; sync; }`;

export function cleanGuestScript(cloudInit: boolean): string {
  const lines = [
    'set -u',
    wipeFunction,
    // Keep the file (owner, mode, SELinux label); replace its content by the lines that stay.
    `for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do`,
    `  [ -f "$f" ] && grep -q ' ${buildKeyCommentPrefix}' "$f" || continue`,
    `  keep=$(grep -v ' ${buildKeyCommentPrefix}[A-Za-z0-9_.-]*$' "$f" || true)`,
    `  wipe "$f"; printf '%s' "$keep" > "$f"; [ -z "$keep" ] || echo >> "$f"`,
    'done',
  ];
  if (cloudInit) {
    lines.push(
      'if command -v cloud-init >/dev/null 2>&1; then',
      '  for f in /etc/ssh/ssh_host_*; do wipe "$f"; done',
      '  find /var/lib/cloud /var/log/cloud-init.log /var/log/cloud-init-output.log -type f 2>/dev/null | while read -r f; do wipe "$f"; done',
      '  cloud-init clean --logs >/dev/null 2>&1 || true',
      '  rm -f /etc/ssh/ssh_host_*',
      'fi',
    );
  }
  lines.push('sync');
  return lines.join('\n') + '\n';
}

export const cleanGuestStep: Step = {
  name: 'remove build access',
  enabled: (ctx) => ctx.build.source.communicator.type === 'ssh',
  async run(ctx) {
    const comm = ctx.build.source.communicator;
    if (comm.type !== 'ssh') return;
    const ssh = await sshSession(ctx);
    const shell = comm.username === 'root' ? 'sh -s' : 'sudo -n sh -s';
    let err = '';
    const r = await ssh.exec(shell, { stdin: cleanGuestScript(ctx.build.source.cloud_init !== false), stderr: (s) => { err += s; }, signal: ctx.signal });
    if (r.exitCode !== 0) throw new Error(`removing kiln's keys from the guest failed (exit ${r.exitCode}): ${err.trim().split('\n').slice(-5).join('\n')}`);
  },
};
