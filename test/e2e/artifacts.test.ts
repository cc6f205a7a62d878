// One build, every artifact format: each disk format boots with the provisioner's marker, the OVA and
// Vagrant box unpack with correct descriptors and digests, and `kiln verify` re-checks it all.
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { createHash } from 'node:crypto';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, insecureKey, overlayOf, tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-artifacts-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');

describe('artifacts: every format from one build', () => {
  const out = path.join(dir, 'out');
  it('builds qcow2, raw, vmdk, vhdx, vhd, ova, vagrant and gce with SHA256SUMS, SHA512SUMS and a manifest', async () => {
    const file = path.join(dir, 'all.yaml');
    writeFileSync(path.join(dir, 'info.json'), '{"author":"ops"}\n');
    writeFileSync(
      file,
      `
builds:
  - name: all
    output_directory: ${out}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo every-format > /root/marker']
    checksums: [sha256, sha512]
    outputs:
      - { format: qcow2, compress: true }
      - { format: raw }
      - { format: vmdk, subformat: streamOptimized }
      - { format: vhdx }
      - { format: vhd }
      - { format: ova }
      - { format: vagrant, include: [info.json] }
      - { format: gce }
`,
    );
    const run = await kiln(['build', file, '--events=json']);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'SHA256SUMS',
      'SHA512SUMS',
      'all.box',
      'all.cdx.json',
      'all.ova',
      'all.provenance.json',
      'all.qcow2',
      'all.raw',
      'all.spdx.json',
      'all.tar.gz',
      'all.vhd',
      'all.vhdx',
      'all.vmdk',
      'manifest.json',
    ]);
    expect((await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out, reject: false })).exitCode).toBe(0);
    expect((await execa('sha512sum', ['-c', 'SHA512SUMS'], { cwd: out, reject: false })).exitCode).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.artifacts).toHaveLength(8);
    expect(manifest.tools.qemu_img).toMatch(/^\d+\.\d+/);
    expect(manifest.sbom).toEqual({ manager: 'none', packages: [] }); // busybox guest: no dpkg or rpm
    // The box's include file is an input of the build, in its provenance by digest.
    expect(readFileSync(path.join(out, 'all.provenance.json'), 'utf8')).toContain(sha256(path.join(dir, 'info.json')));
    // Progress events came from qemu-img's own progress output: each figure once, rising, up to 100.
    const progress = new Map<string, number[]>();
    for (const e of run.events)
      if (e.type === 'progress') {
        const task = String(e.task);
        progress.set(task, [...(progress.get(task) ?? []), Number(e.percent)]);
      }
    const vhdx = progress.get('convert all.vhdx') ?? [];
    expect(vhdx.at(-1)).toBe(100);
    for (const [task, figures] of progress) {
      expect(
        figures.every((p, i) => i === 0 || p > figures[i - 1]!),
        `${task}: ${figures.join(' ')}`,
      ).toBe(true);
      expect(figures.length, task).toBeLessThanOrEqual(101);
    }

    // Each disk format is what it says, and the vhd is fixed-size on a whole MiB (Azure).
    for (const [name, format] of [
      ['all.qcow2', 'qcow2'],
      ['all.vmdk', 'vmdk'],
      ['all.vhdx', 'vhdx'],
      ['all.vhd', 'vpc'],
    ] as const) {
      const info = JSON.parse(
        (await execa('qemu-img', ['info', '--output=json', '-f', format, path.join(out, name)])).stdout,
      );
      expect(info.format).toBe(format);
      expect(info['virtual-size'] % 2 ** 20).toBe(0);
    }
    expect(readFileSync(path.join(out, 'all.vhd')).length).toBe(512 * 2 ** 20 + 512); // fixed: data + footer
  }, 300_000);

  for (const [name, format] of [
    ['all.qcow2', 'qcow2'],
    ['all.raw', 'raw'],
    ['all.vmdk', 'vmdk'],
    ['all.vhdx', 'vhdx'],
  ] as const) {
    it(`the ${format} artifact boots and carries the provisioner's marker`, async () => {
      const guest = await Guest.boot({
        disk: await overlayOf(path.join(out, name), dir, `${format}-boot.qcow2`, format),
        memoryMiB: 256,
        cpus: 1,
      });
      try {
        const ssh = await guest.ssh('root', insecureKey);
        expect(await ssh.run('cat /root/marker')).toBe('every-format\n');
        await guest.poweroff(ssh);
      } finally {
        await guest.destroy();
      }
    }, 120_000);
  }

  it('the OVA unpacks: OVF first, manifest digests match, disk identical to the qcow2', async () => {
    const x = path.join(dir, 'ova');
    mkdirSync(x);
    const list = (await execa('tar', ['-tf', path.join(out, 'all.ova')])).stdout.split('\n');
    expect(list).toEqual(['all.ovf', 'all-disk1.vmdk', 'all.mf']);
    await execa('tar', ['-xf', path.join(out, 'all.ova'), '-C', x]);
    const mf = readFileSync(path.join(x, 'all.mf'), 'utf8');
    for (const f of ['all.ovf', 'all-disk1.vmdk']) expect(mf).toContain(`SHA256(${f})= ${sha256(path.join(x, f))}`);
    const ovf = readFileSync(path.join(x, 'all.ovf'), 'utf8');
    expect(ovf).toMatch(/ovf:capacity="536870912"/);
    expect(ovf).toContain('streamOptimized');
    expect(
      (
        await execa(
          'qemu-img',
          ['compare', '-f', 'qcow2', '-F', 'vmdk', path.join(out, 'all.qcow2'), path.join(x, 'all-disk1.vmdk')],
          { reject: false },
        )
      ).exitCode,
    ).toBe(0);
  });

  it('the Vagrant box unpacks: libvirt metadata, Vagrantfile, the included file, and a qcow2 identical to the artifact', async () => {
    const x = path.join(dir, 'box');
    mkdirSync(x);
    await execa('tar', ['-xzf', path.join(out, 'all.box'), '-C', x]);
    expect(readdirSync(x).sort()).toEqual(['Vagrantfile', 'box.img', 'info.json', 'metadata.json']);
    expect(readFileSync(path.join(x, 'info.json'), 'utf8')).toBe('{"author":"ops"}\n');
    expect(JSON.parse(readFileSync(path.join(x, 'metadata.json'), 'utf8'))).toEqual({
      provider: 'libvirt',
      format: 'qcow2',
      virtual_size: 1,
    });
    expect(readFileSync(path.join(x, 'Vagrantfile'), 'utf8')).toMatch(/libvirt/);
    expect(
      (await execa('qemu-img', ['compare', path.join(out, 'all.qcow2'), path.join(x, 'box.img')], { reject: false }))
        .exitCode,
    ).toBe(0);
  });

  it('kiln verify passes, then catches a changed artifact', async () => {
    const ok = await kiln(['verify', path.join(out, 'manifest.json')]);
    expect(ok.exitCode, ok.stdout + ok.stderr).toBe(0);
    expect(ok.stdout.split('\n').filter((l) => l.startsWith('ok   ')).length).toBe(8 + 3); // and the SBOMs and provenance (issue 30)
    appendFileSync(path.join(out, 'all.raw'), 'tampered');
    const bad = await kiln(['verify', path.join(out, 'manifest.json')]);
    expect(bad.exitCode).toBe(1);
    expect(bad.stdout).toMatch(/FAIL all\.raw: size is \d+, manifest says \d+; sha256 is/);
  });
});

