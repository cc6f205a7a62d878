// The installer ISO behaves like a real network installer: it stops at a boot prompt, takes a typed
// command line (over the serial console or the keyboard), fetches its answers from an HTTP server on
// the host, installs onto a blank disk and powers off; the installed disk then boots on its own.
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { BootConfigServer } from '../../src/http/server.js';
import { createBlank } from '../../src/qemu/qemu-img.js';
import { Guest, imagesDir, insecureKey, repoRoot } from '../helpers/guest.js';
import { typeOnKeyboard, typeOnSerial, waitForText } from '../helpers/typing.js';

const iso = path.join(imagesDir, 'installer.iso');
const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-iso-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('installer ISO fixture', () => {
  it('exists (built by make fixtures)', () => expect(existsSync(iso), `${iso} is missing: run make fixtures`).toBe(true));

  for (const via of ['serial', 'keyboard'] as const) {
    it(`installs from answers fetched over HTTP, typed on the ${via} console`, async () => {
      const answers = readFileSync(path.join(repoRoot, 'boot-configs/kiln-installer/answers.cfg'), 'utf8')
        .replace(/^hostname=.*$/m, `hostname=installed-${via}`);
      const fetched: string[] = [];
      const server = new BootConfigServer({ content: { '/answers.cfg': answers }, onRequest: (_m, url, status) => fetched.push(`${url} ${status}`) });
      const port = await server.listen();
      const disk = path.join(dir, `${via}.qcow2`);
      await createBlank(disk, 1024 * 2 ** 20);
      const installer = await Guest.boot({ disk, cdroms: [iso], memoryMiB: 1024, workDir: mkdtempSync(path.join(dir, 'w-')) });
      try {
        await waitForText(installer.serialLog, 'boot: ', 60_000);
        const line = `install url=http://10.0.2.2:${port}/answers.cfg console=ttyS0,115200`;
        if (via === 'serial') await typeOnSerial(path.join(installer.workDir, 'serial.sock'), `${line}\r`);
        else await typeOnKeyboard(installer.qmp, `${line}\n`);
        expect(await installer.qemu.waitForExit(180_000), `installer did not power off:\n${installer.serial().slice(-2000)}`).toBe(true);
        expect(installer.serial()).toMatch(/kiln-installer: INSTALL COMPLETE/);
        expect(installer.serial()).not.toMatch(/INSTALL FAILED/);
        expect(fetched).toContain('/answers.cfg 200');
      } finally {
        await installer.destroy();
        await server.close();
      }
      const installed = await Guest.boot({ disk, memoryMiB: 256, cpus: 1 });
      try {
        const ssh = await installed.ssh('root', insecureKey);
        expect((await ssh.run('hostname')).trim()).toBe(`installed-${via}`);
        expect(await installed.poweroff(ssh)).toBe(true);
      } finally {
        await installed.destroy();
      }
    }, 360_000);
  }
});
