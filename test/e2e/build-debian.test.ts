// kiln build from the Debian cloud fixture: cloud-init seed over NoCloud-Net, host key verified,
// provisioners as a sudo user (shell, file, and ansible-playbook from this machine with a role, a
// template, a group variable, a handler, become and a sensitive extra var), and an artifact that
// carries their work but not kiln's access. The
// seed URL (it serves the injected host private key) hides behind a random prefix that no other local
// user can read: not on QEMU's command line, not in kiln's output.
import { createHash } from 'node:crypto';
import { mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync, statSync, writeFileSync } from 'node:fs';
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
import {
  cycloneDxSchemaErrors,
  spdxLicenceProblems,
  spdxSchemaErrors,
} from '../unit/artifacts/supply-chain-schemas.js';

const sha256 = (file: string) => createHash('sha256').update(readFileSync(file)).digest('hex');
/** Every regular file under `root`, depth first. */
const filesUnder = (root: string): string[] =>
  readdirSync(root, { withFileTypes: true }).flatMap((e) =>
    e.isDirectory() ? filesUnder(path.join(root, e.name)) : [path.join(root, e.name)],
  );
const flipByte = (file: string, at: number) => {
  const b = readFileSync(file);
  b[at] = b[at]! ^ 1;
  writeFileSync(file, b);
};

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-debian-build-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

