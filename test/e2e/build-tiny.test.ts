// kiln build, end to end, from the tiny fixture: provisioners run over SSH, the artifact is checked
// with qemu-img and booted again, and a failing provisioner leaves no artifact behind.
import { createHash, randomBytes } from 'node:crypto';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { Guest, insecureKey, overlayOf, repoRoot, tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';
import { cycloneDxSchemaErrors, spdxSchemaErrors } from '../unit/artifacts/supply-chain-schemas.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-build-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function template(name: string, provisioners: string, { bootloader = false } = {}): string {
  const file = path.join(dir, `${name}.yaml`);
  writeFileSync(
    file,
    `
variables:
  marker: { default: from-kiln }
  token: { default: s3cr3t-t0ken, sensitive: true }
builds:
  - name: ${name}
    output_directory: ${path.join(dir, 'out', name)}
${tinySourceYaml('    ', { bootloader })}
    provisioners:
${provisioners}
    outputs:
      - format: qcow2
      - format: raw
`,
  );
  return file;
}

describe('kiln build (tiny fixture)', () => {
  it('provisions, converts, checksums, writes a manifest, and the artifact boots with the changes', async () => {
    writeFileSync(path.join(dir, 'upload.txt'), 'uploaded by the file provisioner\n');
    // A folder of 200 small files and one of 8 MiB, up as one tar stream and back down as one.
    const tree = path.join(dir, 'tree');
    mkdirSync(path.join(tree, 'sub/deep'), { recursive: true });
    mkdirSync(path.join(tree, 'empty'));
    for (let i = 0; i < 200; i++) {
      const f = path.join(tree, i % 2 ? 'sub' : 'sub/deep', `f${i}.txt`);
      writeFileSync(f, randomBytes(i * 13));
      chmodSync(f, [0o644, 0o600, 0o755, 0o666][i % 4]!);
    }
    writeFileSync(path.join(tree, 'big.bin'), randomBytes(8 << 20));
    chmodSync(path.join(tree, 'big.bin'), 0o640);
    const file = template(
      'ok',
      `
      - type: shell
        inline:
          - echo "\${var.marker}" > /root/marker
          - echo "token is \${var.token}"
        env: { GREETING: hello }
      - type: shell
        inline: ['echo "$GREETING from $KILN_BUILD_NAME" > /root/env.txt']
        env: { GREETING: hello }
      - type: file
        source: ${path.join(dir, 'upload.txt')}
        destination: /root/upload.txt
      - type: file
        source: /root/marker
        destination: ${path.join(dir, 'downloaded-marker')}
        direction: download
      - type: file
        source: ${tree}/
        destination: /root/tree
      - type: file
        source: /root/tree
        destination: ${path.join(dir, 'back')}
        direction: download
      - type: shell-local
        inline: ['echo "local $KILN_NAME" > ${path.join(dir, 'local.txt')}']
      - type: shell
        inline:
          - mkdir -p /root/hostile/open /root/hostile/sticky
          - printf '#!/bin/sh\\n' > /root/hostile/open/suid && chmod 4777 /root/hostile/open/suid
          - echo shared > /root/hostile/sticky/shared && chmod 666 /root/hostile/sticky/shared
          - chmod 777 /root/hostile/open && chmod 1777 /root/hostile/sticky
      - type: file
        source: /root/hostile/open/suid
        destination: ${path.join(dir, 'fetched')}/
        direction: download
      - type: file
        source: /root/hostile
        destination: ${path.join(dir, 'hostile-back')}
        direction: download
        max_size: 1M`,
      { bootloader: true },
    ); // through firmware and GRUB, as users boot it
    const run = await kiln(['build', file, '--events=json']);
    expect(run.exitCode, run.stderr).toBe(0);

    // Events: every step ran, the secret never appears, five provisioners ran in order.
    const types = run.events.map((e) => e.type);
    expect(types[0]).toBe('build-start');
    expect(types.at(-1)).toBe('build-end');
    expect(run.events.filter((e) => e.type === 'provisioner-end').map((e) => e.index)).toEqual([
      0, 1, 2, 3, 4, 5, 6, 7, 8, 9,
    ]);
    expect(JSON.stringify(run.events) + run.stderr).not.toContain('s3cr3t-t0ken');
    expect(run.stderr).toContain('token is <sensitive>');

    const out = path.join(dir, 'out', 'ok');
    expect(readdirSync(out).sort()).toEqual([
      'SHA256SUMS',
      'manifest.json',
      'ok.cdx.json',
      'ok.provenance.json',
      'ok.qcow2',
      'ok.raw',
      'ok.spdx.json',
    ]);
    expect(readdirSync(path.join(dir, 'out')).filter((n) => n.includes('partial'))).toEqual([]);
    const sums = await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: out, reject: false });
    expect(sums.exitCode, sums.stdout + sums.stderr).toBe(0);
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.build).toBe('ok');
    expect(manifest.variables).toEqual({ marker: 'from-kiln', token: '<sensitive>' });
    expect(manifest.base_image.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(manifest.artifacts.map((a: { name: string }) => a.name)).toEqual(['ok.qcow2', 'ok.raw']);

    // SBOMs valid against the official schemas (busybox: no package database, so the base image and
    // kiln's files only), listing every file kiln uploaded by digest; the provenance names every input.
    const sha256 = (f: string) => createHash('sha256').update(readFileSync(f)).digest('hex');
    const treeFiles = (await execa('find', ['.', '-type', 'f'], { cwd: tree })).stdout
      .split('\n')
      .map((f) => f.slice(2))
      .sort();
    const uploaded = [
      ['/root/upload.txt', sha256(path.join(dir, 'upload.txt'))],
      ...treeFiles.map((f) => [`/root/tree/${f}`, sha256(path.join(tree, f))]),
    ];
    const spdx = JSON.parse(readFileSync(path.join(out, 'ok.spdx.json'), 'utf8'));
    const cdx = JSON.parse(readFileSync(path.join(out, 'ok.cdx.json'), 'utf8'));
    expect(spdxSchemaErrors(spdx)).toEqual([]);
    expect(cycloneDxSchemaErrors(cdx)).toEqual([]);
    expect(spdx.packages).toHaveLength(1);
    expect(spdx.packages[0].checksums).toEqual([{ algorithm: 'SHA256', checksumValue: manifest.base_image.sha256 }]);
    expect(
      spdx.files
        .map((f: { fileName: string; checksums: { checksumValue: string }[] }) => [
          f.fileName.slice(1),
          f.checksums[1]!.checksumValue,
        ])
        .sort(),
    ).toEqual(uploaded.sort());
    expect(cdx.components.filter((c: { type: string }) => c.type === 'file')).toHaveLength(uploaded.length);
    const provenance = JSON.parse(readFileSync(path.join(out, 'ok.provenance.json'), 'utf8'));
    expect(
      provenance.subject.map((s: { name: string; digest: { sha256: string } }) => [s.name, s.digest.sha256]),
    ).toEqual(manifest.artifacts.map((a: { name: string; sha256: string }) => [a.name, a.sha256]));
    const inputs = provenance.predicate.buildDefinition.resolvedDependencies.map(
      (d: { digest: { sha256: string } }) => d.digest.sha256,
    );
    expect(
      [manifest.template.sha256, manifest.base_image.sha256, ...uploaded.map(([, d]) => d)].filter(
        (d) => !inputs.includes(d),
      ),
    ).toEqual([]);
    const verified = await kiln(['verify', path.join(out, 'manifest.json')]);
    expect(verified.exitCode, verified.stdout + verified.stderr).toBe(0);
    expect(verified.stdout).toMatch(/^ok   ok\.spdx\.json$/m);

    const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', path.join(out, 'ok.qcow2')])).stdout);
    expect(info.format).toBe('qcow2');
    expect(info['backing-filename']).toBeUndefined(); // self-contained, not an overlay on the fixture
    expect(manifest.artifacts[0].virtual_size).toBe(info['virtual-size']);
    expect((await execa('qemu-img', ['check', path.join(out, 'ok.qcow2')], { reject: false })).exitCode).toBe(0);
    expect(readFileSync(path.join(dir, 'downloaded-marker'), 'utf8')).toBe('from-kiln\n');
    expect(readFileSync(path.join(dir, 'local.txt'), 'utf8')).toBe('local ok\n');

    // The folder made the round trip: same files, bytes and modes (empty folders too; no world-write
    // from the guest, the host's umask), and the upload reported its progress up to the whole size.
    const umask = process.umask();
    const listing = (root: string, mask = 0o7777) =>
      execa('find', ['.', '-printf', '%y %m %p\\n'], { cwd: root }).then((r) =>
        r.stdout
          .split('\n')
          .map((l) => l.replace(/ (\d+) /, (_, m: string) => ` ${(parseInt(m, 8) & mask).toString(8)} `))
          .sort(),
      );
    expect(await listing(path.join(dir, 'back/tree'))).toEqual(await listing(tree, 0o775 & ~umask));
    const diff = await execa('diff', ['-r', tree, path.join(dir, 'back/tree')], { reject: false });
    expect(diff.exitCode, diff.stdout).toBe(0);
    const treeBytes = ((200 * 199) / 2) * 13 + (8 << 20);
    const upload = run.events.filter((e) => e.type === 'transfer-progress' && e.index === 4);
    expect(upload.at(-1)).toMatchObject({ direction: 'upload', path: '/root/tree', done: treeBytes, total: treeBytes });
    expect(run.events.some((e) => e.type === 'transfer-progress' && e.index === 5 && e.direction === 'download')).toBe(
      true,
    );
    // Both ways as one tar stream (busybox tar in the guest), not file by file over SFTP.
    expect(run.stderr).toContain(`uploaded ${tree}/ -> /root/tree (201 files, tar stream)`);
    expect(run.stderr).toContain(`downloaded /root/tree -> ${path.join(dir, 'back')} (tar stream)`);

    // A hostile guest's modes stay in the guest: no setuid, no world-write, no sticky bit on the host;
    // "fetched/" (missing) was made and received the file under its own name, as Packer does.
    const ordinary = (guest: number) => (guest & 0o775 & ~umask).toString(8);
    expect((await listing(path.join(dir, 'hostile-back/hostile'))).join('\n')).toBe(
      [
        `d ${ordinary(0o755)} .`,
        `d ${ordinary(0o777)} ./open`,
        `d ${ordinary(0o1777)} ./sticky`,
        `f ${ordinary(0o4777)} ./open/suid`,
        `f ${ordinary(0o666)} ./sticky/shared`,
      ]
        .sort()
        .join('\n'),
    );
    expect(readFileSync(path.join(dir, 'fetched', 'suid'), 'utf8')).toBe('#!/bin/sh\n');
    expect(statSync(path.join(dir, 'fetched', 'suid')).mode & 0o7777).toBe(0o666 & 0o775 & ~umask);

    // Boot both artifacts and read what the provisioners left.
    for (const [name, format] of [
      ['ok.qcow2', 'qcow2'],
      ['ok.raw', 'raw'],
    ] as const) {
      const disk = await overlayOf(path.join(out, name), dir, `boot-${format}.qcow2`, format);
      const guest = await Guest.boot({ disk, memoryMiB: 256, cpus: 1 });
      try {
        const ssh = await guest.ssh('root', insecureKey);
        expect(await ssh.run('cat /root/marker /root/env.txt /root/upload.txt')).toBe(
          'from-kiln\nhello from ok\nuploaded by the file provisioner\n',
        );
        if (format === 'qcow2') {
          // Downloads from this real guest's SFTP server: a link to /dev/zero is refused before a byte
          // is read (it was read for ever), a /proc file (no size) comes whole.
          await ssh.run('ln -sf /dev/zero /root/zero');
          await expect(
            ssh.download('/root/zero', path.join(dir, 'zero'), undefined, undefined, 2 ** 20),
          ).rejects.toThrow(/it is a character device/);
          expect(existsSync(path.join(dir, 'zero'))).toBe(false);
          await ssh.download('/proc/version', path.join(dir, 'proc-version'), undefined, undefined, 2 ** 20);
          expect(readFileSync(path.join(dir, 'proc-version'), 'utf8')).toMatch(/^Linux version .*\n$/);
        }
        await guest.poweroff(ssh);
      } finally {
        await guest.destroy();
      }
    }
  }, 400_000);

  it('refuses an existing output directory without --force, and leaves it untouched', async () => {
    const file = template(
      'exists',
      `
      - type: shell
        inline: ['true']`,
    );
    const out = path.join(dir, 'out', 'exists');
    await execa('mkdir', ['-p', out]);
    writeFileSync(path.join(out, 'keep.txt'), 'mine');
    const run = await kiln(['build', file]);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(/output directory .* already exists/);
    expect(run.stderr).toMatch(/--force/);
    expect(readdirSync(out)).toEqual(['keep.txt']);
  });

  it('a failing provisioner fails the build: non-zero exit, no artifact, no partial files, no QEMU left', async () => {
    // The failure: a folder download past its max_size, into a folder that already holds a file.
    const back = path.join(dir, 'big-back');
    mkdirSync(path.join(back, 'big'), { recursive: true });
    writeFileSync(path.join(back, 'big', 'keep.txt'), 'mine');
    const file = template(
      'fails',
      `
      - type: shell
        inline:
          - mkdir -p /root/big && dd if=/dev/urandom of=/root/big/data.bin bs=1024 count=3072
          - echo about to fail
      - type: file
        source: /root/big
        destination: ${back}
        direction: download
        max_size: 1M`,
    );
    const run = await kiln(['build', file, '--events=json']);
    expect(run.exitCode).toBe(1);
    expect(run.stderr).toMatch(
      /provisioner 2: downloading \/root\/big to \S+ failed: the folder holds more than the limit of 1\.0 MiB: "data\.bin" \(3\.0 MiB\)/,
    );
    expect(run.stderr).toContain('fix: if that much is expected, set max_size: 3M (or more) on this file provisioner');
    expect(run.stderr).toContain('about to fail');
    // Only what kiln wrote is gone: the destination's previous file is there, no partial beside it.
    expect(readdirSync(back)).toEqual(['big']);
    expect(readdirSync(path.join(back, 'big'))).toEqual(['keep.txt']);
    expect(existsSync(path.join(dir, 'out', 'fails'))).toBe(false);
    expect(
      existsSync(path.join(dir, 'out')) ? readdirSync(path.join(dir, 'out')).filter((n) => n.includes('fails')) : [],
    ).toEqual([]);
    const ps = await execa('pgrep', ['-f', 'process=kiln-fails'], { reject: false });
    expect(ps.stdout.trim()).toBe('');
    expect(run.events.at(-1)).toMatchObject({ type: 'build-end', ok: false });
  }, 200_000);
});

