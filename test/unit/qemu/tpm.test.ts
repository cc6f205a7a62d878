import { afterEach, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { spawn } from 'node:child_process';
import os from 'node:os';
import path from 'node:path';
import { removeTpmState, startTpm, swtpmArgs, tpmPaths, tpmQemuArgs } from '../../../src/qemu/tpm.js';
import { buildQemuArgs } from '../../../src/qemu/argv.js';
import { findExecutable } from '../../../src/qemu/process.js';
import { loadTemplate } from '../../../src/template/load.js';

const alive = (pid: number) => {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
};
const dirs: string[] = [];
afterEach(() => {
  for (const d of dirs.splice(0)) rmSync(d, { recursive: true, force: true });
});

describe('TPM 2.0 (swtpm)', () => {
  it('runs swtpm as a TPM 2.0 on a 0600 socket in the work dir, ending with its QEMU', () => {
    const p = tpmPaths('/w');
    expect(p).toEqual({ stateDir: '/w/tpm', socket: '/w/tpm/swtpm.sock', log: '/w/tpm/swtpm.log' });
    expect(swtpmArgs(p)).toEqual([
      'socket',
      '--tpm2',
      '--tpmstate',
      'dir=/w/tpm,mode=0600',
      '--ctrl',
      'type=unixio,path=/w/tpm/swtpm.sock,mode=0600',
      '--log',
      'file=/w/tpm/swtpm.log,level=1',
      '--terminate',
    ]);
  });

  it('gives QEMU an emulator tpmdev on that socket and a CRB device', () => {
    expect(tpmQemuArgs('/w/tpm/swtpm.sock')).toEqual([
      ['-chardev', 'socket,id=chrtpm,path=/w/tpm/swtpm.sock'],
      ['-tpmdev', 'emulator,id=tpm0,chardev=chrtpm'],
      ['-device', 'tpm-crb,tpmdev=tpm0'],
    ]);
    const a = buildQemuArgs({
      name: 't',
      accelerator: 'tcg',
      cpus: 1,
      memoryMiB: 256,
      machine: 'pc',
      firmware: { type: 'bios' },
      disks: [],
      qmpSocket: '/q',
      headless: true,
      tpmSocket: '/w/tpm/swtpm.sock',
    }).join(' ');
    expect(a).toContain(
      '-chardev socket,id=chrtpm,path=/w/tpm/swtpm.sock -tpmdev emulator,id=tpm0,chardev=chrtpm -device tpm-crb,tpmdev=tpm0',
    );
  });

  it.runIf(findExecutable('swtpm'))(
    'starts a real swtpm once its socket exists; stop and state removal leave nothing',
    async () => {
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
    },
  );

  it('names the missing binary and the package', async () => {
    await expect(startTpm('/tmp', '/nonexistent/swtpm')).rejects.toThrow(
      /swtpm not found: \/nonexistent\/swtpm .*\n  fix: apt-get install swtpm swtpm-tools/,
    );
  });

  it("Packer's vtpm = true maps to tpm: true; use_tpm1 stays refused", () => {
    const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-tpm-'));
    dirs.push(work);
    const hcl = (extra: string) =>
      `source "qemu" "a" {\n  iso_url = "https://example.com/a.qcow2"\n  iso_checksum = "none"\n  disk_image = true\n  ssh_username = "root"\n  ssh_password = "root"\n  efi_boot = true\n${extra}\n}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`;
    writeFileSync(path.join(work, 'a.pkr.hcl'), hcl('  vtpm = true\n  tpm_device_type = "tpm-tis"'));
    const t = loadTemplate(path.join(work, 'a.pkr.hcl'), { env: {} });
    expect(t.template.builds[0]!.source).toMatchObject({ tpm: true, firmware: 'uefi' });
    expect(t.notes!.some((n) => /tpm_device_type: ignored: kiln attaches the TPM as tpm-crb/.test(n))).toBe(true);
    writeFileSync(path.join(work, 'b.pkr.hcl'), hcl('  vtpm = true\n  use_tpm1 = true'));
    expect(() => loadTemplate(path.join(work, 'b.pkr.hcl'), { env: {} })).toThrow(/use_tpm1: kiln has no equivalent/);
  });

  it.runIf(findExecutable('swtpm') && existsSync('dist/qemu/tpm.js'))(
    'leaves no swtpm behind when the process that started it is SIGKILLed',
    async () => {
      const work = mkdtempSync(path.join(os.tmpdir(), 'kiln-tpm-'));
      dirs.push(work);
      // The compiled module (npx tsc -p tsconfig.json), as kiln runs it.
      const mod = path.resolve('dist/qemu/tpm.js');
      // A stand-in for kiln: starts the TPM, prints swtpm's pid, waits to be killed.
      const child = spawn(
        process.execPath,
        [
          '-e',
          `import(${JSON.stringify(mod)}).then(async (m) => { const t = await m.startTpm(${JSON.stringify(work)}); console.log(t.pid); setInterval(() => {}, 1000); })`,
        ],
        { stdio: ['ignore', 'pipe', 'inherit'] },
      );
      const pid = await new Promise<number>((resolve, reject) => {
        child.stdout!.once('data', (d) => resolve(Number(String(d).trim())));
        child.once('exit', (code) => reject(new Error(`the stand-in exited (${code}) before starting swtpm`)));
      });
      expect(alive(pid)).toBe(true);
      child.kill('SIGKILL');
      for (let i = 0; i < 500 && alive(pid); i++) await new Promise((r) => setTimeout(r, 10));
      expect(alive(pid)).toBe(false);
    },
  );
});
