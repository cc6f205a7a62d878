import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, statSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { removeTpmState, startTpm, swtpmArgs, tpmPaths, tpmQemuArgs } from '../../src/qemu/tpm.js';
import { buildQemuArgs } from '../../src/qemu/argv.js';
import { findExecutable } from '../../src/qemu/process.js';

const alive = (pid: number) => { try { process.kill(pid, 0); return true; } catch { return false; } };
const dirs: string[] = [];
afterEach(() => { for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true }); });

describe('TPM 2.0 (swtpm)', () => {
  it('runs swtpm as a TPM 2.0 on a 0600 socket in the work dir, ending with its QEMU', () => {
    const p = tpmPaths('/w');
    expect(p).toEqual({ stateDir: '/w/tpm', socket: '/w/tpm/swtpm.sock', log: '/w/tpm/swtpm.log' });
    expect(swtpmArgs(p)).toEqual(['socket', '--tpm2', '--tpmstate', 'dir=/w/tpm,mode=0600', '--ctrl', 'type=unixio,path=/w/tpm/swtpm.sock,mode=0600', '--log', 'file=/w/tpm/swtpm.log,level=1', '--terminate']);
  });

  it('gives QEMU an emulator tpmdev on that socket and a CRB device', () => {
    expect(tpmQemuArgs('/w/tpm/swtpm.sock')).toEqual([['-chardev', 'socket,id=chrtpm,path=/w/tpm/swtpm.sock'], ['-tpmdev', 'emulator,id=tpm0,chardev=chrtpm'], ['-device', 'tpm-crb,tpmdev=tpm0']]);
    const a = buildQemuArgs({ name: 't', accelerator: 'tcg', cpus: 1, memoryMiB: 256, machine: 'pc', firmware: { type: 'bios' }, disks: [], qmpSocket: '/q', headless: true, tpmSocket: '/w/tpm/swtpm.sock' }).join(' ');
    expect(a).toContain('-chardev socket,id=chrtpm,path=/w/tpm/swtpm.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0');
  });

  it.runIf(findExecutable('swtpm'))('starts a real swtpm once its socket exists; stop and state removal leave nothing', async () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-tpm-'));
    dirs.push(work);
    const tpm = await startTpm(work);
    expect(tpm.pid && alive(tpm.pid)).toBe(true);
    expect(statSync(tpm.socket).isSocket()).toBe(true);
    expect(statSync(tpm.socket).mode & 0o777).toBe(0o600);
    // (--terminate ends it when QEMU closes the data channel: the e2e test's boot checks that.)
    await tpm.stop();
    expect(tpm.hasExited).toBe(true);
    expect(alive(tpm.pid!)).toBe(false);
    removeTpmState(work);
    expect(existsSync(path.join(work, 'tpm'))).toBe(false);
  });

  it('names the missing binary and the package', async () => {
    await expect(startTpm('/tmp', '/nonexistent/swtpm')).rejects.toThrow(/swtpm not found: \/nonexistent\/swtpm .*\n  fix: apt-get install swtpm swtpm-tools/);
  });
});