describe('shipped examples', () => {
  it('validate (their base images are the fixtures)', async () => {
    for (const example of ['examples/tiny.yaml', 'examples/debian-12-cloud.yaml']) {
      const r = await kiln(['validate', path.join(repoRoot, example)]);
      expect(r.exitCode, r.stderr).toBe(0);
      expect(r.stdout).toContain('valid (1 build');
    }
  });
});

describe('kiln build: interrupts and parallel builds', () => {
  it('SIGINT during provisioning cleans up: exit 130, no QEMU, no work dir, no partial output', async () => {
    const file = template(
      'interrupted',
      `
      - type: shell
        inline: ['sleep 600']`,
    );
    const child = execa('node', [path.join(repoRoot, 'bin/kiln.js'), 'build', file, '--events=json'], {
      reject: false,
      cwd: repoRoot,
      stdin: 'ignore',
    });
    let sent = false;
    let buffered = '';
    child.stdout!.on('data', (chunk: Buffer) => {
      buffered += chunk.toString();
      // Driven by the event stream, not by sleeps: interrupt as soon as the provisioner starts.
      if (!sent && buffered.includes('"type":"provisioner-start"')) {
        sent = true;
        child.kill('SIGINT');
      }
    });
    const r = await child;
    expect(sent).toBe(true);
    expect(r.exitCode).toBe(130);
    expect(String(r.stderr)).toMatch(/SIGINT received, cleaning up/);
    expect(existsSync(path.join(dir, 'out', 'interrupted'))).toBe(false);
    expect(readdirSync(path.join(dir, 'out')).filter((n) => n.includes('interrupted'))).toEqual([]);
    expect(readdirSync(os.tmpdir()).filter((n) => n.startsWith('kiln-interrupted-'))).toEqual([]);
    expect((await execa('pgrep', ['-f', 'process=kiln-interrupted'], { reject: false })).stdout.trim()).toBe('');
  }, 200_000);

  it('--parallel-builds 2 runs two builds at once without collisions', async () => {
    const file = path.join(dir, 'pair.yaml');
    const build = (name: string) => `
  - name: ${name}
    output_directory: ${path.join(dir, 'out', name)}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo ${name} > /root/name']`;
    writeFileSync(file, `builds:${build('left')}${build('right')}\n`);
    const run = await kiln(['build', file, '--parallel-builds', '2', '--events=json']);
    expect(run.exitCode, run.stderr).toBe(0);
    // Both were running at once: the second started before the first ended.
    const starts = run.events.filter((e) => e.type === 'build-start').map((e) => e.build);
    const firstEnd = run.events.findIndex((e) => e.type === 'build-end');
    expect(run.events.findIndex((e) => e.type === 'build-start' && e.build === starts[1])).toBeLessThan(firstEnd);
    const ports = run.events
      .filter((e) => e.type === 'log' && /ssh on 127\.0\.0\.1:(\d+)/.test(String(e.message)))
      .map((e) => /:(\d+)\)/.exec(String(e.message))![1]);
    expect(new Set(ports).size).toBe(2);
    for (const name of ['left', 'right']) {
      const sums = await execa('sha256sum', ['-c', 'SHA256SUMS'], { cwd: path.join(dir, 'out', name), reject: false });
      expect(sums.exitCode).toBe(0);
    }
    expect(run.stderr).toContain('2 of 2 builds succeeded');
  }, 300_000);
});

