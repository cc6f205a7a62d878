// The configuration-management provisioners' pure parts: the template fields, Ansible's inventory,
// known_hosts, argv and environment, reading failures out of Ansible's output, puppet's exit codes and
// command line, and what their layer-cache keys cover.
import { mkdirSync, mkdtempSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { parse as parseYaml } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { loadTemplate } from '../../../src/template/load.js';
import { TemplateError } from '../../../src/template/errors.js';
import type { AnsibleProvisioner } from '../../../src/template/provisioner-kinds/ansible.js';
import type { PuppetMasterlessProvisioner } from '../../../src/template/provisioner-kinds/puppet-masterless.js';
import { planLayers, sourceKey } from '../../../src/cache/layer-keys.js';
import { generateKeyPair } from '../../../src/communicator/keys.js';
import {
  ansibleArgv,
  ansibleEnv,
  inventoryYaml,
  knownHostsLine,
  localInventoryYaml,
  publicKeyFromBlob,
} from '../../../src/provisioners/ansible-inventory.js';
import { AnsibleOutput } from '../../../src/provisioners/ansible-output.js';
import { galaxySections } from '../../../src/provisioners/ansible.js';
import { puppetCommand, puppetExit } from '../../../src/provisioners/puppet-masterless.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-unit-cm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));
writeFileSync(path.join(dir, 'base.qcow2'), 'keys only need the path to exist');
const project = path.join(dir, 'project');
for (const d of [
  'ansible/roles/web/tasks',
  'ansible/output',
  'ansible/.git',
  'shared-role/tasks',
  'puppet/modules/m/manifests',
])
  mkdirSync(path.join(project, d), { recursive: true });
writeFileSync(path.join(project, 'ansible/site.yml'), '- hosts: all\n  roles: [web]\n');
writeFileSync(path.join(project, 'ansible/roles/web/tasks/main.yml'), '- ansible.builtin.ping:\n');
writeFileSync(path.join(project, 'shared-role/tasks/main.yml'), '- ansible.builtin.ping:\n');
symlinkSync(path.join(project, 'shared-role'), path.join(project, 'ansible/roles/linked'));
writeFileSync(path.join(project, 'puppet/site.pp'), 'notify { "hi": }\n');
writeFileSync(path.join(project, 'puppet/modules/m/manifests/init.pp'), 'class m {}\n');

let n = 0;
function template(provisioners: string, extra = ''): string {
  const file = path.join(project, `t${n++}.yaml`);
  writeFileSync(
    file,
    `
variables:
  token: { default: tok-123456, sensitive: true }
builds:
  - name: cm
    output_directory: ansible/output
    source: { base_image: ${path.join(dir, 'base.qcow2')}, checksum: none${extra} }
    provisioners:
${provisioners}
`,
  );
  return file;
}
const load = (file: string) => loadTemplate(file, { vars: [], varFiles: [], env: {} }).template.builds[0]!;
const problems = (file: string) => {
  try {
    load(file);
  } catch (e) {
    if (e instanceof TemplateError) return e.message;
    throw e;
  }
  return '';
};

describe('template fields', () => {
  it("take Packer's names, resolve paths against the template, and fill in defaults", () => {
    const b = load(
      template(`      - type: ansible
        playbook_file: ansible/site.yml
        extra_vars: { token: '\${var.token}', list: [1, 2] }
      - type: ansible-local
        playbook_file: ansible/site.yml
      - type: puppet-masterless
        manifest_file: puppet/site.pp
        module_paths: [puppet/modules]
        facter: { role: web }`),
    );
    const [a, local, puppet] = b.provisioners;
    expect(a).toMatchObject({
      type: 'ansible',
      playbook_file: path.join(project, 'ansible/site.yml'),
      host_alias: 'default',
      command: 'ansible-playbook',
      become: false,
      extra_vars: { token: 'tok-123456', list: [1, 2] },
    });
    expect(local).toMatchObject({ type: 'ansible-local', clean_staging_directory: true, inventory_groups: [] });
    expect(puppet).toMatchObject({
      type: 'puppet-masterless',
      manifest_file: path.join(project, 'puppet/site.pp'),
      module_paths: [path.join(project, 'puppet/modules')],
      prevent_sudo: false,
    });
  });

  it('refuse turning host key checking off, missing files, misspelt keys and a communicator of none', () => {
    expect(
      problems(
        template(`      - type: ansible
        playbook_file: ansible/site.yml
        ansible_env_vars: { ANSIBLE_HOST_KEY_CHECKING: 'False' }`),
      ),
    ).toMatch(/ANSIBLE_HOST_KEY_CHECKING cannot be set\n {2}fix: remove it; kiln writes a known_hosts file/);
    expect(
      problems(
        template(`      - type: ansible
        playbook_file: ansible/absent.yml`),
      ),
    ).toMatch(/provisioners\[0\]\.playbook_file: path ansible\/absent\.yml does not exist/);
    expect(
      problems(
        template(`      - type: puppet-masterless
        manifest_file: puppet/site.pp
        module_path: [puppet/modules]`),
      ),
    ).toMatch(/unknown key "module_path"[^]*module_paths/);
    expect(
      problems(
        template(
          `      - type: ansible
        playbook_file: ansible/site.yml`,
          ', communicator: { type: none }',
        ),
      ),
    ).toMatch(/ansible, ansible-local and puppet-masterless provisioners reach the guest over SSH/);
  });
});

const provisioner = (over: Partial<AnsibleProvisioner> = {}): AnsibleProvisioner => ({
  type: 'ansible',
  max_retries: 0,
  playbook_file: '/p/site.yml',
  command: 'ansible-playbook',
  extra_arguments: [],
  extra_vars: {},
  ansible_env_vars: {},
  groups: [],
  host_alias: 'default',
  keep_inventory_file: false,
  become: false,
  ...over,
});

describe('what ansible-playbook is given', () => {
  const hostKey = generateKeyPair('kiln-host-test');

  it('known_hosts holds the verified key under [host]:port; the key line comes back from the handshake blob', () => {
    expect(knownHostsLine('127.0.0.1', 2222, hostKey.publicKey)).toBe(
      `[127.0.0.1]:2222 ${hostKey.publicKey.split(' ').slice(0, 2).join(' ')}\n`,
    );
    expect(knownHostsLine('guest', 22, hostKey.publicKey)).toMatch(/^guest ssh-ed25519 /);
    const blob = Buffer.from(hostKey.publicKey.split(' ')[1]!, 'base64');
    expect(publicKeyFromBlob(blob)).toBe(hostKey.publicKey.split(' ').slice(0, 2).join(' '));
  });

  it('the inventory names the VM with its connection, the build key and a strict known_hosts, in its groups', () => {
    const inv = parseYaml(
      inventoryYaml({
        hostAlias: 'web1',
        host: '127.0.0.1',
        port: 40123,
        user: 'kiln',
        groups: ['web', 'db'],
        privateKeyFile: '/w/id_build',
        knownHostsFile: '/w/known hosts',
      }),
    );
    const host = inv.all.hosts.web1;
    expect(host).toMatchObject({
      ansible_host: '127.0.0.1',
      ansible_port: 40123,
      ansible_user: 'kiln',
      ansible_ssh_private_key_file: '/w/id_build',
    });
    expect(host.ansible_ssh_common_args).toContain("-o UserKnownHostsFile='/w/known hosts'");
    expect(host.ansible_ssh_common_args).toContain('-o StrictHostKeyChecking=yes');
    expect(host.ansible_ssh_common_args).toContain('-o GlobalKnownHostsFile=/dev/null');
    expect(host.ansible_ssh_common_args).not.toMatch(/StrictHostKeyChecking=(no|accept-new)/);
    expect(inv.all.children).toEqual({ web: { hosts: { web1: null } }, db: { hosts: { web1: null } } });
    expect(parseYaml(localInventoryYaml(['web']))).toEqual({
      all: {
        hosts: { '127.0.0.1': { ansible_connection: 'local' } },
        children: { web: { hosts: { '127.0.0.1': null } } },
      },
    });
  });

  it('argv passes extra vars through a file (no value on the command line), then extra_arguments, then the playbook', () => {
    const p = provisioner({ become: true, extra_arguments: ['--tags', 'web'], extra_vars: { token: 'tok-123456' } });
    const argv = ansibleArgv(p, { inventory: '/w/inventory.yml', extraVars: '/w/extra-vars.json' });
    expect(argv).toEqual([
      '-i',
      '/w/inventory.yml',
      '-e',
      '@/w/extra-vars.json',
      '--become',
      '--tags',
      'web',
      '/p/site.yml',
    ]);
    expect(argv.join(' ')).not.toContain('tok-123456');
  });

  it("the environment keeps host key checking on whatever the user sets, and searches galaxy's installs first", () => {
    const paths = {
      knownHostsFile: '/w/known_hosts',
      controlPath: '/w/cp',
      localTemp: '/w/tmp',
      galaxyRoles: '/w/roles',
    };
    const env = ansibleEnv(
      provisioner({ roles_path: '/p/roles', ansible_env_vars: { ANSIBLE_TIMEOUT: 30, ANSIBLE_PIPELINING: 'False' } }),
      paths,
      {},
    );
    expect(env).toMatchObject({
      ANSIBLE_HOST_KEY_CHECKING: 'True',
      ANSIBLE_TIMEOUT: '30',
      ANSIBLE_PIPELINING: 'False',
      ANSIBLE_SSH_CONTROL_PATH_DIR: '/w/cp',
      ANSIBLE_NOCOLOR: '1',
    });
    // kiln's host key options come first on ssh's command line, before the ControlMaster defaults or
    // the user's own ssh args, whose later -o StrictHostKeyChecking=no OpenSSH then ignores.
    expect(env.ANSIBLE_SSH_ARGS).toMatch(
      /^-o UserKnownHostsFile=\/w\/known_hosts -o GlobalKnownHostsFile=\/dev\/null -o StrictHostKeyChecking=yes .* -C -o ControlMaster=auto -o ControlPersist=60s$/,
    );
    const own = ansibleEnv(
      provisioner({ ansible_env_vars: { ANSIBLE_SSH_ARGS: '-o StrictHostKeyChecking=no' } }),
      paths,
      {},
    );
    expect(own.ANSIBLE_SSH_ARGS).toMatch(
      /^-o UserKnownHostsFile=\S+ -o GlobalKnownHostsFile=\/dev\/null -o StrictHostKeyChecking=yes .* -o StrictHostKeyChecking=no$/,
    );
    expect(env.ANSIBLE_ROLES_PATH!.split(':').slice(0, 3)).toEqual(['/w/roles', '/p/roles', '~/.ansible/roles']);
    expect(env.ANSIBLE_COLLECTIONS_PATH).toBeUndefined();
  });

  it('galaxy requirement files: the old list means roles, the new map roles and/or collections', () => {
    writeFileSync(path.join(dir, 'old.yml'), '- src: ./role.tar.gz\n  name: r\n');
    writeFileSync(
      path.join(dir, 'new.yml'),
      'collections:\n  - name: ./ns-c-1.0.0.tar.gz\n    type: file\nroles: []\n',
    );
    expect(galaxySections(path.join(dir, 'old.yml'))).toEqual(['role']);
    expect(galaxySections(path.join(dir, 'new.yml'))).toEqual(['role', 'collection']);
  });
});

describe('Ansible output', () => {
  it("names the failed task and host with the host's answer, leaving out ignored failures", () => {
    const out = new AnsibleOutput();
    for (const line of [
      'PLAY [web] *********************************************************************',
      'TASK [web : optional check] ****************************************************',
      'fatal: [default]: FAILED! => {"changed": false, "msg": "ignored one"}',
      '...ignoring',
      'TASK [web : Install nginx] *****************************************************',
      'fatal: [default]: FAILED! => {"changed": true, "cmd": "false", "msg": "non-zero return code", "rc": 1, "stderr": "boom", "stdout": ""}',
    ])
      out.observe(line);
    expect(out.explain()).toBe(
      '  task "web : Install nginx" failed on default:\n    non-zero return code\n    stderr: boom',
    );
  });

  it('tells an unreachable host, a failed loop item and a playbook Ansible could not start', () => {
    const unreachable = new AnsibleOutput();
    unreachable.observe('TASK [Gathering Facts] *********************************************************');
    unreachable.observe(
      'fatal: [default]: UNREACHABLE! => {"changed": false, "msg": "Failed to connect to the host via ssh: Host key verification failed.", "unreachable": true}',
    );
    expect(unreachable.explain()).toMatch(
      /task "Gathering Facts" host default was unreachable:\n {4}Failed to connect to the host via ssh: Host key verification failed\./,
    );
    const loop = new AnsibleOutput();
    loop.observe('TASK [copy files] **************************************************************');
    loop.observe(
      'failed: [default] (item=a.conf) => {"ansible_loop_var": "item", "item": "a.conf", "msg": "Could not find a.conf"}',
    );
    expect(loop.explain()).toMatch(/task "copy files" failed on default:\n {4}Could not find a\.conf/);
    const broken = new AnsibleOutput();
    broken.observe("ERROR! the role 'nginx' was not found in /p/roles");
    expect(broken.explain()).toBe("  the role 'nginx' was not found in /p/roles");
  });
});

describe('puppet-masterless', () => {
  it('counts exit codes 0 and 2 as success, 1, 4 and 6 as failure', () => {
    expect([0, 2, 1, 4, 6, 127].map((c) => puppetExit(c).ok)).toEqual([true, true, false, false, false, false]);
    expect(puppetExit(2).meaning).toBe('changes were applied');
    expect(puppetExit(6).meaning).toBe('changes were applied and some resources failed');
  });

  it('runs puppet apply with detailed exit codes, facts as FACTER_*, through sudo unless prevent_sudo', () => {
    const p = {
      type: 'puppet-masterless',
      max_retries: 0,
      manifest_file: '/p/site.pp',
      module_paths: [],
      facter: {},
      extra_arguments: [],
      prevent_sudo: false,
      clean_staging_directory: true,
    } as PuppetMasterlessProvisioner;
    const files = {
      manifest: '/tmp/s/manifests/site.pp',
      modulePaths: ['/tmp/s/modules-0', '/tmp/s/modules-1'],
      hieraConfig: '/tmp/s/hiera/hiera.yaml',
    };
    expect(puppetCommand(p, files, { kiln_build_name: 'cm', role: "web's" }, ['--verbose'])).toBe(
      "sudo -n env FACTER_kiln_build_name='cm' FACTER_role='web'\\''s' 'puppet' 'apply' '--detailed-exitcodes' '--color=false' '--modulepath=/tmp/s/modules-0:/tmp/s/modules-1' '--hiera_config=/tmp/s/hiera/hiera.yaml' '--verbose' '/tmp/s/manifests/site.pp'",
    );
    expect(
      puppetCommand(
        { ...p, prevent_sudo: true, puppet_bin_dir: '/opt/puppetlabs/bin' },
        { manifest: 'm', modulePaths: [] },
        {},
        [],
      ),
    ).toMatch(/^env +'\/opt\/puppetlabs\/bin\/puppet' 'apply'/);
  });
});

describe('layer keys of configuration-management provisioners', () => {
  const ansible = `      - { type: shell, inline: [echo first] }
      - type: ansible
        playbook_file: ansible/site.yml
        extra_vars: { token: '\${var.token}' }`;
  const keys = async (provisioners = ansible) => {
    const build = load(template(provisioners));
    return (await planLayers(build, await sourceKey(build, 'a'.repeat(64)))).map((l) => l.key);
  };

  it("change with any file under the playbook's directory (a linked role too), from that provisioner on", async () => {
    const before = await keys();
    writeFileSync(
      path.join(project, 'ansible/roles/web/tasks/main.yml'),
      '- ansible.builtin.ping:\n- ansible.builtin.debug: { msg: hi }\n',
    );
    const roleEdited = await keys();
    expect(roleEdited[0]).toBe(before[0]);
    expect(roleEdited[1]).not.toBe(before[1]);
    writeFileSync(path.join(project, 'shared-role/tasks/main.yml'), '- ansible.builtin.debug: { msg: linked }\n');
    expect((await keys())[1]).not.toBe(roleEdited[1]);
  });

  it("do not change with the build's own output under that directory, or version-control metadata", async () => {
    const before = await keys();
    writeFileSync(path.join(project, 'ansible/output/cm.qcow2'), 'an artifact of the last build');
    writeFileSync(path.join(project, 'ansible/.git/index'), 'a commit happened');
    expect(await keys()).toEqual(before);
  });

  it('change with the resolved extra vars, and for puppet with its modules', async () => {
    const before = await keys();
    expect((await keys(ansible.replace('${var.token}', 'other')))[1]).not.toBe(before[1]);
    const puppet = `      - type: puppet-masterless
        manifest_file: puppet/site.pp
        module_paths: [puppet/modules]`;
    const p1 = await keys(puppet);
    writeFileSync(path.join(project, 'puppet/modules/m/manifests/init.pp'), 'class m { notify { "changed": } }\n');
    expect(await keys(puppet)).not.toEqual(p1);
  });
});
