// kiln build from an installer ISO: boot command typed on the keyboard (QMP) and on the serial
// console, answers served by kiln's HTTP server, install, boot from disk, provision, artifact booted.
// The serial build shares its final disk through a remote cache (s3rver on loopback): a second builder
// with an empty cache pulls it, boots nothing, and converts the same disk.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { Guest, imagesDir, insecureKey, insecurePublicKey, installerSourceYaml, overlayOf } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { awsEnvFor, startS3, type RunningServer } from '../helpers/servers/index.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-iso-build-'));
let s3: RunningServer & { accessKeyId: string; secretAccessKey: string };
const remote = 's3://cache/iso';
/** A builder of its own (local cache `name`) that shares final disks through the s3rver bucket. */
const remoteEnv = (name: string) => ({ ...awsEnvFor(s3), KILN_CACHE_DIR: path.join(dir, `cache-${name}`) });
beforeAll(async () => {
  s3 = await startS3('cache');
}, 60_000);
afterAll(async () => {
  await s3?.stop();
  rmSync(dir, { recursive: true, force: true });
});

describe('kiln build from an installer ISO', () => {
  for (const console of ['keyboard', 'serial'] as const) {
    it(`installs through a boot command typed on the ${console} console and provisions the installed disk`, async () => {
      const file = path.join(dir, `${console}.yaml`);
      writeFileSync(
        file,
        `
builds:
  - name: iso-${console}
    output_directory: ${path.join(dir, 'out', console)}
${installerSourceYaml(console, [insecurePublicKey])}
    provisioners:
      - type: shell
        inline: ['echo "provisioned after a ${console} install" > /root/marker']
    outputs:
      - format: qcow2
`,
      );
      const run =
        console === 'serial'
          ? await kiln(['build', file, '--events=json', '--debug', '--cache-remote', remote], remoteEnv('one'))
          : await kiln(['build', file, '--events=json', '--debug']);
      expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
      const logs = run.events.filter((e) => e.type === 'log').map((e) => String(e.message));
      expect(logs.some((l) => l.startsWith(`boot command typed (${console})`))).toBe(true);
      expect(logs.some((l) => /^http: GET \/answers\.cfg -> 200$/.test(l))).toBe(true);
      expect(logs.some((l) => l.startsWith('installer finished after'))).toBe(true);
      if (console === 'serial')
        expect(logs.some((l) => /^remote cache: shared the final disk \w+ .* to s3:\/\/cache\/iso/.test(l))).toBe(true);

      const artifact = path.join(dir, 'out', console, `iso-${console}.qcow2`);
      expect((await execa('qemu-img', ['check', artifact], { reject: false })).exitCode).toBe(0);
      const manifest = JSON.parse(readFileSync(path.join(dir, 'out', console, 'manifest.json'), 'utf8'));
      expect(manifest.base_image.source).toBe(path.join(imagesDir, 'installer.iso'));

      const guest = await Guest.boot({
        disk: await overlayOf(artifact, dir, `${console}-boot.qcow2`),
        memoryMiB: 256,
        cpus: 1,
      });
      try {
        const ssh = await guest.ssh('root', insecureKey);
        expect(await ssh.run('cat /root/marker; hostname')).toBe(
          `provisioned after a ${console} install\niso-${console}\n`,
        );
        // The build's key was taken back out; the key the answers file added for us stays.
        expect((await ssh.run('cat /root/.ssh/authorized_keys')).trim()).toBe(insecurePublicKey);
        await guest.poweroff(ssh);
      } finally {
        await guest.destroy();
      }
    }, 400_000);
  }

  it("a second builder with an empty cache pulls the serial build's installed disk and converts it without booting", async () => {
    const first = path.join(dir, 'out', 'serial', 'iso-serial.qcow2');
    // The same template into another output directory (not part of the final disk's key).
    const file = path.join(dir, 'serial-two.yaml');
    writeFileSync(
      file,
      readFileSync(path.join(dir, 'serial.yaml'), 'utf8').replace(
        path.join(dir, 'out', 'serial'),
        path.join(dir, 'out', 'serial-two'),
      ),
    );
    const run = await kiln(['build', file, '--events=json', '--cache-remote', remote], remoteEnv('two'));
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    const started = run.events.filter((e) => e.type === 'step-start').map((e) => e.step);
    expect(started).not.toContain('launch QEMU');
    const logs = run.events.filter((e) => e.type === 'log').map((e) => String(e.message));
    expect(logs.some((l) => l.startsWith('remote cache: pulled the final disk'))).toBe(true);
    const second = path.join(dir, 'out', 'serial-two', 'iso-serial.qcow2');
    // The pulled disk backs onto nothing, and its guest is the first builder's, byte for byte.
    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', second])).stdout) as Record<
      string,
      unknown
    >;
    expect(info['backing-filename']).toBeUndefined();
    expect((await execa('qemu-img', ['compare', first, second], { reject: false })).exitCode).toBe(0);
    const verified = await kiln(['verify', path.join(dir, 'out', 'serial-two', 'manifest.json')]);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
  }, 300_000);

  it('rejects a bad boot command at validate time with its position', async () => {
    const file = path.join(dir, 'bad.yaml');
    writeFileSync(
      file,
      `
builds:
  - name: bad
    source:
      iso: ${path.join(imagesDir, 'installer.iso')}
      checksum: none
      disk_size: 1G
      boot_command: ['install<entr>']
      communicator: { username: root, trust_on_first_use: true }
`,
    );
    const r = await kiln(['validate', file]);
    expect(r.exitCode).toBe(1);
    expect(r.stderr).toMatch(
      /bad\.yaml:8: builds\[0\]\.source\.boot_command\[0\]: unknown key <entr> at column 8\n\s+install<entr>\n\s{7}\s+\^\n\s+fix: write a known key; did you mean <enter>\?/,
    );
  });
});
