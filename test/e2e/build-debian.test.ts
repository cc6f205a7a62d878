// kiln build from the Debian cloud fixture: cloud-init seed over NoCloud-Net, host key verified,
// provisioners as a sudo user (shell, file, and ansible-playbook from this machine with a role, a
// template, a group variable, a handler, become and a sensitive extra var), and an artifact that
// carries their work but not kiln's access. The
// seed URL (it serves the injected host private key) hides behind a random prefix that no other local
// user can read: not on QEMU's command line, not in kiln's output.
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { execa } from 'execa';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSeedIso } from '../../src/cloudinit/seed.js';
import { Guest, imagesDir, overlayOf } from '../helpers/guest.js';
import { testSeed } from '../helpers/cloud.js';
import { fingerprintOf } from '../../src/communicator/keys.js';
import { kiln, outputLines, spawnKiln } from '../helpers/kiln.js';
import { writeFiles } from '../helpers/files.js';
import { kilnWorkDirs, processesMentioning, type ProcessInfo } from '../helpers/process-audit.js';
import { ed25519PublicPattern, privateKeyPattern, searchDisk } from '../helpers/disk-search.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-debian-build-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('kiln build (debian-12-cloud fixture)', () => {
  it('builds qcow2 + vmdk; a rebuild after a change to the last provisioner starts from the cached layer; the artifact boots, carries every change, and keeps no build key or host key', async () => {
    const file = path.join(dir, 'debian.yaml');
    const env = { KILN_CACHE_DIR: path.join(dir, 'cache') };
    writeFileSync(path.join(dir, 'app.conf'), 'setting=1\n');
    const secret = 'tok-Zq8v3-never-shown';
    const ansibleFiles: Record<string, string> = {
      'site.yml': '- hosts: web\n  roles: [site]\n',
      'group_vars/web.yml': 'site_port: 8081\n',
      'roles/site/tasks/main.yml': `
- name: Write the site configuration
  ansible.builtin.template: { src: site.conf.j2, dest: /etc/kiln-site.conf, mode: "0600" }
  notify: Record the handler
- name: Show the token (kiln masks it)
  ansible.builtin.debug: { msg: "token is {{ api_token }}" }
`,
      'roles/site/handlers/main.yml': `
- name: Record the handler
  ansible.builtin.copy: { content: "handler ran for {{ kiln_build_name }}\\n", dest: /etc/kiln-handler }
`,
      'roles/site/templates/site.conf.j2': 'title={{ site_title }}\nport={{ site_port }}\nuser={{ ansible_user_id }}\ntoken_length={{ api_token | length }}\n',
    };
    writeFiles(path.join(dir, 'ansible'), ansibleFiles);
    writeFileSync(file, `
variables:
  note: { default: first }
  title: { default: From kiln }
  token: { default: ${secret}, sensitive: true }
builds:
  - name: deb
    output_directory: ${path.join(dir, 'out')}
    source:
      base_image: ${path.join(imagesDir, 'debian-12-cloud.qcow2')}
      checksum: none
      disk_size: 3G
      memory: 1024
      cloud_init:
        user_data:
          write_files:
            - path: /etc/kiln-seeded
              content: "from user_data\\n"
    provisioners:
      - type: shell
        execute_command: "chmod +x {{path}}; sudo env {{vars}} {{path}}"
        env: { WHO: provisioner }
        inline:
          - echo "$WHO ran as $(id -un) on \${build.name}" > /etc/kiln-marker
          - cat /sys/class/dmi/id/product_serial
          - df -B1 --output=size / | tail -1 > /etc/kiln-rootsize
      - type: ansible
        playbook_file: ansible/site.yml
        groups: [web]
        become: true
        extra_vars: { site_title: '\${var.title}', api_token: '\${var.token}' }
      - type: file
        source: ${path.join(dir, 'app.conf')}
        destination: /tmp/app.conf
      - type: shell
        inline:
          - sudo install -m 0644 /tmp/app.conf /etc/app.conf
          - echo "\${var.note}" | sudo tee /etc/kiln-note
    outputs:
      - format: qcow2
      - format: vmdk
`);
    // A TMPDIR of its own: the build's work dir is then the only kiln-deb-* in it. While the guest
    // boots, look from outside as any local user could: QEMU's command line; and read the SMBIOS table
    // file in the work dir, which tells the test (its owner) the secret prefix to look for.
    const tmp = path.join(dir, 'tmp');
    mkdirSync(tmp);
    let booting: { token?: string; fileMode: number; qemu: ProcessInfo[] } | undefined;
    const first = await spawnKiln(['build', file, '--events=json', '--debug'], {
      env: { ...env, TMPDIR: tmp },
      onEvent: (e) => {
        if (booting || e.type !== 'step-start' || e.step !== 'wait for SSH') return;
        const [workDir] = kilnWorkDirs(tmp, 'deb');
        const table = path.join(workDir!, 'smbios-type1.bin');
        booting = {
          token: /\/kiln-seed-([0-9a-f]+)\//.exec(readFileSync(table, 'latin1'))?.[1],
          fileMode: statSync(table).mode & 0o777,
          qemu: processesMentioning(workDir!).filter((p) => p.command.includes('qemu-system')),
        };
      },
    }).done;
    expect(first.exitCode, first.stderr.slice(-3000)).toBe(0);
    const { token, fileMode, qemu } = booting!;
    expect(token).toMatch(/^[0-9a-f]{32}$/);
    expect(fileMode).toBe(0o600);
    expect(qemu).toHaveLength(1);
    expect(qemu[0]!.command).toMatch(/-smbios file=\S+\/smbios-type1\.bin/);
    expect(qemu[0]!.command).not.toContain(token);
    expect(qemu[0]!.command).not.toContain('nocloud');
    // The guest read the URL from the table and cloud-init fetched the seed under the prefix (the
    // request log shows it, masked); the provisioner's cat of the serial prints it masked too.
    expect(first.events.filter((e) => e.type === 'log').map((e) => String(e.message))).toContain('http: GET /kiln-seed-<sensitive>/user-data -> 200');
    const lines = first.events.filter((e) => e.type === 'output').map((e) => String(e.line));
    expect(lines.some((l) => /^ds=nocloud-net;s=http:\/\/10\.0\.2\.2:\d+\/kiln-seed-<sensitive>\/$/.test(l)), lines.join('\n')).toBe(true);
    expect(first.stdout, 'events').not.toContain(token);
    expect(first.stderr, 'human log').not.toContain(token);
    expect(kilnWorkDirs(tmp, 'deb')).toEqual([]);
    expect(first.events.filter((e) => e.type === 'layer-saved' && !e.final).map((e) => e.index)).toEqual([0, 1, 2, 3]);
    // Ansible's output streamed as line events of its provisioner, the handler ran, the token is masked
    // everywhere; kiln's known_hosts already held the guest's key: OpenSSH added nothing, asked nothing.
    const ansible = outputLines(first.events, 'provisioner 2');
    expect(ansible.filter((l) => /^(TASK|RUNNING HANDLER) \[/.test(l)).map((l) => l.replace(/ \*+$/, ''))).toEqual([
      'TASK [Gathering Facts]', 'TASK [site : Write the site configuration]', 'TASK [site : Show the token (kiln masks it)]', 'RUNNING HANDLER [site : Record the handler]',
    ]);
    expect(ansible.some((l) => l.includes('"msg": "token is <sensitive>"'))).toBe(true);
    expect(ansible.join('\n')).not.toMatch(/Permanently added|authenticity of host/);
    const firstManifest = readFileSync(path.join(dir, 'out', 'manifest.json'), 'utf8');
    for (const text of [first.stdout, first.stderr, firstManifest]) expect(text).not.toContain(secret);
    expect(JSON.parse(firstManifest).variables.token).toBe('<sensitive>');

    // Only the last provisioner changed: the first two come from their layers; the upload into /tmp (emptied
    // when the cached layer boots) runs again with it. The guest accepts this build's fresh key.
    const run = await kiln(['build', file, '--events=json', '--force', '--var', 'note=second'], env);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    expect(run.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0, 1]);
    expect(run.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index)).toEqual([2, 3]);
    const out = path.join(dir, 'out');
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.artifacts.map((a: { format: string }) => a.format)).toEqual(['qcow2', 'vmdk']);
    const hostKeyOf = (r: typeof run) => /SSH up after .* \(host key (SHA256:\S+)\)/.exec(r.events.filter((e) => e.type === 'log').map((e) => String(e.message)).join('\n'))?.[1];
    const injectedHostKey = hostKeyOf(run);
    expect(injectedHostKey).toBeDefined();
    expect(hostKeyOf(first)).not.toBe(injectedHostKey);

    for (const [name, format] of [['deb.qcow2', 'qcow2'], ['deb.vmdk', 'vmdk']] as const) {
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', path.join(out, name)])).stdout);
      expect(info.format).toBe(format);
      expect(info['virtual-size']).toBe(3 * 2 ** 30);
      expect((await execa('qemu-img', ['check', path.join(out, name)], { reject: false })).exitCode).toBe(0);
    }

    // No private key and neither build's injected host key anywhere in the artifact's bytes, deleted
    // files included (the first build's came along in the cached layer).
    const hits = await searchDisk(path.join(out, 'deb.qcow2'), { privateKey: privateKeyPattern, publicKeys: ed25519PublicPattern }, dir);
    const injected = [injectedHostKey, hostKeyOf(first)];
    expect({
      privateKeys: hits.privateKey,
      injectedHostKeys: hits.publicKeys!.filter((h) => injected.includes(fingerprintOf(`ssh-ed25519 ${h.split(': ')[1]}`))),
    }).toEqual({ privateKeys: [], injectedHostKeys: [] });

    // Boot the VMDK as a new instance with a fresh seed on a cidata ISO, under UEFI (the build booted
    // BIOS): what a user of the image would do, and the fixture's other boot path, checked here
    // rather than by a Debian boot of its own.
    const seed = testSeed('user2');
    const iso = path.join(dir, 'seed.iso');
    await writeSeedIso(seed.seed, dir, iso);
    const disk = await overlayOf(path.join(out, 'deb.vmdk'), dir, 'boot.qcow2', 'vmdk');
    const guest = await Guest.boot({ disk, firmware: 'uefi', memoryMiB: 1024, extraDisks: [{ path: iso, format: 'raw', interface: 'virtio', readonly: true }] });
    try {
      // A deadline for a stuck guest, not a speed check: at load 17 this boot took just over 240 s.
      const ssh = await guest.ssh('user2', seed.userKey.privateKey, 600_000, seed.hostKey.fingerprint);
      expect((await ssh.run('cloud-init status --wait >/dev/null; cloud-init status')).trim()).toMatch(/status: done/);
      expect(await ssh.run('test -d /sys/firmware/efi && echo uefi')).toBe('uefi\n');
      expect(await ssh.run('cat /run/cloud-init/ds-identify.log 2>/dev/null | grep -o "NoCloud" | head -1 || true')).toContain('NoCloud');
      expect((await ssh.run('sudo -n id -u')).trim()).toBe('0');
      expect(await ssh.run('cat /etc/kiln-marker /etc/app.conf /etc/kiln-seeded /etc/kiln-note')).toBe('provisioner ran as root on deb\nsetting=1\nfrom user_data\nsecond\n');
      expect(Number(await ssh.run('cat /etc/kiln-rootsize'))).toBeGreaterThan(2.5 * 2 ** 30); // grown to disk_size
      expect(await ssh.run('sudo -n cat /etc/kiln-site.conf /etc/kiln-handler')).toBe(`title=From kiln\nport=8081\nuser=root\ntoken_length=${secret.length}\nhandler ran for deb\n`);
      // A new instance on a disk that ran cloud-init before (the build's): the fresh seed's id, no root password.
      expect((await ssh.run('cloud-init status --wait >/dev/null; cloud-init query instance-id')).trim()).toBe(seed.seed.instanceId);
      expect(await ssh.run('sudo -n passwd -S root | cut -d" " -f2')).toMatch(/^L/);
      // kiln took its access back out: the build user has no key left (neither this build's nor the
      // first build's, which the cached layer carried), kiln's host key is gone.
      expect((await ssh.run('sudo -n cat /home/kiln/.ssh/authorized_keys 2>/dev/null || true')).trim()).toBe('');
      const hostKeys = (await ssh.run('sudo -n cat /etc/ssh/ssh_host_*_key.pub')).trim().split('\n').map((l) => fingerprintOf(l));
      expect(hostKeys).toContain(seed.hostKey.fingerprint);
      expect(hostKeys).not.toContain(injectedHostKey);
      expect(hostKeys).not.toContain(hostKeyOf(first));
      expect(await guest.poweroff(ssh, 'sudo poweroff', 300_000)).toBe(true); // a deadline, not a speed check
    } finally {
      await guest.destroy();
    }
  }, 1_500_000);
});
