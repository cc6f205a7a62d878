// The ansible provisioner end to end, through kiln: ansible-playbook on this machine against the build
// VM over SSH with the build's key and the host key kiln verified. On the Debian fixture: a role with a
// template, a group variable and a handler, run with become, and a sensitive extra var that never
// leaves kiln unmasked. On the tiny guest (no Python: raw tasks; its host key verified from kiln's own
// connection, not injected): editing one role file re-runs the build from that provisioner only, and a
// failing task's error names the task with what the host answered.
// ansible-local and puppet-masterless need Ansible and Puppet inside the guest, about 2.5 min of
// apt-get under TCG: their end-to-end test is test/install/config-management.test.ts (make test-install).
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { imagesDir, tinySourceYaml } from '../helpers/guest.js';
import { kiln } from '../helpers/kiln.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'kiln-e2e-cm-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

function writeFiles(root: string, files: Record<string, string>): void {
  for (const [name, body] of Object.entries(files)) {
    mkdirSync(path.dirname(path.join(root, name)), { recursive: true });
    writeFileSync(path.join(root, name), body);
  }
}

const outputLines = (events: Record<string, unknown>[], source: string) =>
  events.filter((e) => e.type === 'output' && e.source === source).map((e) => String(e.line));

describe('ansible provisioner', () => {
  it('configures a Debian guest from a role (template, group var, handler, become); a sensitive extra var stays masked', async () => {
    const secret = 'tok-Zq8v3-never-shown';
    writeFiles(path.join(dir, 'deb'), {
      'ansible/site.yml': '- hosts: web\n  roles: [site]\n',
      'ansible/group_vars/web.yml': 'site_port: 8081\n',
      'ansible/roles/site/tasks/main.yml': `
- name: Write the site configuration
  ansible.builtin.template: { src: site.conf.j2, dest: /etc/kiln-site.conf, mode: "0600" }
  notify: Record the handler
- name: Show the token (kiln masks it)
  ansible.builtin.debug: { msg: "token is {{ api_token }}" }
`,
      'ansible/roles/site/handlers/main.yml': `
- name: Record the handler
  ansible.builtin.copy: { content: "handler ran for {{ kiln_build_name }}\\n", dest: /etc/kiln-handler }
`,
      'ansible/roles/site/templates/site.conf.j2': 'title={{ site_title }}\nport={{ site_port }}\nuser={{ ansible_user_id }}\ntoken_length={{ api_token | length }}\n',
    });
    const file = path.join(dir, 'deb', 'debian.yaml');
    writeFileSync(file, `
variables:
  title: { default: From kiln }
  token: { default: ${secret}, sensitive: true }
builds:
  - name: cm-deb
    output_directory: ${path.join(dir, 'deb', 'out')}
    source:
      base_image: ${path.join(imagesDir, 'debian-12-cloud.qcow2')}
      checksum: none
      disk_size: 3G
      memory: 1024
    provisioners:
      - type: ansible
        playbook_file: ansible/site.yml
        groups: [web]
        become: true
        extra_vars: { site_title: '\${var.title}', api_token: '\${var.token}' }
      - type: shell
        inline: ['sudo cat /etc/kiln-site.conf /etc/kiln-handler']
    outputs:
      - format: qcow2
`);
    const run = await kiln(['build', file, '--events=json'], { KILN_CACHE_DIR: path.join(dir, 'deb', 'cache') }, 1_200_000);
    expect(run.exitCode, run.stderr.slice(-3000)).toBe(0);

    // Ansible's output streamed as line events of its provisioner, the handler ran, the token is masked.
    const ansible = outputLines(run.events, 'provisioner 1');
    expect(ansible.filter((l) => /^(TASK|RUNNING HANDLER) \[/.test(l)).map((l) => l.replace(/ \*+$/, ''))).toEqual([
      'TASK [Gathering Facts]', 'TASK [site : Write the site configuration]', 'TASK [site : Show the token (kiln masks it)]', 'RUNNING HANDLER [site : Record the handler]',
    ]);
    expect(ansible.some((l) => l.includes('"msg": "token is <sensitive>"'))).toBe(true);
    // kiln's known_hosts already held the guest's key: OpenSSH added nothing and asked nothing.
    expect(ansible.join('\n')).not.toMatch(/Permanently added|authenticity of host/);
    expect(outputLines(run.events, 'provisioner 2')).toEqual([
      'title=From kiln', 'port=8081', 'user=root', `token_length=${secret.length}`, 'handler ran for cm-deb',
    ]);
    expect(run.events.filter((e) => e.type === 'layer-saved').map((e) => e.index)).toEqual([0, 1]);
    const manifest = readFileSync(path.join(dir, 'deb', 'out', 'manifest.json'), 'utf8');
    for (const text of [run.stdout, run.stderr, manifest]) expect(text).not.toContain(secret);
    expect(JSON.parse(manifest).variables.token).toBe('<sensitive>');
  }, 1_500_000);

  it('on the tiny guest: editing one role file re-runs the build from that provisioner only; a failing task names itself', async () => {
    const root = path.join(dir, 'tiny');
    const role = (tasks: string) => writeFiles(root, { 'play/roles/marker/tasks/main.yml': tasks });
    writeFiles(root, { 'play/site.yml': '- hosts: all\n  gather_facts: false\n  roles: [marker]\n' });
    role('- name: Write the marker\n  ansible.builtin.raw: echo "v1 {{ kiln_build_name }}" > /root/marker\n');
    const file = path.join(root, 'tiny.yaml');
    writeFileSync(file, `
builds:
  - name: cm-tiny
    output_directory: ${path.join(root, 'out')}
${tinySourceYaml()}
    provisioners:
      - type: shell
        inline: ['echo before > /root/before']
      - type: ansible
        playbook_file: play/site.yml
      - type: shell
        inline: ['cat /root/before /root/marker']
    outputs:
      - format: qcow2
`);
    const env = { KILN_CACHE_DIR: path.join(root, 'cache') };
    const first = await kiln(['build', file, '--events=json'], env);
    expect(first.exitCode, first.stderr.slice(-3000)).toBe(0);
    expect(outputLines(first.events, 'provisioner 3')).toEqual(['before', 'v1 cm-tiny']);

    // One role file edited: the shell provisioner before comes from the cache, the ansible one re-runs
    // (its edited task is what fails, so the error must name it with what the guest printed).
    role('- name: Write the marker\n  ansible.builtin.raw: echo "v2 {{ kiln_build_name }}" > /root/marker\n'
      + '- name: Check the disk is big enough\n  ansible.builtin.raw: echo "only 1 MiB free" >&2; exit 7\n');
    const second = await kiln(['build', file, '--events=json', '--force'], env);
    expect(second.exitCode).toBe(1);
    expect(second.events.filter((e) => e.type === 'provisioner-cached').map((e) => e.index)).toEqual([0]);
    expect(second.events.filter((e) => e.type === 'provisioner-start').map((e) => e.index)).toEqual([1]);
    expect(outputLines(second.events, 'provisioner 2').filter((l) => /^(changed|fatal):/.test(l))).toEqual([
      'changed: [default]', expect.stringMatching(/^fatal: \[default\]: FAILED! => /),
    ]);
    const error = String(second.events.find((e) => e.type === 'build-end')?.error);
    expect(error).toMatch(/provisioner 2: ansible-playbook exited with 2 \(a task failed\):\n {2}task "marker : Check the disk is big enough" failed on default:\n[^]*only 1 MiB free/);
    expect(readFileSync(path.join(root, 'out', 'manifest.json'), 'utf8')).toContain('"cm-tiny"'); // the first build's artifact stays
  }, 600_000);
});
