// kiln's default seed delivery on a host with xorriso (make setup installs it): a template that leaves
// cloud_init.delivery unset gets its seed on a cidata CD. A Debian build from the cloud fixture reads
// the seed from the CD (cloud-init's NoCloud, not NoCloud-Net over HTTP), and a rebuild after the last
// provisioner changed restores the VM saved with the cached layer, with the CD attached as when it was
// saved. The HTTP seed (its secret URL) is checked in build-debian.test.ts, which asks for it.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir } from '../helpers/guest.js';
import { kiln, outputLines } from '../helpers/kiln.js';
import { kilnWorkDirs } from '../helpers/process-audit.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-seed-cdrom-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('cloud-init seed left to kiln (debian-12-cloud fixture)', () => {
  it('goes on a cidata CD that cloud-init reads; the rebuild restores the saved VM with it; the artifact checks', async () => {
    const file = path.join(dir, 'cd.yaml');
    const out = path.join(dir, 'out');
    const tmp = path.join(dir, 'tmp');
    mkdirSync(tmp);
    const env = { KILN_CACHE_DIR: path.join(dir, 'cache'), TMPDIR: tmp };
    writeFileSync(
      file,
      `
variables:
  note: { default: first }
builds:
  - name: cd
    output_directory: ${out}
    source:
      base_image: ${path.join(imagesDir, 'debian-12-cloud.qcow2')}
      checksum: none
      memory: 1024
      cloud_init:
        user_data:
          write_files:
            - path: /etc/kiln-seeded
              content: "from the CD\\n"
    provisioners:
      - type: shell
        inline:
          - cat /var/lib/cloud/instance/datasource
          - cat /etc/kiln-seeded
      - type: shell
        inline:
          - echo "\${var.note}" | sudo tee /etc/kiln-note
    outputs:
      - format: qcow2
`,
    );

    const first = await kiln(['build', file, '--events=json', '--debug'], env);
    expect(first.exitCode, first.stderr.slice(-3000)).toBe(0);
    const logs = first.events.filter((e) => e.type === 'log').map((e) => String(e.message));
    expect(logs).toContain('cloud-init: the seed reaches the guest through a cidata CD (xorriso makes it)');
    // cloud-init found the seed on the CD (the read-only virtio disk after the build disk), not over HTTP.
    const seen = outputLines(first.events, 'provisioner 1');
    expect(
      seen.some((l) => /^DataSourceNoCloud: DataSourceNoCloud \[seed=\/dev\/vdb\]/.test(l)),
      seen.join('\n'),
    ).toBe(true);
    expect(seen).toContain('from the CD');
    expect(logs.filter((l) => /http: GET .*kiln-seed/.test(l))).toEqual([]);
    expect(first.events.find((e) => e.type === 'layer-saved' && e.index === -1)).toMatchObject({ warmBase: true });
    expect(first.events.find((e) => e.type === 'vm-state-saved' && !e.warmBase)).toMatchObject({ index: 0 });

    // The last provisioner changed: the VM saved after provisioner 1 is restored (no boot), CD and all.
    const second = await kiln(['build', file, '--events=json', '--force', '--var', 'note=second'], env);
    expect(second.exitCode, second.stderr.slice(-3000)).toBe(0);
    expect(second.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0]);
    expect(second.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index)).toEqual([1]);
    expect(second.events.find((e) => e.type === 'vm-restored')).toMatchObject({ provisioner: 1 });
    expect(outputLines(second.events, 'provisioner 2')).toEqual(['second']);

    const check = await execa('qemu-img', ['check', path.join(out, 'cd.qcow2')], { reject: false });
    expect(check.exitCode, check.stdout + check.stderr).toBe(0);
    const verify = await kiln(['verify', path.join(out, 'manifest.json')]);
    expect(verify.exitCode, verify.stdout + verify.stderr).toBe(0);
    expect(JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8')).artifacts).toHaveLength(1);
    // Both runs removed their work directories, the CD's ISO with them.
    expect(kilnWorkDirs(tmp, 'cd')).toEqual([]);
  }, 900_000);
});