describe('post-processors', () => {
  it('compress (zstd) replaces the raw artifact; shell-local sees the artifacts; sums and verify cover the result', async () => {
    const out = path.join(dir, 'pp');
    const seen = path.join(dir, 'seen.txt');
    const file = path.join(dir, 'pp.yaml');
    writeFileSync(
      file,
      `
builds:
  - name: pp
    output_directory: ${out}
${tinySourceYaml()}
    outputs:
      - { format: qcow2 }
      - { format: raw }
    post_processors:
      - { type: compress, algorithm: zstd, formats: [raw] }
      - type: shell-local
        inline: ['printf "%s\\\\n" "$KILN_ARTIFACTS" | xargs -n1 basename > ${seen}']
`,
    );
    const run = await kiln(['build', file]);
    expect(run.exitCode, run.stderr.slice(-2000)).toBe(0);
    expect(readdirSync(out).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'pp.cdx.json',
      'pp.provenance.json',
      'pp.qcow2',
      'pp.raw.zst',
      'pp.spdx.json',
    ]);
    expect(readFileSync(seen, 'utf8')).toBe('pp.qcow2\npp.raw.zst\n');
    expect((await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out, reject: false })).exitCode).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.artifacts[1]).toMatchObject({ name: 'pp.raw.zst', format: 'raw', compression: 'zstd' });
    await execa('zstd', ['-d', '-q', path.join(out, 'pp.raw.zst'), '-o', path.join(dir, 'pp.raw')]);
    expect(
      (
        await execa(
          'qemu-img',
          ['compare', '-f', 'qcow2', '-F', 'raw', path.join(out, 'pp.qcow2'), path.join(dir, 'pp.raw')],
          { reject: false },
        )
      ).exitCode,
    ).toBe(0);
    expect((await kiln(['verify', path.join(out, 'manifest.json')])).exitCode).toBe(0);
  }, 200_000);
});
