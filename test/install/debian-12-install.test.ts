// examples/debian-12-install.yaml end to end: the debootstrap installer ISO installs Debian 12 onto a
// blank disk, kiln boots it and provisions it, and the artifact boots to SSH with the changes.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, insecureKey, insecurePublicKey, overlayOf, repoRoot } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-'));
// The example, plus the test key in its answers (the build's own key is removed from the artifact)
// and its output moved here; kept beside the example so its relative paths still hold.
const template = path.join(repoRoot, 'examples', `.test-debian-12-install-${process.pid}.yaml`);
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  rmSync(template, { force: true });
});

describe('examples/debian-12-install.yaml', () => {
  it('installs Debian 12 from the ISO, provisions it, and the artifact boots to SSH with the changes', async () => {
    const out = path.join(dir, 'out');
    const example = readFileSync(path.join(repoRoot, 'examples/debian-12-install.yaml'), 'utf8');
    writeFileSync(
      template,
      example
        .replace(
          '          ssh_authorized_key=${build.ssh_public_key}\n',
          `          ssh_authorized_key=\${build.ssh_public_key}\n          ssh_authorized_key=${insecurePublicKey}\n`,
        )
        .replace('output_directory: ../output/debian-12-install', `output_directory: ${out}`),
    );
    const run = await kiln(['build', template, '--events=json'], {}, 3_600_000);
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.sbom.manager).toBe('dpkg');
    expect(manifest.sbom.packages.map((p: { name: string }) => p.name)).toContain('openssh-server');
    const artifact = path.join(out, 'debian-12-install.qcow2');
    expect((await execa('qemu-img', ['check', artifact], { reject: false })).exitCode).toBe(0);

    const guest = await Guest.boot({ disk: await overlayOf(artifact, dir), memoryMiB: 1024 });
    try {
      const ssh = await guest.ssh('root', insecureKey, 300_000);
      expect(await ssh.run('cat /etc/kiln-marker; hostname; . /etc/os-release; echo $VERSION_ID')).toBe(
        'installed from an ISO by kiln\ndebian-12-install\n12\n',
      );
      expect(await ssh.run('cat /etc/kiln-release')).toContain('kiln');
      expect(await guest.poweroff(ssh, 'poweroff', 120_000)).toBe(true);
    } finally {
      await guest.destroy();
    }
  });
});
