// Configuration management inside the guest, and the two examples, end to end. Long: the guests
// install Ansible, Puppet or nginx from the Debian mirror (about 2.5 min of apt-get for ansible-core
// plus puppet under TCG), so this runs with `make test-install`, not `make test`.
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { writeSeedIso } from '../../src/cloudinit/seed.js';
import { Guest, imagesDir, overlayOf, repoRoot } from '../helpers/guest.js';
import { testSeed } from '../helpers/cloud.js';
import { kiln, outputLines } from '../helpers/kiln.js';
import { writeFiles } from '../helpers/files.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-install-cm-'));
const examples: string[] = [];
afterAll(() => {
  rmSync(dir, { recursive: true, force: true });
  for (const f of examples) rmSync(f, { force: true });
});

const logLines = (events: Record<string, unknown>[]) =>
  events.filter((e) => e.type === 'log').map((e) => String(e.message));

/** Boots an artifact as a new cloud-init instance and returns what `command` prints in it. */
async function inBootedArtifact(artifact: string, command: string): Promise<string> {
  const seed = testSeed('checker');
  const iso = path.join(dir, `seed-${path.basename(artifact)}.iso`);
  await writeSeedIso(seed.seed, dir, iso);
  const disk = await overlayOf(artifact, dir, `boot-${path.basename(artifact)}.qcow2`);
  const guest = await Guest.boot({
    disk,
    memoryMiB: 1024,
    extraDisks: [{ path: iso, format: 'raw', interface: 'virtio', readonly: true }],
  });
  try {
    const ssh = await guest.ssh('checker', seed.userKey.privateKey, 300_000, seed.hostKey.fingerprint);
    const out = await ssh.run(command);
    await guest.poweroff(ssh, 'sudo poweroff', 90_000);
    return out;
  } finally {
    await guest.destroy();
  }
}

/** Fetches a page from inside the guest (it has Python, not curl), retrying while the service starts; it ends with `exit`, so run it in ( ) to follow it with more. */
const fetchPage = (port: number) =>
  `for i in $(seq 60); do python3 -c 'import urllib.request,sys; sys.stdout.write(urllib.request.urlopen("http://127.0.0.1:${port}/").read().decode())' && exit 0; sleep 1; done; exit 1`;

/** An example with its output moved into the test's directory, kept beside it so its relative paths hold. */
function exampleCopy(name: string): { file: string; out: string } {
  const out = path.join(dir, name);
  const file = path.join(repoRoot, 'examples', `.test-${name}-${process.pid}.yaml`);
  writeFileSync(
    file,
    readFileSync(path.join(repoRoot, 'examples', `${name}.yaml`), 'utf8').replace(
      `output_directory: ../output/${name}`,
      `output_directory: ${out}`,
    ),
  );
  examples.push(file);
  return { file, out };
}

