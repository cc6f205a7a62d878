/**
 * Step: take kiln's access back out of the guest before it is trimmed and captured: every build key
 * kiln ever generated leaves authorized_keys (a cached layer may carry an earlier build's), and on
 * cloud-init guests the host keys kiln injected and cloud-init's state (which holds the injected
 * private key in its copy of the user-data) are deleted, so every machine made from the image gets
 * its own host keys and first-boot run.
 *
 * Deleting a file frees its blocks but leaves its bytes, and a trim cannot free a qcow2 cluster that
 * other data still uses: such files are overwritten in place first. All of them are overwritten with
 * zeros (one pass, no sync of their own), then one `sync` puts the zeros on the disk before any of
 * them is deleted (dirty pages of a deleted file are dropped, never written); the trim
 * step that follows starts with a sync, which makes the deletions durable. The old script shredded
 * (two passes and an fsync each) and synced after every file, and ran `cloud-init clean` (a Python
 * start): 10 s under TCG for a Debian guest's few dozen cloud-init files.
 *
 * The script goes in on stdin, so no key material or pattern lands in sudo's log of the command line.
 */
import type { Step } from '../step.js';
import { sshSession } from '../../provisioners/context.js';
import { buildKeyCommentPrefix } from '../../communicator/build-key.js';

/**
 * Overwrites with zeros, where they lie, the files named on stdin as "SIZE PATH" lines (find -printf
 * '%s %p\n'), whole 4 KiB blocks: one dd each, no sync (the caller syncs once).
 */
const zeroFunction = `zero() { while read -r size f; do [ "$size" -gt 0 ] && dd if=/dev/zero of="$f" bs=4096 count=$(( (size + 4095) / 4096 )) conv=notrunc 2>/dev/null; done; }`;

export function cleanGuestScript(cloudInit: boolean): string {
  const lines = [
    'set -u',
    zeroFunction,
    // Keep the file (owner, mode, SELinux label); replace its content by the lines that stay. Not
    // overwritten first: it holds public keys only, and taking the build key out is what matters.
    `for f in /root/.ssh/authorized_keys /home/*/.ssh/authorized_keys; do`,
    `  [ -f "$f" ] && grep -q ' ${buildKeyCommentPrefix}' "$f" || continue`,
    `  keep=$(grep -v ' ${buildKeyCommentPrefix}[A-Za-z0-9_.-]*$' "$f" || true)`,
    `  printf '%s' "$keep" > "$f"; [ -z "$keep" ] || echo >> "$f"`,
    'done',
  ];
  if (cloudInit) {
    lines.push(
      'if command -v cloud-init >/dev/null 2>&1; then',
      // The host keys kiln injected, cloud-init's state (its copies of the user-data, with that key) and logs.
      '  { find /etc/ssh -maxdepth 1 -type f -name "ssh_host_*" -printf "%s %p\\n"',
      '    find /var/lib/cloud /var/log/cloud-init.log /var/log/cloud-init-output.log -type f -printf "%s %p\\n" 2>/dev/null; } | zero',
      '  sync',
      // What `cloud-init clean --logs` removes (everything under /var/lib/cloud but its seed), without its Python start.
      '  find /var/lib/cloud -mindepth 1 -maxdepth 1 ! -name seed -exec rm -rf {} +',
      '  rm -f /var/log/cloud-init.log /var/log/cloud-init-output.log /etc/ssh/ssh_host_*',
      'fi',
    );
  }
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
