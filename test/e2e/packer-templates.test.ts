// Packer templates taken unchanged, built by kiln end to end with the tiny guest: the same build from
// HCL (test/fixtures/packer/tiny/tiny.pkr.hcl) and from legacy JSON (tiny.json), both run at once with
// Packer's command-line spelling; each artifact is booted and what the provisioners wrote is read back
// (their order too). `kiln import` of the HCL template writes YAML that kiln validate accepts.
import { chmodSync, copyFileSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, insecureKey, overlayOf, repoRoot } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-packer-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const fixtures = path.join(repoRoot, 'test/fixtures/packer/tiny');

describe('Packer templates, unchanged (tiny guest)', () => {
  it('build from HCL and from legacy JSON; the artifacts hold what the provisioners wrote, in order', async () => {
    const out = { hcl: path.join(dir, 'hcl'), json: path.join(dir, 'json') };
    const [hcl, json] = await Promise.all([
      kiln([
        'build',
        '-var',
        `output_directory=${out.hcl}`,
        '-force',
        '-only=qemu.tiny',
        '-on-error=cleanup',
        '--events=json',
        path.join(fixtures, 'tiny.pkr.hcl'),
      ]),
      kiln([
        'build',
        `-var=output_directory=${out.json}`,
        '-var',
        'marker=json-marker',
        '--events=json',
        path.join(fixtures, 'tiny.json'),
      ]),
    ]);
    expect(hcl.exitCode, hcl.stderr).toBe(0);
    expect(json.exitCode, json.stderr).toBe(0);
    // The one cosmetic field, noted in one line; the sensitive variable never printed.
    expect(hcl.stderr).toMatch(/tiny\.pkr\.hcl:\d+: vnc_bind_address: ignored: kiln starts no VNC server/);
    for (const run of [hcl, json]) {
      expect(JSON.stringify(run.events) + run.stderr).not.toContain('s3cr3t-from-packer');
      expect(run.events.filter((e) => e.type === 'provisioner-end').map((e) => e.index)).toEqual([0, 1, 2]);
      // inline_shebang "/bin/sh -ex" ran the first script in the guest: its -x traced the commands.
      expect(run.events.filter((e) => e.type === 'output').map((e) => String(e.line))).toContain('+ echo first');
    }
    // The SBOMs and provenance are named by the build: qemu.tiny in HCL (source.build), tiny in JSON.
    expect(readdirSync(out.hcl).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'qemu.tiny.cdx.json',
      'qemu.tiny.provenance.json',
      'qemu.tiny.spdx.json',
      'tiny.qcow2',
    ]);
    expect(readdirSync(out.json).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'tiny.cdx.json',
      'tiny.provenance.json',
      'tiny.qcow2',
      'tiny.spdx.json',
    ]);
    for (const o of [out.hcl, out.json]) {
      const sums = await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: o, reject: false });
      expect(sums.exitCode, sums.stdout + sums.stderr).toBe(0);
    }
    const manifest = JSON.parse(readFileSync(path.join(out.hcl, 'manifest.json'), 'utf8'));
    expect(manifest.build).toBe('qemu.tiny');
    expect(manifest.variables.secret).toBe('<sensitive>');

    const expected = {
      hcl: 'built-from-packer-hcl-HCL\nfirst\nsecond-tiny\nsecret-ok\nBuilt by kiln from a Packer template\n',
      json: 'json-marker\nfirst\nsecond-tiny\nsecret-ok\nBuilt by kiln from a Packer template\n',
    };
    await Promise.all(
      (['hcl', 'json'] as const).map(async (k) => {
        const disk = await overlayOf(path.join(out[k], 'tiny.qcow2'), dir, `boot-${k}.qcow2`);
        const guest = await Guest.boot({
          disk,
          memoryMiB: 256,
          cpus: 1,
          workDir: mkdtempSync(path.join(dir, `vm-${k}-`)),
        });
        try {
          const ssh = await guest.ssh('root', insecureKey);
          expect(await ssh.run('cat /root/marker /root/order /etc/motd')).toBe(expected[k]);
          await guest.poweroff(ssh);
        } finally {
          await guest.destroy();
        }
      }),
    );
  }, 400_000);

  it("a template with its own UEFI -drives, disk controller, -m/-smp/-cpu and -serial stdio builds and boots (Packer's qemuargs rule)", async () => {
    // As a user of such a template does: a writable copy of the system OVMF's variables for the second pflash.
    const vars = path.join(dir, 'OVMF_VARS_4M.fd');
    copyFileSync('/usr/share/OVMF/OVMF_VARS_4M.fd', vars);
    chmodSync(vars, 0o644);
    const out = path.join(dir, 'uefi');
    const r = await kiln([
      'build',
      '-var',
      `output_directory=${out}`,
      '-var',
      `ovmf_vars=${vars}`,
      '--events=json',
      path.join(repoRoot, 'test/fixtures/packer/qemuargs/uefi.pkr.hcl'),
    ]);
    expect(r.exitCode, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/uefi\.pkr\.hcl:\d+: qemuargs: -drive, -device replace kiln's defaults/);
    expect(r.stderr).toMatch(/qemuargs: -serial stdio: ignored: kiln logs the serial console itself/);
    const logs = r.events.filter((e) => e.type === 'log').map((e) => String(e.message));
    expect(logs.find((m) => m.startsWith('QEMU started'))).toMatch(/CPU model qemu64, 2 vCPU, 320 MiB/);
    // QEMU ran the template's drives and devices instead of kiln's, beside kiln's controls, once each.
    const argv = logs.find((m) => m.startsWith('qemu: '))!;
    expect(argv).toMatch(/-drive if=none,file=\S+\/disk\.qcow2,cache=writeback,discard=unmap,format=qcow2,id=disk0/);
    expect(argv).toContain('-device scsi-hd,bus=scsi0.0,drive=disk0');
    expect(argv).toContain(`file=${vars}`);
    expect(argv).not.toContain('virtio-rng-pci');
    for (const control of [
      '-qmp ',
      '-serial chardev:serial0',
      '-netdev user,id=net0,',
      '-device virtio-net-pci,netdev=net0',
    ])
      expect(argv.split(control)).toHaveLength(2);
    // The provisioner fails the build unless the guest booted UEFI, from the SCSI disk, with 2 vCPUs and > 256 MiB.
    expect(r.events.filter((e) => e.type === 'provisioner-end')).toHaveLength(1);
    expect(readdirSync(out)).toContain('tiny-uefi.qcow2');
  }, 300_000);

  it('kiln import writes YAML (with where each field came from) that kiln validate accepts', async () => {
    const yaml = path.join(dir, 'imported', 'tiny.yaml');
    await execa('mkdir', ['-p', path.dirname(yaml)]);
    const r = await kiln(['import', path.join(fixtures, 'tiny.pkr.hcl'), '-o', yaml]);
    expect(r.exitCode, r.stderr).toBe(0);
    const text = readFileSync(yaml, 'utf8');
    expect(text).toMatch(/iso_url \(tiny\.pkr\.hcl:\d+\)/);
    expect(text).not.toContain('s3cr3t-from-packer');
    const v = await kiln(['validate', '--var', 'secret=x', yaml]);
    expect(v.exitCode, v.stderr).toBe(0);
    expect(v.stdout).toContain('valid (1 build: qemu.tiny)');
    const again = await kiln(['import', path.join(fixtures, 'tiny.pkr.hcl'), '-o', yaml]);
    expect(again.exitCode).toBe(1);
    expect(again.stderr).toContain('--force');
  }, 120_000);
});
