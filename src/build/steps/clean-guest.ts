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
 * sync: the trim step that follows starts with one, which also makes the deletions durable.
 *
 * The script goes in on stdin, so no key material or pattern lands in sudo's log of the command line.
 */
import type { Step } from '../step.js';
import { sshSession } from '../../provisioners/context.js';
import { buildKeyCommentPrefix } from '../../communicator/build-key.js';
import { removeGuestProxyScript } from '../../provisioners/guest-proxy.js';

/**
 * Takes the lines whose comment (last field) is a kiln build key's out of the authorized_keys files
 * under `root`, with shell builtins only. A file is rewritten in place (owner, mode, SELinux label
 * kept), and only when it had such a line; it holds public keys only, so it is not overwritten first.
 */
function removeBuildKeys(root: string): string {
  return [
    `for f in ${root}/root/.ssh/authorized_keys ${root}/home/*/.ssh/authorized_keys; do`,
    '  [ -f "$f" ] || continue',
    "  keep=''; drop=0",
    '  while IFS= read -r line || [ -n "$line" ]; do',
    '    c=${line##* }',
    // a build key's comment: the prefix, then letters, digits, _ . - only (as kiln writes it)
    `    case $line in *' ${buildKeyCommentPrefix}'*) case \${c#${buildKeyCommentPrefix}} in "$c"|*[!A-Za-z0-9_.-]*) ;; *) drop=1; continue ;; esac ;; esac`,
    '    keep="$keep$line',
    '"',
    '  done < "$f"',
    `  [ "$drop" = 0 ] || printf '%s' "$keep" > "$f"`,
    'done',
  ].join('\n');
}

/** How long the clean-up waits for cloud-init's last stage (with cloud_init.wait: false it may still run). */
const cloudInitFinishWaitSeconds = 600;

/**
 * The clean-up script. `root` prefixes every guest path (tests run the script on a tree of their
 * own); the guest's is '' (the script runs as root on /).
 */
export function cleanGuestScript(cloudInit: boolean, root = ''): string {
  // The build proxy of a --record/--offline build (or of the cached layer this build resumed from):
  // nothing to do, and no process started, when there is none.
  const lines = ['set -u', removeBuildKeys(root), removeGuestProxyScript(root).trimEnd()];
  if (cloudInit) {
    const state = `${root}/var/lib/cloud`;
    const logs = `${root}/var/log/cloud-init.log ${root}/var/log/cloud-init-output.log`;
    lines.push(
      'if command -v cloud-init >/dev/null 2>&1; then',
      // With cloud_init.wait false the provisioners may have finished before cloud-init's later stages:
      // what those write (semaphores, logs, the instance's files) must not come back after the wipe.
      // The test `cloud-init status --wait` makes, without its Python start (seconds under TCG).
      // Bounded: a guest whose last stage never ends fails the build here rather than hanging it.
      `  n=0; while [ -e ${root}/run/cloud-init/status.json ] && [ ! -e ${root}/run/cloud-init/result.json ]; do`,
      `    [ $n -lt ${cloudInitFinishWaitSeconds} ] || { echo "cloud-init's last stage (modules-final) had not finished ${cloudInitFinishWaitSeconds} s after provisioning (no /run/cloud-init/result.json): not wiping its state while it still writes; check the guest's cloud-final.service, or set cloud_init.wait: true" >&2; exit 3; }`,
      '    n=$((n + 1)); sleep 1',
      '  done',
      // The host keys kiln injected, cloud-init's state (its copies of the user-data, with that key) and logs.
      `  find ${root}/etc/ssh ${state} ${logs} \\( -path ${state}/seed -o -type d -name sem \\) -prune -o \\`,
      `    -type f ! -empty \\( ! -path '${root}/etc/ssh/*' -o -name 'ssh_host_*' \\) -exec shred -n0 -z -- {} + 2>/dev/null`,
      // What `cloud-init clean --logs` removes (everything under /var/lib/cloud but its seed), without its Python start.
      '  set --',
      `  for d in ${state}/* ${state}/.[!.]*; do [ "$d" = ${state}/seed ] || [ ! -e "$d" ] || set -- "$@" "$d"; done`,
      `  rm -rf -- "$@" ${logs} ${root}/etc/ssh/ssh_host_*`,
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