describe('kiln build: a provisioner that reboots the guest', () => {
  it('expect_disconnect lets a reboot pass, and the next provisioner reconnects', async () => {
    const file = template(
      'reboots',
      `
      - type: shell
        inline: ['echo before > /root/before', 'sync', 'reboot']
        expect_disconnect: true
      - type: shell
        inline: ['cat /root/before > /root/after-reboot', 'cat /proc/uptime']`,
    );
    const run = await kiln(['build', file, '--events=json']);
    expect(run.exitCode, run.stderr.slice(-2000)).toBe(0);
    expect(run.events.filter((e) => e.type === 'provisioner-end').map((e) => e.index)).toEqual([0, 1]);
    // The second provisioner ran on a fresh boot: uptime is shorter than the whole build so far.
    const uptime = run.events.find((e) => e.type === 'output' && e.source === 'provisioner 2');
    const total = Number(run.events.at(-1)!.ms) / 1000;
    expect(Number(String(uptime!.line).split(' ')[0])).toBeLessThan(total - 2);
    const guest = await Guest.boot({
      disk: await overlayOf(path.join(dir, 'out', 'reboots', 'reboots.qcow2'), dir, 'reboots-boot.qcow2'),
      memoryMiB: 256,
      cpus: 1,
    });
    try {
      const ssh = await guest.ssh('root', insecureKey);
      expect(await ssh.run('cat /root/after-reboot')).toBe('before\n');
      await guest.poweroff(ssh);
    } finally {
      await guest.destroy();
    }
  }, 300_000);
});