describe('configuration management in the guest', () => {
  it("ansible-local runs a role in the guest; puppet-masterless applies (exit 2, changes, is success; 0 on a second run) and a failing manifest fails the build with puppet's errors", async () => {
    const root = path.join(dir, 'guest');
    const secret = 'tok-local-Xq27-never-shown';
    writeFiles(root, {
      'ansible/site.yml': '- hosts: web\n  roles: [site]\n',
      'ansible/group_vars/web.yml': 'site_port: 8082\n',
      'ansible/roles/site/tasks/main.yml': `
- name: Write the site configuration
  ansible.builtin.template: { src: site.conf.j2, dest: /etc/kiln-local.conf, mode: "0600" }
  notify: Record the handler
- name: Show the token (kiln masks it)
  ansible.builtin.debug: { msg: "token is {{ api_token }}" }
`,
      'ansible/roles/site/handlers/main.yml':
        '- name: Record the handler\n  ansible.builtin.copy: { content: "local handler ran\\n", dest: /etc/kiln-local-handler }\n',
      'ansible/roles/site/templates/site.conf.j2':
        'title={{ site_title }}\nport={{ site_port }}\nconnection={{ ansible_connection }}\n',
      'puppet/manifests/site.pp':
        "node default {\n  include greeting\n  file { '/etc/kiln-puppet-fact': ensure => file, content => \"${facts['role']}\\n\" }\n}\n",
      'puppet/modules/greeting/manifests/init.pp':
        "class greeting {\n  file { '/etc/kiln-puppet-greeting': ensure => file, content => \"${lookup('greeting')}\\n\" }\n}\n",
      'puppet/hiera/hiera.yaml':
        'version: 5\nhierarchy:\n  - name: common\n    path: common.yaml\ndefaults:\n  datadir: data\n  data_hash: yaml_data\n',
      'puppet/hiera/data/common.yaml': 'greeting: hello from hiera\n',
      'broken/site.pp': "file { '/nonexistent-dir/kiln': ensure => file, content => 'x' }\n",
    });
    const template = (name: string, lastProvisioners: string) => {
      const file = path.join(root, `${name}.yaml`);
      writeFileSync(
        file,
        `
variables:
  token: { default: ${secret}, sensitive: true }
builds:
  - name: cm-guest
    output_directory: ${path.join(root, `out-${name}`)}
    source:
      base_image: ${path.join(imagesDir, 'debian-12-cloud.qcow2')}
      checksum: none
      disk_size: 3G
      memory: 1024
    provisioners:
      - type: shell
        env: { DEBIAN_FRONTEND: noninteractive }
        execute_command: "chmod +x {{path}}; sudo env {{vars}} {{path}}"
        inline:
          - apt-get update -q
          - apt-get install -y -q --no-install-recommends ansible-core puppet
          - apt-get clean
      - type: ansible-local
        playbook_file: ansible/site.yml
        inventory_groups: [web]
        become: true
        extra_vars: { site_title: In the guest, api_token: '\${var.token}' }
${lastProvisioners}
    outputs:
      - format: qcow2
`,
      );
      return file;
    };
    const env = { KILN_CACHE_DIR: path.join(root, 'cache') };
    const puppet = `      - type: puppet-masterless
        manifest_file: puppet/manifests
        module_paths: [puppet/modules]
        hiera_config_path: puppet/hiera/hiera.yaml
        facter: { role: web }`;
    const run = await kiln(
      [
        'build',
        template(
          'ok',
          `${puppet}\n${puppet}\n      - type: shell\n        inline: ['sudo cat /etc/kiln-local.conf /etc/kiln-local-handler /etc/kiln-puppet-fact /etc/kiln-puppet-greeting']`,
        ),
        '--events=json',
      ],
      env,
      3_600_000,
    );
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    expect(outputLines(run.events, 'provisioner 5')).toEqual([
      'title=In the guest',
      'port=8082',
      'connection=local',
      'local handler ran',
      'web',
      'hello from hiera',
    ]);
    expect(outputLines(run.events, 'provisioner 2').some((l) => l.includes('"msg": "token is <sensitive>"'))).toBe(
      true,
    );
    expect(run.stdout + run.stderr).not.toContain(secret);
    expect(logLines(run.events)).toEqual(
      expect.arrayContaining([
        'provisioner 3: puppet apply exited with 2: changes were applied',
        'provisioner 4: puppet apply exited with 0: no changes were needed',
      ]),
    );

    // Same install and playbook: both come from the cache; the broken manifest fails with its error.
    const failed = await kiln(
      [
        'build',
        template('broken', '      - type: puppet-masterless\n        manifest_file: broken/site.pp'),
        '--events=json',
      ],
      env,
      3_600_000,
    );
    expect(failed.exitCode).toBe(1);
    expect(failed.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0, 1]);
    expect(String(failed.events.find((e) => e.type === 'build-end')?.error)).toMatch(
      /provisioner 3: puppet apply exited with (4|6) \([^)]*some resources failed\):\n {2}Error: [^]*nonexistent-dir/,
    );
  }, 3_600_000);
});

describe('examples', () => {
  it('examples/debian-12-ansible.yaml: the booted image serves the page the role configured, on port 8080', async () => {
    const { file, out } = exampleCopy('debian-12-ansible');
    const run = await kiln(['build', file, '--events=json'], {}, 3_600_000);
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    expect(run.stdout + run.stderr).not.toContain('example-token-not-for-production');
    const page = await inBootedArtifact(path.join(out, 'debian-12-ansible.qcow2'), fetchPage(8080));
    expect(page).toContain('<h1>Built by kiln with Ansible</h1>');
    expect(page).toContain('Configured by Ansible for debian-12-ansible; nginx listens on port 8080.');
  }, 3_600_000);

  it('examples/debian-12-puppet.yaml: the booted image serves the page the manifest wrote, on port 80', async () => {
    const { file, out } = exampleCopy('debian-12-puppet');
    const run = await kiln(['build', file, '--events=json'], {}, 3_600_000);
    expect(run.exitCode, run.stderr.slice(-4000)).toBe(0);
    const page = await inBootedArtifact(
      path.join(out, 'debian-12-puppet.qcow2'),
      `(${fetchPage(80)}) && cat /etc/motd`,
    );
    expect(page).toContain('<h1>Built by kiln with Puppet</h1>');
    expect(page).toContain('Built by kiln with Puppet: configured by Puppet (masterless), built by kiln.');
  }, 3_600_000);
});
