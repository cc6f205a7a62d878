// The wrapper every guest command runs in (inOwnProcessGroup), run by local shells as a guest's would run
// it: as the leader of its group (OpenSSH) the login shell evals the command itself; otherwise (dropbear)
// setsid gives it a group and $SHELL runs it. Either way the command sees nothing of the wrapper, its exit
// status is the command's, and the first stderr line names the group kiln would kill.
import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { inOwnProcessGroup, processGroupMarker } from '../../../src/communicator/remote-command.js';

const probe = `printf '%s|%s|%s|%s\\n' "$#" "$1" "$g$s$k" "it's"; echo "pid $$" >&2; exit 7`;

function run(shell: string, leader: boolean) {
  const argv = leader
    ? ['setsid', '--wait', shell, '-c', inOwnProcessGroup(probe)]
    : [shell, '-c', inOwnProcessGroup(probe)];
  return spawnSync(argv[0]!, argv.slice(1), { encoding: 'utf8', env: { ...process.env, SHELL: '/bin/bash' } });
}

describe.each(['/bin/sh', '/bin/bash'])('inOwnProcessGroup under %s', (shell) => {
  it.each([true, false])('group leader %s: the command alone, its status, its group reported first', (leader) => {
    const r = run(shell, leader);
    expect(r.status).toBe(7);
    expect(r.stdout).toBe("0|||it's\n");
    const [first, second] = r.stderr.split('\n');
    expect(first).toMatch(new RegExp(`^${processGroupMarker}\\d+$`));
    // The group reported is the process that ran the command (eval in place, or exec after setsid).
    expect(second).toBe(`pid ${first!.slice(processGroupMarker.length)}`);
  });
});

it('runs the command in the login shell as the leader, and in $SHELL under setsid', () => {
  const name = `echo "$0"`;
  const leader = spawnSync('setsid', ['--wait', '/bin/sh', '-c', inOwnProcessGroup(name)], {
    encoding: 'utf8',
    env: { ...process.env, SHELL: '/bin/bash' },
  });
  expect(leader.stdout.trim()).toBe('/bin/sh');
  const child = spawnSync('/bin/sh', ['-c', inOwnProcessGroup(name)], {
    encoding: 'utf8',
    env: { ...process.env, SHELL: '/bin/bash' },
  });
  expect(child.stdout.trim()).toBe('/bin/bash');
});
