// Issue 25: Packer fields, provisioners and post-processors that kiln refused or dropped though Packer
// takes them. Each fixture in test/fixtures/packer/fields/ failed (or lost a setting) before, and maps
// here to what Packer does (packer-plugin-qemu's source, Packer 1.6.6).
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../../src/template/load.js';
import { buildQemuArgGroups, type VmSpec } from '../../../../src/qemu/argv.js';
import { expectedChecksum } from '../../../../src/build/steps/fetch-base.js';
import { fileDigest } from '../../../../src/cache/digest.js';
import { runHostCommand } from '../../../../src/provisioners/shell-local.js';
import { boxVagrantfile } from '../../../../src/artifacts/vagrant.js';
import type { ProvisionerContext } from '../../../../src/provisioners/context.js';

const fixtures = path.resolve('test/fixtures/packer/fields');
const fixture = (name: string) => path.join(fixtures, name);
const load = (file: string, only?: string[]) => loadTemplate(file, { env: {} }, { only });
const tmp = mkdtempSync(path.join(os.tmpdir(), 'kiln-packer-fields-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const write = (name: string, text: string) => {
  const f = path.join(tmp, name);
  writeFileSync(f, text);
  return f;
};
const errorOf = (f: () => unknown) => {
  try {
    f();
  } catch (e) {
    return String((e as Error).message);
  }
  throw new Error('expected an error');
};
const source = (extra: string) => `
source "qemu" "a" {
  iso_url      = "https://example.com/a.qcow2"
  iso_checksum = "none"
  disk_image   = true
  ssh_username = "root"
  ssh_password = "root"
${extra}
}
`;

describe('no-op values of fields kiln has no equivalent of', () => {
  it('accepts false, "", "false", [] (and winrm_* with SSH) with one note each', () => {
    const t = load(fixture('noop-fields.pkr.hcl'));
    expect(t.template.builds).toHaveLength(1);
    for (const k of [
      'ssh_agent_auth = "false"',
      'iso_skip_cache = false',
      'vtpm = false',
      'floppy_dirs = []',
      'net_bridge = ""',
    ]) {
      expect(t.notes!.filter((n) => n.includes(`${k}: ignored`))).toHaveLength(1);
    }
    expect(t.notes!.some((n) => /winrm_username, winrm_timeout: ignored: the communicator is ssh/.test(n))).toBe(true);
  });
  it('still refuses a value that would change the build', () => {
    const f = write(
      'vtpm.pkr.hcl',
      `${source('  use_tpm1 = true\n  ssh_agent_auth = true\n  floppy_dirs = ["d"]')}build {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    const m = errorOf(() => load(f));
    expect(m).toMatch(/use_tpm1: kiln has no equivalent/);
    expect(m).toMatch(/floppy_dirs: kiln has no equivalent/);
    expect(m).toMatch(/ssh_agent_auth: kiln connects straight/);
  });
});

describe('builder fields', () => {
  it("runs QEMU with Packer's -smp from cpus, sockets, cores and threads", () => {
    const t = load(fixture('smp.pkr.hcl'));
    expect(t.template.builds.map((b) => b.source.cpus)).toEqual([4, 4]); // 2 sockets x 2 cores; min(cpus 8, 2 cores x 2 threads)
    expect(t.template.builds.map((b) => b.source.qemu_args)).toEqual([
      [['-smp', '4,sockets=2,cores=2']],
      [['-smp', '4,cores=2,threads=2']],
    ]);
    // QEMU takes them: the guest would see 2 sockets of 2 cores.
    const r = spawnSync(
      'qemu-system-x86_64',
      ['-display', 'none', '-S', '-nodefaults', '-monitor', 'stdio', '-smp', '4,sockets=2,cores=2'],
      { input: 'info hotpluggable-cpus\nquit\n', encoding: 'utf8', timeout: 60_000 },
    );
    expect(r.stdout).toMatch(/socket-id: "1"\s+core-id: "1"/);
    // The template's own qemuargs -smp wins, as in Packer (its defaults fill only switches the template leaves out).
    const f = write(
      'smp-own.pkr.hcl',
      `${source('  cores = 2\n  qemuargs = [["-smp", "2"]]')}build {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    const own = load(f).template.builds[0]!.source;
    expect([own.cpus, own.qemu_args.filter((a) => a[0] === '-smp')]).toEqual([2, []]); // a plain count is kiln's cpus
  });

  it('puts a sata disk on an AHCI controller, which QEMU starts with', () => {
    expect(load(fixture('sata.pkr.hcl')).template.builds[0]!.source.disk_interface).toBe('sata');
    const vm: VmSpec = {
      name: 'sata',
      accelerator: 'tcg',
      cpus: 1,
      memoryMiB: 64,
      machine: 'pc',
      firmware: { type: 'bios' },
      disks: [{ path: path.join(tmp, 'sata.qcow2'), format: 'qcow2', interface: 'sata' }],
      net: { device: 'virtio-net-pci', hostForwards: [] },
      qmpSocket: path.join(tmp, 'q.sock'),
      serial: { socket: path.join(tmp, 's.sock'), log: path.join(tmp, 's.log') },
      headless: true,
    };
    const disk = buildQemuArgGroups(vm)
      .filter((g) => g[0] === '-drive' || /^(ahci|ide-hd)/.test(g[1] ?? ''))
      .flat();
    expect(disk.join(' ')).toMatch(/-device ahci,id=sata0 -drive .*if=none -device ide-hd,drive=disk0,bus=sata0\.0/);
    // The real QEMU: the disk shows up on the AHCI controller (Packer's own if=sata is refused by QEMU 7.2).
    execFileSync('qemu-img', ['create', '-q', '-f', 'qcow2', vm.disks[0]!.path, '16M']);
    const r = spawnSync('qemu-system-x86_64', ['-display', 'none', '-S', '-nodefaults', '-monitor', 'stdio', ...disk], {
      input: 'info qtree\nquit\n',
      encoding: 'utf8',
      timeout: 60_000,
    });
    expect(r.stdout).toMatch(
      /dev: ich9-ahci, id "sata0"[\s\S]*bus: sata0\.0\s+type IDE\s+dev: ide-hd, id ""\s+drive = "disk0"/,
    );
  });

  it("qemu_img_args: takes what kiln's convert does, notes create/resize, refuses the rest with the reason", () => {
    const t = load(fixture('qemu-img-args.pkr.hcl'));
    expect(t.template.builds[0]!.outputs[0]!.compress).toBe(true);
    expect(t.notes!.some((n) => /qemu_img_args\.create \(-o preallocation=metadata\): ignored/.test(n))).toBe(true);
    const f = write(
      'img.pkr.hcl',
      `${source('  qemu_img_args {\n    convert = ["-o", "compat=0.10,cluster_size=2M"]\n  }')}build {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    expect(errorOf(() => load(f))).toMatch(
      /qemu_img_args\.convert: kiln writes the artifact with qemu-img convert -O qcow2 -o compat=1\.1 .*-o compat=0\.10,cluster_size=2M would make another artifact/,
    );
  });

  it('verifies md5 and sha1 checksums, saying once that they are weak', async () => {
    const t = load(fixture('md5.pkr.hcl'));
    expect(t.template.builds.map((b) => b.source.checksum)).toEqual([
      'md5:0123456789abcdef0123456789abcdef',
      'sha1:0123456789abcdef0123456789abcdef01234567',
    ]);
    expect(t.notes!.filter((n) => /iso_checksum: md5 is weak/.test(n))).toHaveLength(1);
    const img = write('img.raw', 'an image');
    const md5 = await fileDigest(img, 'md5');
    expect(md5).toBe(execFileSync('md5sum', [img], { encoding: 'utf8' }).split(' ')[0]);
    expect(await expectedChecksum(`md5:${md5.toUpperCase()}`, img, new AbortController().signal)).toEqual({
      algorithm: 'md5',
      hex: md5,
    });
    expect(
      await expectedChecksum('sha1:0123456789abcdef0123456789abcdef01234567', img, new AbortController().signal),
    ).toMatchObject({ algorithm: 'sha1' });
  });

  it('takes qemu_binary = "kvm" (Debian\'s wrapper for qemu-system-x86_64 -enable-kvm), still refusing other emulators', () => {
    const ok = write('kvm.pkr.hcl', `${source('  qemu_binary = "kvm"')}build {\n  sources = ["source.qemu.a"]\n}\n`);
    expect(load(ok).notes!.some((n) => /qemu_binary = "kvm": kiln runs qemu-system-x86_64/.test(n))).toBe(true);
    const ppc = write(
      'ppc.pkr.hcl',
      `${source('  qemu_binary = "qemu-system-ppc64"')}build {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    expect(errorOf(() => load(ppc))).toMatch(
      /qemu_binary: kiln runs qemu-system-x86_64 \(qemu-system-aarch64 for arm64 guests\), not qemu-system-ppc64/,
    );
  });

  it('splits a comma-separated floppy_files string, as Packer 1.6.6 does', () => {
    const t = load(fixture('floppy-string.json'));
    expect(t.template.builds[0]!.source.floppy_files).toEqual([fixture('files/one.txt'), fixture('files/two.txt')]);
  });
});

describe('provisioners', () => {
  it("copies each of a file provisioner's sources into the destination folder", () => {
    const p = load(fixture('file-sources.pkr.hcl')).template.builds[0]!.provisioners;
    expect(
      p.map((x) => [x.type, (x as { source?: string }).source, (x as { destination?: string }).destination]),
    ).toEqual([
      ['file', fixture('files/one.txt'), '/tmp/'],
      ['file', fixture('files/two.txt'), '/tmp/'],
      ['shell', undefined, undefined],
    ]);
    const f = write(
      'srcs.pkr.hcl',
      `${source('')}build {\n  sources = ["source.qemu.a"]\n  provisioner "file" {\n    sources = ["${fixture('files/one.txt')}", "${fixture('files/two.txt')}"]\n    destination = "/tmp/x"\n  }\n}\n`,
    );
    expect(errorOf(() => load(f))).toMatch(/2 sources go into one destination, "\/tmp\/x", which is not a folder/);
  });

  it('keeps inline_shebang (shell and shell-local); shell-local runs in the current folder, as in Packer', () => {
    const [shell, local] = load(fixture('inline-shebang.pkr.hcl')).template.builds[0]!.provisioners as Record<
      string,
      unknown
    >[];
    expect(shell!.inline_shebang).toBe('/bin/bash -e');
    expect(local).toMatchObject({ inline_shebang: '/bin/bash -e', working_directory: process.cwd() });
  });

  it('runs shell-local inline commands through the inline_shebang, in working_directory', async () => {
    const dir = mkdtempSync(path.join(tmp, 'wd-'));
    const lines: string[] = [];
    const ctx = {
      template: { dir: '/nonexistent-template-dir' },
      build: { name: 'b' },
      signal: new AbortController().signal,
      buildValues: () => ({ name: 'b' }),
      events: {
        emit: (e: { line?: string }) => {
          if (e.line) lines.push(e.line);
        },
      },
    } as unknown as ProvisionerContext;
    // Bash-only syntax: an array. Under sh -e it fails ("Syntax error: "(" unexpected").
    await runHostCommand(
      ctx,
      {
        inline: ['arr=(a b)', 'echo "${arr[1]}" > out.txt', 'echo "$0"'],
        inline_shebang: '/bin/bash -e',
        working_directory: dir,
        env: {},
      },
      'shell-local',
    );
    expect(readFileSync(path.join(dir, 'out.txt'), 'utf8')).toBe('b\n');
    // The script kiln wrote for the shebang is gone afterwards.
    expect(existsSync(lines.at(-1)!)).toBe(false);
    await expect(
      runHostCommand(ctx, { inline: ['arr=(a b)'], working_directory: dir, env: {} }, 'shell-local'),
    ).rejects.toThrow(/exited with 2/);
  });
});

describe('post-processors', () => {
  it("accepts a post-processor's name", () => {
    expect(load(fixture('post-processor-name.pkr.hcl')).template.builds[0]!.checksums).toEqual(['sha256']);
  });

  it('names the compressed image and each vagrant box as Packer does', () => {
    const cwd = process.cwd();
    const t = load(fixture('compress-vagrant.pkr.hcl'));
    const b = t.template.builds[0]!;
    const outDir = path.join(cwd, 'output-boxes');
    expect(b.outputs[1]!.vagrantfile_extra).toBe(readFileSync(fixture('files/Vagrantfile.template'), 'utf8'));
    expect(b.outputs.map((o) => [o.format, o.name, o.directory])).toEqual([
      ['qcow2', 'tiny-boxes.qcow2', undefined], // compressed to tiny-boxes.qcow2.gz, the compress output
      ['vagrant', 'boxes-libvirt.box', undefined],
      ['vagrant', 'packer_boxes_libvirt.box', undefined], // Packer's default, in the current folder: kiln puts it in output_directory
    ]);
    expect(b.output_directory).toBe(outDir);
    expect(b.post_processors).toEqual([{ type: 'compress', algorithm: 'gzip', formats: ['qcow2'], keep_input: false }]);
    expect(t.notes!.some((n) => /packer_boxes_libvirt\.box goes into the output directory/.test(n))).toBe(true);
  });

  it("appends the vagrantfile_template to the box's Vagrantfile, after kiln's provider defaults", () => {
    const v = boxVagrantfile({
      name: 'b',
      cpus: 2,
      memoryMiB: 1024,
      firmware: 'bios',
      vagrantfileExtra: 'config.vm.boot_timeout = 600',
    });
    expect(v).toMatch(
      /libvirt\.cpus = 2\n {2}end\nend\n\n# The template's own Vagrantfile content \(vagrantfile_template \/ vagrantfile_extra\):\nconfig\.vm\.boot_timeout = 600\n$/,
    );
    expect(boxVagrantfile({ name: 'b', cpus: 2, memoryMiB: 1024, firmware: 'bios' })).toMatch(/\nend\n$/);
  });

  it("copies include's files into the box (relative to where kiln runs, as in Packer); a file that is not there is named", () => {
    const info = path.join(tmp, 'info.json');
    writeFileSync(info, '{"author":"ops"}\n');
    const box = (include: string) =>
      write(
        'inc.pkr.hcl',
        `${source('')}build {
  sources = ["source.qemu.a"]
  post-processor "vagrant" {
    include = ${include}
  }
}
`,
      );
    const b = load(box(`["${path.relative(process.cwd(), info)}"]`)).template.builds[0]!;
    expect(b.outputs.find((o) => o.format === 'vagrant')!.include).toEqual([info]);
    expect(errorOf(() => load(box('["no-such-info.json"]')))).toMatch(
      /include\[0\].*path .*no-such-info\.json does not exist/s,
    );
  });

  it('refuses what kiln cannot honour, with the reason: a tar, two boxes of one name; a vagrantfile_template it cannot read', () => {
    const f = write(
      'pp.pkr.hcl',
      `${source('')}build {
  sources = ["source.qemu.a"]
  post-processor "compress" {
    output = "a.tar.gz"
  }
  post-processors {
    post-processor "vagrant" {
      vagrantfile_template = "Vagrantfile.tpl"
    }
  }
  post-processors {
    post-processor "vagrant" {}
  }
}
`,
    );
    const m = errorOf(() => load(f));
    expect(m).toMatch(
      /Packer writes a tar archive of the build's files to .*a\.tar\.gz; kiln compresses the disk image on its own/,
    );
    expect(m).toMatch(/vagrantfile_template: cannot read .*Vagrantfile\.tpl: ENOENT/);
    expect(m).toMatch(/a vagrant post-processor before this one writes .*packer_a_libvirt\.box too/);
  });
});

describe('cd_files globs', () => {
  it("expands *, ? and [...] within a folder as Go's filepath.Glob does for Packer, sorted; a pattern matching nothing is a warning", () => {
    const drv = path.join(tmp, 'drivers/amd64');
    mkdirSync(drv, { recursive: true });
    for (const n of ['b.cat', 'a.cat', '.h.cat', 'a.inf', 'c.sys']) writeFileSync(path.join(drv, n), n);
    const f = write(
      'cd-glob.pkr.hcl',
      `${source(`  cd_files = ["${tmp}/drivers/*/*.cat", "${drv}/?.inf", "${drv}/[c-d].sys", "${drv}/*.exe"]`)}build {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    const t = load(f);
    expect(t.template.builds[0]!.source.cd_files).toEqual(
      ['.h.cat', 'a.cat', 'b.cat', 'a.inf', 'c.sys'].map((n) => path.join(drv, n)),
    );
    expect(t.notes).toContainEqual(
      expect.stringMatching(/cd-glob\.pkr\.hcl:\d+: cd_files: warning: \S*amd64\/\*\.exe matches no file/),
    );
  });
});

describe('empty scripts', () => {
  it('leaves out a /dev/null script (an empty script, a no-op in Packer), and the provisioner when nothing else is left', () => {
    const f = write(
      'devnull.pkr.hcl',
      `${source('')}\nbuild {\n  sources = ["source.qemu.a"]\n  provisioner "shell" {\n    scripts = ["/dev/null"]\n  }\n  provisioner "shell" {\n    inline = ["true"]\n  }\n  provisioner "shell-local" {\n    script = "/dev/null"\n  }\n}\n`,
    );
    const t = load(f);
    expect(t.template.builds[0]!.provisioners).toEqual([expect.objectContaining({ type: 'shell', inline: ['true'] })]);
    expect(t.notes).toContainEqual(
      expect.stringMatching(
        /devnull\.pkr\.hcl:\d+: provisioner "shell"\.scripts: \/dev\/null is an empty script \(running it does nothing, in Packer too\): this provisioner is left out/,
      ),
    );
    expect(t.notes).toContainEqual(
      expect.stringMatching(/provisioner "shell-local"\.script: \/dev\/null is an empty script/),
    );
  });
});

describe('null builds', () => {
  it('refuses a "null" build in one line saying why (it makes no machine, and a kiln build is a VM image)', () => {
    const m = errorOf(() => load(fixture('null-build.pkr.hcl')));
    expect(m).toMatch(
      /null-build\.pkr\.hcl:\d+: null\.local: the "null" builder makes no machine \(it only runs shell-local steps\), and a kiln build is a VM image/,
    );
    expect(m.split('\n')).toHaveLength(2); // the line and its fix
  });
  it('reads "sources.TYPE.NAME" by its last two words as Packer does, and refuses a "file" build in one line saying why', () => {
    const qemu = write('refs.pkr.hcl', `${source('')}\nbuild {\n  sources = ["sources.qemu.a"]\n}\n`);
    expect(load(qemu).template.builds.map((b) => b.name)).toEqual(['qemu.a']);
    const file = write(
      'file-build.pkr.hcl',
      `source "file" "user_data" {\n  content = "x"\n  target  = "seed/user-data"\n}\nbuild {\n  sources = ["sources.file.user_data"]\n}\n${source('')}\nbuild {\n  sources = ["source.qemu.a"]\n}\n`,
    );
    const m = errorOf(() => load(file));
    expect(m).toMatch(
      /file-build\.pkr\.hcl:1: file\.user_data: the "file" builder writes a file on this machine \(its content to its target\) and makes no machine[\s\S]*fix: write that file before running kiln, and build the QEMU sources only: -only=qemu\.a/,
    );
    expect(m.split('\n')).toHaveLength(2);
    expect(load(file, ['qemu.a']).template.builds.map((b) => b.name)).toEqual(['qemu.a']);
  });
});

describe('Windows', () => {
  it('refuses WinRM and the Windows provisioners in one line for the template', () => {
    const m = errorOf(() => load(fixture('windows-winrm.pkr.hcl')));
    expect(m.split('\n').filter((l) => !/^\s+fix:/.test(l))).toHaveLength(1);
    expect(m).toMatch(
      /needs a Windows guest \(communicator = "winrm" \(line 7\), powershell \(line 16\), windows-restart \(line 19\), windows-shell \(line 20\)\): .*no Windows guest can be made offline here/,
    );
    expect(m).toMatch(/fix: kiln builds guests it reaches over SSH/);
  });
  it('accepts a Windows template whose communicator is SSH with shell and file only', () => {
    const t = load(fixture('windows-ssh.pkr.hcl'));
    expect(t.template.builds[0]!.provisioners.map((p) => p.type)).toEqual(['file', 'shell']);
  });
});

describe('iso_urls', () => {
  it('skips local entries that do not exist, as Packer moves on to the next entry; keeps an existing one', () => {
    const hcl = (urls: string) => `
source "qemu" "a" {
  iso_urls     = [${urls}]
  iso_checksum = "none"
  ssh_username = "root"
  ssh_password = "root"
}
build {
  sources = ["source.qemu.a"]
}
`;
    const missing = path.join(tmp, 'cache/missing.iso');
    const t = load(write('urls-missing.pkr.hcl', hcl(`"${missing}", "https://example.com/a.iso"`)));
    expect(t.template.builds[0]!.source.iso).toBe('https://example.com/a.iso');
    expect(t.notes).toContainEqual(
      expect.stringMatching(
        /urls-missing\.pkr\.hcl:\d+: iso_urls: \S*cache\/missing\.iso: not found on this machine, so kiln uses https:\/\/example\.com\/a\.iso \(Packer tries the entries in order\)/,
      ),
    );
    const present = write('here.iso', 'x');
    const u = load(write('urls-present.pkr.hcl', hcl(`"${present}", "https://example.com/a.iso"`)));
    expect(u.template.builds[0]!.source.iso).toBe(present);
    expect(u.notes).toContainEqual(
      expect.stringMatching(
        /iso_urls: kiln uses \S*here\.iso; the entries after it are not tried if that download fails/,
      ),
    );
  });
});
