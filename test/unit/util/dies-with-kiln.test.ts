import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { execa } from 'execa';
import { diesWithKiln, parentGoneExitCode } from '../../../src/util/dies-with-kiln.js';

describe('diesWithKiln', () => {
  const hasSetpriv = existsSync('/usr/bin/setpriv') || existsSync('/bin/setpriv');

  it('runs the program under setpriv --pdeathsig SIGKILL, unchanged at the end of the command', () => {
    const [file, args] = diesWithKiln('qemu-img', ['convert', '-p', 'a b']);
    if (!hasSetpriv) {
      expect([file, args]).toEqual(['qemu-img', ['convert', '-p', 'a b']]);
      return;
    }
    expect(file).toMatch(/\/setpriv$/);
    expect(args.slice(0, 3)).toEqual(['--pdeathsig', 'SIGKILL', '--']);
    expect(args.slice(-5)).toEqual([String(process.pid), 'qemu-img', 'convert', '-p', 'a b']);
  });

  it("the program runs as kiln's own child, in the process kiln started, with its arguments", async () => {
    // setpriv and the guard both exec: the pid kiln holds is the program's.
    const child = execa(...diesWithKiln('sh', ['-c', 'echo "$PPID|$$|$1"', 'sh', 'a b']));
    const r = await child;
    expect(r.stdout).toBe(`${process.pid}|${child.pid}|a b`);
  });

  it.runIf(hasSetpriv)('a program whose parent is not kiln (kiln died before it started) does not run', async () => {
    // Started from an intermediate shell, the program's parent is that shell, as it would be init had
    // kiln died between the fork and the death signal: the guard exits before the program runs.
    const [file, args] = diesWithKiln('sh', ['-c', 'echo ran']);
    const r = await execa('sh', ['-c', '"$@"; echo "exit $?"', 'sh', file, ...args]);
    expect(r.stdout).toBe(`exit ${parentGoneExitCode}`);
  });
});
