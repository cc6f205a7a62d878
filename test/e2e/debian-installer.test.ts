// The real Debian installer (debian-installer-12-netboot-amd64 on an isolinux CD): kiln types its boot
// command on the serial console, d-i fetches the preseed from kiln's HTTP server and runs it (its
// early_command prints a marker with the host name the boot command set), then the build is stopped
// cleanly with SIGINT. A full d-i install cannot finish here: the reachable mirror serves no .udeb files.
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir, repoRoot } from '../helpers/guest.js';
import { waitForText } from '../helpers/typing.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-d-i-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('the real Debian installer', () => {
  it('boots, fetches the preseed from boot-configs through kiln, applies it, and the build stops cleanly', async () => {
    const iso = path.join(imagesDir, 'debian-netboot.iso');
    expect(existsSync(iso), `${iso} is missing: run make fixtures`).toBe(true);
    const preseed =
      readFileSync(path.join(repoRoot, 'boot-configs/debian/preseed.cfg'), 'utf8') +
      '\n# Added by the test: proof that d-i read and ran this file.\n' +
      'd-i preseed/early_command string echo "KILN-PRESEED-APPLIED host=$(hostname)" > /dev/ttyS0\n';
    const template = path.join(dir, 'd-i.json');
    writeFileSync(
      template,
      JSON.stringify({
        builds: [
          {
            name: 'debian-di',
            output_directory: path.join(dir, 'out'),
            source: {
              iso,
              checksum: 'none',
              disk_size: '4G',
              memory: 1024,
              boot_console: 'serial',
              boot_command: [
                '<waitFor "boot: " 2m>install auto=true priority=critical url=http://${build.http_ip}:${build.http_port}/preseed.cfg hostname=${build.name} domain=localdomain console=ttyS0,115200n8<enter>',
              ],
              http_content: { '/preseed.cfg': preseed },
              communicator: { username: 'root', trust_on_first_use: true },
            },
          },
        ],
      }),
    );
    const child = execa('node', [path.join(repoRoot, 'bin/kiln.js'), 'build', template, '--events=json'], {
      reject: false,
      cwd: repoRoot,
      stdin: 'ignore',
    });
    let stdout = '';
    child.stdout!.on('data', (b: Buffer) => {
      stdout += b.toString();
    });
    const waitFor = async (re: RegExp, ms: number) => {
      const deadline = Date.now() + ms;
      while (!re.test(stdout)) {
        if (Date.now() > deadline || child.exitCode !== null)
          throw new Error(`no ${re} in kiln's events:\n${stdout.slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 200));
      }
      return re.exec(stdout)!;
    };
    try {
      const serialLog = (await waitFor(/logfile=([^,"]+serial\.log)/, 60_000))[1]!;
      await waitFor(/boot command typed \(serial\)/, 180_000);
      await waitFor(/http: GET \/preseed\.cfg -> 200/, 300_000);
      await waitForText(serialLog, 'KILN-PRESEED-APPLIED host=debian-di', 300_000);
    } finally {
      child.kill('SIGINT');
    }
    const r = await child;
    expect(r.exitCode).toBe(130);
    expect(existsSync(path.join(dir, 'out'))).toBe(false);
    expect((await execa('pgrep', ['-f', 'process=kiln-debian-di'], { reject: false })).stdout.trim()).toBe('');
  }, 900_000);
});