describe('kiln build (debian-12-cloud fixture)', () => {
  it('builds qcow2 + vmdk; a rebuild after a change to the last provisioner restores the VM saved with the cached layer (no boot); the artifact boots, carries every change, and keeps no build key or host key', async () => {
    const file = path.join(dir, 'debian.yaml');
    const env = { KILN_CACHE_DIR: path.join(dir, 'cache') };
    // The upload: app.conf and Debian's jq packages (fetched on the host, as the fixture's own packages
    // are), so the SBOM has jq from dpkg to show as a purl.
    const payload = path.join(dir, 'payload');
    mkdirSync(payload);
    writeFileSync(path.join(payload, 'app.conf'), 'setting=1\n');
    await execa('apt-get', ['download', 'jq', 'libjq1', 'libonig5'], { cwd: payload });
    const jqVersion = (await execa('sh', ['-c', 'dpkg-deb -f jq_*.deb Version'], { cwd: payload })).stdout.trim();
    // A signing key, and the allowed_signers file a receiving site would keep.
    const signKey = path.join(dir, 'builder-key');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-C', 'builder', '-f', signKey]);
    const allowed = path.join(dir, 'allowed_signers');
    writeFileSync(allowed, `builder@kiln namespaces="kiln" ${readFileSync(`${signKey}.pub`, 'utf8')}`);
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
      'roles/site/templates/site.conf.j2':
        'title={{ site_title }}\nport={{ site_port }}\nuser={{ ansible_user_id }}\ntoken_length={{ api_token | length }}\n',
    };
    writeFiles(path.join(dir, 'ansible'), ansibleFiles);
    writeFileSync(
      file,
      `
variables:
  note: { default: first }
  out: { default: ${path.join(dir, 'out')} }
  title: { default: From kiln }
  token: { default: ${secret}, sensitive: true }
builds:
  - name: deb
    output_directory: \${var.out}
    source:
      base_image: ${path.join(imagesDir, 'debian-12-cloud.qcow2')}
      checksum: none
      disk_size: 3G
      memory: 1024
      memory_prealloc: true
      cloud_init:
        delivery: http # the seed URL's secrecy is checked below (unset, kiln would attach a cidata CD)
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
          # kiln grew the root partition on the host: cloud-init's growpart was off, resizefs grew the filesystem
          - "grep -c 'growpart disabled: mode=off' /var/log/cloud-init.log > /etc/kiln-growpart-off || true"
          # kiln's seed (write_files is init-stage work) skipped the config and final stages; the wait saw the marker
          - "{ systemctl is-active cloud-config.service cloud-final.service; cat /var/lib/cloud/instance/boot-finished; } > /etc/kiln-later-stages || true"
          # kiln's seed started the build user's service manager as the init stage ended, not kiln's first login
          - "journalctl -b -o cat --no-pager | grep -m2 -E '^Starting user@[0-9]+[.]service|^Accepted publickey for kiln ' > /etc/kiln-first-login || true"
          # CIS-style hardening: keys also kept outside the homes (the clean-up must find the build key there)
          - mkdir -p /etc/ssh/authorized_keys && cp /home/kiln/.ssh/authorized_keys /etc/ssh/authorized_keys/kiln
          - echo 'AuthorizedKeysFile .ssh/authorized_keys /etc/ssh/authorized_keys/%u' > /etc/ssh/sshd_config.d/10-keys.conf
      - type: ansible
        playbook_file: ansible/site.yml
        groups: [web]
        become: true
        extra_vars: { site_title: '\${var.title}', api_token: '\${var.token}' }
      - type: file
        source: ${payload}
        destination: /tmp
      - type: shell
        inline:
          - sudo install -m 0644 /tmp/payload/app.conf /etc/app.conf
          - sudo dpkg -i /tmp/payload/*.deb
          - echo "\${var.note}" | sudo tee /etc/kiln-note
    outputs:
      - format: qcow2
      - format: vmdk
    sign: { key: ${signKey} }
`,
    );
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
    expect(first.events.filter((e) => e.type === 'log').map((e) => String(e.message))).toContain(
      'http: GET /kiln-seed-<sensitive>/user-data -> 200',
    );
    expect(first.events.filter((e) => e.type === 'log').map((e) => String(e.message))).toContain(
      "disk: grew partition 3 to the end of the 3.0 GiB disk (cloud-init's growpart is turned off for the build; resizefs grows the filesystem)",
    );
    expect(first.events.filter((e) => e.type === 'log').map((e) => String(e.message))).toContain(
      "cloud-init: its config and final stages are skipped for the build (the seed gives them nothing to do; the image's first boot runs them); cloud_init.later_stages: always runs them",
    );
    const lines = first.events.filter((e) => e.type === 'output').map((e) => String(e.line));
    expect(
      lines.some((l) => /^ds=nocloud-net;s=http:\/\/10\.0\.2\.2:\d+\/kiln-seed-<sensitive>\/$/.test(l)),
      lines.join('\n'),
    ).toBe(true);
    expect(first.stdout, 'events').not.toContain(token);
    expect(first.stderr, 'human log').not.toContain(token);
    expect(kilnWorkDirs(tmp, 'deb')).toEqual([]);
    // memory_prealloc: QEMU took the guest's RAM at start, and the states saved from it load below.
    expect(
      first.events.some(
        (e) => e.type === 'log' && /^QEMU started \(.*, 1024 MiB allocated up front, /.test(String(e.message)),
      ),
    ).toBe(true);
    // -1: the warm base (the booted guest, before provisioner 1), then one layer per provisioner.
    expect(first.events.filter((e) => e.type === 'layer-saved' && !e.final).map((e) => e.index)).toEqual([
      -1, 0, 1, 2, 3,
    ]);
    expect(first.events.find((e) => e.type === 'layer-saved' && e.index === -1)).toMatchObject({ warmBase: true });
    // Ansible's output streamed as line events of its provisioner, the handler ran, the token is masked
    // everywhere; kiln's known_hosts already held the guest's key: OpenSSH added nothing, asked nothing.
    const ansible = outputLines(first.events, 'provisioner 2');
    expect(ansible.filter((l) => /^(TASK|RUNNING HANDLER) \[/.test(l)).map((l) => l.replace(/ \*+$/, ''))).toEqual([
      'TASK [Gathering Facts]',
      'TASK [site : Write the site configuration]',
      'TASK [site : Show the token (kiln masks it)]',
      'RUNNING HANDLER [site : Record the handler]',
    ]);
    expect(ansible.some((l) => l.includes('"msg": "token is <sensitive>"'))).toBe(true);
    expect(ansible.join('\n')).not.toMatch(/Permanently added|authenticity of host/);
    const firstManifest = readFileSync(path.join(dir, 'out', 'manifest.json'), 'utf8');
    for (const text of [first.stdout, first.stderr, firstManifest]) expect(text).not.toContain(secret);
    expect(JSON.parse(firstManifest).variables.token).toBe('<sensitive>');

    // Only the last provisioner changed: the first three come from their layers, and the VM saved with the
    // third (cache.vm_state's default keeps the one before the last provisioner) is restored: no boot, so
    // the upload into /tmp is still there. The guest in that state trusts the first build's key and shows
    // its host key.
    const run = await kiln(['build', file, '--events=json', '--force', '--var', 'note=second'], env);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);
    expect(run.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0, 1, 2]);
    expect(run.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index)).toEqual([3]);
    const restoredVm = run.events.find((e) => e.type === 'vm-restored');
    expect(restoredVm).toMatchObject({ provisioner: 3 });
    expect(first.events.find((e) => e.type === 'vm-state-saved' && !e.warmBase)).toMatchObject({
      index: 2,
      key: restoredVm!.key,
    });
    const out = path.join(dir, 'out');
    const manifest = JSON.parse(readFileSync(path.join(out, 'manifest.json'), 'utf8'));
    expect(manifest.artifacts.map((a: { format: string }) => a.format)).toEqual(['qcow2', 'vmdk']);
    const hostKeyOf = (r: typeof run) =>
      /SSH up after .* \(host key (SHA256:[^\s,)]+)/.exec(
        r.events
          .filter((e) => e.type === 'log')
          .map((e) => String(e.message))
          .join('\n'),
      )?.[1];
    const injectedHostKey = hostKeyOf(run);
    // The guest's end of the link is the slow one under TCG (no AES-NI): ChaCha20-Poly1305 is offered first.
    expect(
      run.events.some(
        (e) => e.type === 'log' && /SSH up after .*, cipher chacha20-poly1305@openssh\.com\)/.test(String(e.message)),
      ),
    ).toBe(true);
    expect(injectedHostKey).toBeDefined();
    expect(hostKeyOf(first)).toBe(injectedHostKey);

    // The SBOMs: valid against the official schemas; jq (installed by the last provisioner) as a purl
    // with the licences its copyright file states; the uploaded files with their digests.
    expect(readdirSync(out).sort()).toEqual([
      'SHA256SUMS',
      'SHA256SUMS.sig',
      'deb.cdx.json',
      'deb.cdx.json.sig',
      'deb.provenance.json',
      'deb.provenance.json.sig',
      'deb.qcow2',
      'deb.spdx.json',
      'deb.spdx.json.sig',
      'deb.vmdk',
      'manifest.json',
    ]);
    const spdx = JSON.parse(readFileSync(path.join(out, 'deb.spdx.json'), 'utf8'));
    const cdx = JSON.parse(readFileSync(path.join(out, 'deb.cdx.json'), 'utf8'));
    expect(spdxSchemaErrors(spdx)).toEqual([]);
    expect(cycloneDxSchemaErrors(cdx)).toEqual([]);
    expect(spdxLicenceProblems(spdx)).toEqual([]);
    const jqPurl = `pkg:deb/debian/jq@${encodeURIComponent(jqVersion)}?arch=amd64&distro=debian-12`;
    const jq = spdx.packages.find((p: { name: string }) => p.name === 'jq');
    expect(jq.externalRefs).toEqual([
      { referenceCategory: 'PACKAGE-MANAGER', referenceType: 'purl', referenceLocator: jqPurl },
    ]);
    expect(jq.licenseDeclared).toMatch(/\bMIT\b/);
    expect(cdx.components.find((c: { name: string }) => c.name === 'jq')).toMatchObject({
      purl: jqPurl,
      licenses: [{ expression: jq.licenseDeclared }],
    });
    expect(cdx.metadata.component).toMatchObject({
      'bom-ref': 'base-image',
      hashes: [{ alg: 'SHA-256', content: manifest.base_image.sha256 }],
    });
    expect(spdx.packages.length - 1).toBe(manifest.sbom.packages.length);
    expect(
      spdx.packages.filter((p: { licenseDeclared: string }) => p.licenseDeclared !== 'NOASSERTION').length,
    ).toBeGreaterThan(manifest.sbom.packages.length / 2);
    expect(
      spdx.files.map((f: { fileName: string; checksums: { algorithm: string; checksumValue: string }[] }) => [
        f.fileName,
        f.checksums[1]!.checksumValue,
      ]),
    ).toEqual(
      filesUnder(payload)
        .sort()
        .map((f) => [`./tmp/payload/${path.basename(f)}`, sha256(f)]),
    );
    // The provenance names every input by digest: the template, the base image, each uploaded file, each file of the Ansible tree.
    const provenance = JSON.parse(readFileSync(path.join(out, 'deb.provenance.json'), 'utf8'));
    expect(provenance.subject).toEqual(
      manifest.artifacts.map((a: { name: string; sha256: string }) => ({ name: a.name, digest: { sha256: a.sha256 } })),
    );
    const inputs = provenance.predicate.buildDefinition.resolvedDependencies.map(
      (d: { digest: { sha256: string } }) => d.digest.sha256,
    );
    const expectedInputs = [
      manifest.template.sha256,
      manifest.base_image.sha256,
      ...filesUnder(payload).map(sha256),
      ...filesUnder(path.join(dir, 'ansible')).map(sha256),
    ];
    expect(expectedInputs.filter((d) => !inputs.includes(d))).toEqual([]);
    expect(provenance.predicate.runDetails.metadata.startedOn).toBe(manifest.started_at);

    // Signed: kiln verify checks the signatures, then every digest; ssh-keygen alone checks them too.
    const verify = (keys = allowed) => kiln(['verify', path.join(out, 'manifest.json'), '--trusted-keys', keys]);
    const good = await verify();
    expect(good.exitCode, good.stdout + good.stderr).toBe(0);
    expect(good.stdout).toMatch(/^ok   SHA256SUMS \(signed by builder@kiln, SHA256:\S+\)$/m);
    const outside = await execa(
      'ssh-keygen',
      ['-Y', 'verify', '-f', allowed, '-I', 'builder@kiln', '-n', 'kiln', '-s', path.join(out, 'SHA256SUMS.sig')],
      { inputFile: path.join(out, 'SHA256SUMS') },
    );
    expect(outside.stdout).toMatch(/^Good "kiln" signature for builder@kiln with ED25519 key SHA256:/);
    // One byte changed in an artifact, an SBOM, a signature; and a key nobody trusts: each named, exit 1.
    const tamper = async (file: string, at: number, expected: RegExp) => {
      flipByte(file, at);
      const bad = await verify();
      flipByte(file, at);
      expect(bad.exitCode, bad.stdout).toBe(1);
      expect(bad.stdout).toMatch(expected);
    };
    await tamper(
      path.join(out, 'deb.vmdk'),
      2 ** 20,
      /^FAIL deb\.vmdk: sha256 is \w+, manifest says \w+; sha256 is \w+, the signed SHA256SUMS says \w+; sha256 is \w+, the signed provenance says \w+$/m,
    );
    await tamper(
      path.join(out, 'deb.cdx.json'),
      200,
      /^FAIL deb\.cdx\.json \(signature\): the signature by builder@kiln \(ssh-ed25519 key SHA256:\S+\) does not match \S+deb\.cdx\.json: the file or its signature changed after signing/m,
    );
    const sigText = readFileSync(path.join(out, 'SHA256SUMS.sig'), 'latin1');
    await tamper(
      path.join(out, 'SHA256SUMS.sig'),
      sigText.lastIndexOf('-----END') - 10,
      /^FAIL SHA256SUMS \(signature\): /m,
    );
    const strangerKey = path.join(dir, 'stranger');
    await execa('ssh-keygen', ['-q', '-t', 'ed25519', '-N', '', '-f', strangerKey]);
    writeFileSync(path.join(dir, 'stranger_signers'), `stranger ${readFileSync(`${strangerKey}.pub`, 'utf8')}`);
    const stranger = await verify(path.join(dir, 'stranger_signers'));
    expect(stranger.exitCode).toBe(1);
    expect(stranger.stdout).toMatch(
      /^FAIL SHA256SUMS \(signature\): signed by ssh-ed25519 key SHA256:\S+, which \S+stranger_signers does not list \(unknown signer\)$/m,
    );
    expect((await verify()).exitCode).toBe(0);

    // Another output directory, nothing else changed: converted from the cached final disk without
    // booting; its SBOM is the one the booted build read, marked as such.
    const converted = await kiln(
      ['build', file, '--events=json', '--var', 'note=second', '--var', `out=${path.join(dir, 'out2')}`],
      env,
    );
    expect(converted.exitCode, converted.stderr.slice(-3000)).toBe(0);
    expect(converted.events.some((e) => e.type === 'step-start' && e.step === 'launch QEMU')).toBe(false);
    const out2 = path.join(dir, 'out2');
    const manifest2 = JSON.parse(readFileSync(path.join(out2, 'manifest.json'), 'utf8'));
    expect(manifest2.cache.final_layer.from_cache).toBe(true);
    expect(manifest2.supply_chain.from_cache).toEqual({
      final_layer: manifest2.cache.final_layer.key,
      packages_recorded_at: expect.any(String),
    });
    const spdx2 = JSON.parse(readFileSync(path.join(out2, 'deb.spdx.json'), 'utf8'));
    const cdx2 = JSON.parse(readFileSync(path.join(out2, 'deb.cdx.json'), 'utf8'));
    expect(spdxSchemaErrors(spdx2)).toEqual([]);
    expect(cycloneDxSchemaErrors(cdx2)).toEqual([]);
    const packagesOf = (doc: { packages: { name: string; versionInfo?: string; licenseDeclared: string }[] }) =>
      doc.packages.slice(1).map((p) => [p.name, p.versionInfo, p.licenseDeclared]);
    expect(packagesOf(spdx2)).toEqual(packagesOf(spdx));
    expect(spdx2.comment).toMatch(
      new RegExp(
        `^Converted from the layer cache without booting: the package list is the one the build that saved final layer ${manifest2.cache.final_layer.key} read from the guest on \\S+ \\(kiln \\S+\\)\\.$`,
      ),
    );
    expect(cdx2.metadata.properties).toContainEqual({ name: 'kiln:from-cache', value: spdx2.comment });
    const provenance2 = JSON.parse(readFileSync(path.join(out2, 'deb.provenance.json'), 'utf8'));
    expect(provenance2.predicate.buildDefinition.internalParameters.converted_from_cache.package_list_recorded_at).toBe(
      manifest2.supply_chain.from_cache.packages_recorded_at,
    );
    expect((await kiln(['verify', path.join(out2, 'manifest.json'), '--trusted-keys', allowed])).exitCode).toBe(0);

    for (const [name, format] of [
      ['deb.qcow2', 'qcow2'],
      ['deb.vmdk', 'vmdk'],
    ] as const) {
      const info = JSON.parse((await execa('qemu-img', ['info', '--output=json', path.join(out, name)])).stdout);
      expect(info.format).toBe(format);
      expect(info['virtual-size']).toBe(3 * 2 ** 30);
      expect((await execa('qemu-img', ['check', path.join(out, name)], { reject: false })).exitCode).toBe(0);
    }

    // No private key and neither build's injected host key anywhere in the artifact's bytes, deleted
    // files included (the first build's came along in the cached layer).
    const hits = await searchDisk(
      path.join(out, 'deb.qcow2'),
      { privateKey: privateKeyPattern, publicKeys: ed25519PublicPattern },
      dir,
    );
    const injected = [injectedHostKey, hostKeyOf(first)];
    expect({
      privateKeys: hits.privateKey,
      injectedHostKeys: hits.publicKeys!.filter((h) =>
        injected.includes(fingerprintOf(`ssh-ed25519 ${h.split(': ')[1]}`)),
      ),
    }).toEqual({ privateKeys: [], injectedHostKeys: [] });

    // Boot the VMDK as a new instance with a fresh seed on a cidata ISO, under UEFI (the build booted
    // BIOS): what a user of the image would do, and the fixture's other boot path, checked here
    // rather than by a Debian boot of its own.
    const seed = testSeed('user2', {}, 'always');
    const iso = path.join(dir, 'seed.iso');
    await writeSeedIso(seed.seed, dir, iso);
    const disk = await overlayOf(path.join(out, 'deb.vmdk'), dir, 'boot.qcow2', 'vmdk');
    const guest = await Guest.boot({
      disk,
      firmware: 'uefi',
      memoryMiB: 1024,
      extraDisks: [{ path: iso, format: 'raw', interface: 'virtio', readonly: true }],
    });
    try {
      // A deadline for a stuck guest, not a speed check: at load 17 this boot took just over 240 s.
      const ssh = await guest.ssh('user2', seed.userKey.privateKey, 600_000, seed.hostKey.fingerprint);
      expect((await ssh.run('cloud-init status --wait >/dev/null; cloud-init status')).trim()).toMatch(/status: done/);
      expect(await ssh.run('test -d /sys/firmware/efi && echo uefi')).toBe('uefi\n');
      expect(
        await ssh.run('cat /run/cloud-init/ds-identify.log 2>/dev/null | grep -o "NoCloud" | head -1 || true'),
      ).toContain('NoCloud');
      expect((await ssh.run('sudo -n id -u')).trim()).toBe('0');
      expect(await ssh.run('cat /etc/kiln-marker /etc/app.conf /etc/kiln-seeded /etc/kiln-note')).toBe(
        'provisioner ran as root on deb\nsetting=1\nfrom user_data\nsecond\n',
      );
      expect(Number(await ssh.run('cat /etc/kiln-rootsize'))).toBeGreaterThan(2.5 * 2 ** 30); // grown to disk_size
      expect((await ssh.run('cat /etc/kiln-growpart-off')).trim()).toBe('1');
      // In the build the later stages never started and kiln's unit wrote boot-finished; this first boot
      // of the image (its own seed) ran them as cloud-init does: nothing of the skip reached the image.
      expect(await ssh.run('cat /etc/kiln-later-stages')).toMatch(
        /^inactive\ninactive\n[\d.]+ - kiln skipped cloud-init's config and final stages \(nothing to do for the build\)\n$/,
      );
      expect((await ssh.run('systemctl is-active cloud-config.service cloud-final.service')).trim()).toBe(
        'active\nactive',
      );
      // The guest's journal from the build: the build user's manager was starting (kiln's seed queued it after
      // cloud-init's init stage, beside sshd's start) before kiln's first login, which would otherwise wait for it.
      expect((await ssh.run('cat /etc/kiln-first-login')).split('\n')).toEqual([
        expect.stringMatching(/^Starting user@\d+\.service/),
        expect.stringMatching(/^Accepted publickey for kiln /),
        '',
      ]);
      expect(await ssh.run('cat /var/lib/cloud/instance/boot-finished')).not.toContain('kiln');
      // The table kiln wrote is one sfdisk finds sound (both copies, no free space left at the end).
      expect(await ssh.run('sudo -n sfdisk --verify /dev/vda 2>&1 | tail -1')).toMatch(/A total of 0 free sectors/);
      expect(await ssh.run('sudo -n cat /etc/kiln-site.conf /etc/kiln-handler')).toBe(
        `title=From kiln\nport=8081\nuser=root\ntoken_length=${secret.length}\nhandler ran for deb\n`,
      );
      // A new instance on a disk that ran cloud-init before (the build's): the fresh seed's id, no root password.
      expect((await ssh.run('cloud-init status --wait >/dev/null; cloud-init query instance-id')).trim()).toBe(
        seed.seed.instanceId,
      );
      expect(await ssh.run('sudo -n passwd -S root | cut -d" " -f2')).toMatch(/^L/);
      // kiln took its access back out: the build user has no key left (neither this build's nor the
      // first build's, which the cached layer carried), kiln's host key is gone.
      expect((await ssh.run('sudo -n cat /home/kiln/.ssh/authorized_keys 2>/dev/null || true')).trim()).toBe('');
      // ...nor where the image's sshd configuration keeps keys (AuthorizedKeysFile /etc/ssh/authorized_keys/%u)
      expect(await ssh.run('sudo -n cat /etc/ssh/authorized_keys/kiln')).toBe('');
      const hostKeys = (await ssh.run('sudo -n cat /etc/ssh/ssh_host_*_key.pub'))
        .trim()
        .split('\n')
        .map((l) => fingerprintOf(l));
      expect(hostKeys).toContain(seed.hostKey.fingerprint);
      expect(hostKeys).not.toContain(injectedHostKey);
      expect(hostKeys).not.toContain(hostKeyOf(first));
      expect(await guest.poweroff(ssh, 'sudo poweroff', 300_000)).toBe(true); // a deadline, not a speed check
    } finally {
      await guest.destroy();
    }
  }, 1_500_000);
});
