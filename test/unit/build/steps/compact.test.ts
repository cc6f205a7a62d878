// The trim step against the fake driver and a fake SSH session: fstrim in the guest, the overlay's
// size read (shared, QEMU holds it) before and after, and a failed fstrim as a warning; the report of a
// trim the clean-up's shell ran, without a command of its own. Then the shell text itself, run by sh
// with fstrim and sync replaced: the clean-up's status decides whether the trim runs and the shell's exit.
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { compactStep } from '../../../../src/build/steps/compact.js';
import { trimResult } from '../../../../src/build/guest-finishing.js';
import { cleanUpThenTrim } from '../../../../src/build/steps/clean-guest.js';
import { removeStepDirs, runStep, stepContext } from '../../../helpers/step-context.js';
import { FakeSsh } from '../../../helpers/fake-ssh.js';

afterAll(removeStepDirs);

function trimming(reply: ConstructorParameters<typeof FakeSsh>[0]) {
  const h = stepContext({ state: { disk: { path: '/w/disk.qcow2', format: 'qcow2', virtualSize: 1 << 30 } } });
  const sizes = [300 << 20, 120 << 20];
  h.driver.imageInfo = async (file, format, shared) => {
    h.driver.calls.push({ method: 'imageInfo', args: [file, format, shared] });
    return { ...h.driver.defaultInfo, actualSize: sizes.shift()! };
  };
  const ssh = new FakeSsh(reply);
  h.ctx.state.ssh = ssh.session;
  return { h, ssh };
}

describe('trim free space', () => {
  it('trims in the guest and records the overlay before and after', async () => {
    const { h, ssh } = trimming(() => ({ exitCode: 0, stdout: '/: 1 GiB trimmed\nkiln-trim-exit=0\n' }));
    expect((await runStep(compactStep, h.ctx)).error).toBeUndefined();
    expect(h.driver.callsTo('imageInfo')).toEqual([
      ['/w/disk.qcow2', 'qcow2', true],
      ['/w/disk.qcow2', 'qcow2', true],
    ]);
    expect(ssh.commands[0]!.command).toMatch(/fstrim -av/);
    expect(h.ctx.state.compaction).toEqual({ beforeBytes: 300 << 20, afterBytes: 120 << 20 });
    expect(h.said('info')[0]).toMatch(/build overlay 300(\.0)? MiB -> 120(\.0)? MiB$/);
  });

  it('a failing fstrim is a warning, not a failure', async () => {
    const { h } = trimming(() => ({ exitCode: 0, stdout: 'fstrim: /: FITRIM ioctl failed\nkiln-trim-exit=1\n' }));
    expect((await runStep(compactStep, h.ctx)).error).toBeUndefined();
    expect(h.said('warn')).toEqual([
      'fstrim failed in the guest (exit 1): fstrim: /: FITRIM ioctl failed; artifacts may carry freed blocks',
    ]);
  });

  it('sudo failing before the trim ran: its status and output make the warning', async () => {
    const { h } = trimming(() => ({ exitCode: 1, stderr: 'sudo: a password is required\n' }));
    expect((await runStep(compactStep, h.ctx)).error).toBeUndefined();
    expect(h.said('warn')).toEqual([
      'fstrim failed in the guest (exit 1): sudo: a password is required; artifacts may carry freed blocks',
    ]);
  });

  it('reports the trim the clean-up ran, starting no command', async () => {
    const { h, ssh } = trimming(() => ({ exitCode: 0 }));
    h.ctx.state.trimmedWithCleanUp = { beforeBytes: 500 << 20, exitCode: 0, output: '/: 1 GiB trimmed\n' };
    expect((await runStep(compactStep, h.ctx)).error).toBeUndefined();
    expect(ssh.commands).toEqual([]);
    expect(h.ctx.state.compaction).toEqual({ beforeBytes: 500 << 20, afterBytes: 300 << 20 });
    expect(h.said('info')[0]).toMatch(/build overlay 500(\.0)? MiB -> 300(\.0)? MiB$/);
  });

  it('a qemu-img failure fails the step', async () => {
    const { h } = trimming(() => ({ exitCode: 0 }));
    h.driver.imageInfo = async () => {
      throw new Error('reading /w/disk.qcow2 failed: gone');
    };
    expect((await runStep(compactStep, h.ctx)).error).toBe('reading /w/disk.qcow2 failed: gone');
  });
});

describe('the clean-up then the trim, in one sh', () => {
  const bin = mkdtempSync(path.join(os.tmpdir(), 'kiln-trim-sh-'));
  afterAll(() => rmSync(bin, { recursive: true, force: true }));
  const tool = (name: string, body: string) => {
    writeFileSync(path.join(bin, name), `#!/bin/sh\n${body}\n`);
    chmodSync(path.join(bin, name), 0o755);
  };
  tool('sync', 'echo sync >&2');
  const run = (cleanUp: string) => {
    const r = spawnSync('/bin/sh', ['-s'], { input: cleanUpThenTrim(cleanUp), env: { PATH: bin }, encoding: 'utf8' });
    return {
      status: r.status,
      trim: trimResult(r.stdout),
      syncs: r.stderr.split('\n').filter((l) => l === 'sync').length,
    };
  };

  it('a clean-up that failed: its status, no trim', () => {
    tool('fstrim', 'echo trimmed; exit 0');
    expect(run('echo cleaning\nfalse\n')).toEqual({ status: 1, trim: undefined, syncs: 0 });
    expect(run('exit 3\n')).toEqual({ status: 3, trim: undefined, syncs: 0 });
  });

  it('a clean-up that ended well: the trim between two syncs, its status on the marker line, exit 0', () => {
    tool('fstrim', 'echo "/: 1 GiB (1073741824 bytes) trimmed on /dev/vda1"; exit 0');
    expect(run('true\n')).toEqual({
      status: 0,
      trim: { exitCode: 0, output: '/: 1 GiB (1073741824 bytes) trimmed on /dev/vda1\n' },
      syncs: 2,
    });
    // busybox: no -a, the root file system then; a failure is the marker's status, not the shell's.
    tool('fstrim', '[ "$1" = -av ] && exit 1; echo "fstrim: /: FITRIM ioctl failed" >&2; exit 64');
    expect(run('true\n')).toMatchObject({
      status: 0,
      trim: { exitCode: 64, output: 'fstrim: /: FITRIM ioctl failed\n' },
    });
    rmSync(path.join(bin, 'fstrim'));
    expect(run('true\n')).toMatchObject({ status: 0, trim: { exitCode: 0, output: 'no fstrim in the guest\n' } });
  });
});
