/**
 * Children that die with kiln. A build's helpers (QEMU, qemu-img, cp of a layer, a compressor) write
 * into kiln's work and output directories; none may run on after kiln, however kiln ends.
 */
import { existsSync } from 'node:fs';

/**
 * setpriv --pdeathsig makes the kernel SIGKILL a child when kiln's process dies, however it dies, so
 * an interrupted or killed build never leaves a VM (or a qemu-img writing on) behind. Where setpriv is
 * missing we still run.
 *
 * setpriv sets the death signal some time after the fork: a kiln killed in between has already
 * handed the child to init, no death signal ever comes, and the program would run on as an orphan
 * (seen once in CI: SIGKILL at a step's start, a child outliving kiln). So the program is started
 * through a shell that, with the death signal already set, checks that its parent is still kiln and
 * otherwise exits without running it; from then on the kernel covers it. setpriv and the shell both
 * exec, so the child's pid is the program's.
 */
const setpriv = ['/usr/bin/setpriv', '/bin/setpriv'].find((p) => existsSync(p));

/** Exit status of a program whose kiln died before the program could start (no one reads it). */
export const parentGoneExitCode = 125;

/** The shell script between setpriv and the program: $1 is kiln's pid, the rest the program and its arguments. */
const runIfParentIs = `[ "$PPID" = "$1" ] || exit ${parentGoneExitCode}; shift; exec "$@"`;

/** The command that runs `file args` so that it dies with kiln: pass it to execa as `execa(...diesWithKiln(f, a), opts)`. */
export function diesWithKiln(file: string, args: string[]): [string, string[]] {
  return setpriv
    ? [
        setpriv,
        ['--pdeathsig', 'SIGKILL', '--', '/bin/sh', '-c', runIfParentIs, 'kiln', String(process.pid), file, ...args],
      ]
    : [file, args];
}
